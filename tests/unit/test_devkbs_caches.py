"""The dev KBS's GET-path caches keep every check (issue 10): they remember, they never decide.

Through :class:`KbsService` (no sockets) with a fake clock, and the independent client's TEE keys and JWE
decryption (tests/fixtures/devkbs.py):

* verified tokens are remembered by the SHA-256 of their exact bytes: a token with any one character changed is
  verified afresh and refused; an expired token is refused although its signature is cached;
* resource-policy verdicts die with the policy: a new policy decides the next GET of the same token;
* TEE keys are parsed once per verified token, yet each answer has a fresh ephemeral key, CEK and IV (a key
  agreement prepared in idle time is taken by exactly one answer, even by racing threads);
* every cache is bounded (``Limits.devkbs_token_cache_entries``, ``Limits.devkbs_policy_cache_entries``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from cocoguest.crypto.jws import Es256Key
from cocoguest.crypto.tee_jwe import TeeRecipient
from cocoguest.devkbs.admin_auth import AdminAuth
from cocoguest.devkbs.ear import shipped_policy
from cocoguest.devkbs.lru import BoundedLru
from cocoguest.devkbs.service import KbsService
from cocoguest.devkbs.storage import ResourceStore
from cocoguest.errors import KbsApiError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from tests.fixtures.devkbs import TeeKey, jcs, sample_evidence, unb64u

SECRET = b"secret-bytes\x00\xff"
PATH = "/kbs/v0/resource/default/key/k1"
ERR = "https://github.com/confidential-containers/kbs/errors/"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _service(tmp_path: Path, clock: Clock, limits: Limits = DEFAULT_LIMITS) -> KbsService:
    policy = tmp_path / "policy.rego"
    policy.write_text(shipped_policy("allow_all.rego"))
    service = KbsService(
        resources=ResourceStore(tmp_path / "repo", limits),
        policy_path=policy,
        admin=AdminAuth(None, limits=limits),
        token_key=Es256Key.generate(),
        token_lifetime_s=300,
        session_lifetime_s=300,
        clock=clock,
        limits=limits,
    )
    assert service.handle("POST", PATH, {}, SECRET).status == 200
    return service


def _token(service: KbsService, key: TeeKey) -> str:
    request = json.dumps({"version": "0.4.0", "tee": "sample", "extra-params": ""}).encode()
    challenge = service.handle("POST", "/kbs/v0/auth", {}, request)
    cookie = dict(challenge.headers)["Set-Cookie"].split(";")[0]
    nonce = json.loads(challenge.body)["nonce"]
    runtime = {"tee-pubkey": key.public_jwk(), "nonce": nonce, "additional-evidence": ""}
    attestation = {
        "init-data": None,
        "runtime-data": {"nonce": nonce, "tee-pubkey": key.public_jwk()},
        "tee-evidence": {
            "primary_evidence": sample_evidence(hashlib.sha384(jcs(runtime)).digest()),
            "additional_evidence": "",
        },
    }
    answer = service.handle("POST", "/kbs/v0/attest", {"cookie": cookie}, json.dumps(attestation).encode())
    assert answer.status == 200, answer.body
    return str(json.loads(answer.body)["token"])


def _get(service: KbsService, token: str) -> tuple[int, bytes]:
    """One GET as the server does it: the answer, then its idle-time work (the next key agreement)."""
    answer = service.handle("GET", PATH, {"authorization": f"Bearer {token}"}, b"")
    if answer.after_sent is not None:
        answer.after_sent()
    return answer.status, answer.body


def _refused(service: KbsService, token: str, variant: str) -> None:
    status, body = _get(service, token)
    assert status == 401, body
    assert json.loads(body)["type"] == ERR + variant


def _flip(token: str, i: int) -> str:
    """``token`` with character ``i`` replaced: a '.' by 'A', a base64url digit by the next one (in a last,
    partial group that may only flip unused trailing bits: a non-canonical spelling, refused all the same)."""
    old = token[i]
    new = "A" if old == "." else B64URL[(B64URL.index(old) + 1) % 64]
    return token[:i] + new + token[i + 1 :]


def test_a_token_with_any_one_character_changed_is_refused_after_the_original_was_cached(tmp_path: Path) -> None:
    service = _service(tmp_path, Clock())
    key = TeeKey.generate("P-256")
    token = _token(service, key)
    status, body = _get(service, token)
    assert status == 200
    assert key.decrypt(body) == SECRET  # the token's signature is now cached
    for i in range(len(token)):
        _refused(service, _flip(token, i), "TokenVerifierError")
    assert _get(service, token)[0] == 200  # the original still works


def test_an_expired_token_is_refused_although_its_signature_is_cached(tmp_path: Path) -> None:
    clock = Clock()
    service = _service(tmp_path, clock)
    token = _token(service, TeeKey.generate("P-256"))
    exp = json.loads(unb64u(token.split(".")[1]))["exp"]
    assert _get(service, token)[0] == 200
    clock.now = exp + DEFAULT_LIMITS.devkbs_token_leeway_s  # the last second of the leeway
    assert _get(service, token)[0] == 200
    clock.now += 1
    _refused(service, token, "TokenVerifierError")
    _refused(service, token, "TokenVerifierError")  # and stays refused


def test_a_new_resource_policy_decides_the_next_get_of_the_same_token(tmp_path: Path) -> None:
    service = _service(tmp_path, Clock())
    token = _token(service, TeeKey.generate("P-256"))
    assert _get(service, token)[0] == 200  # allow_all's verdict for this token is cached

    def set_policy(name: str) -> None:
        body = json.dumps({"policy": base64.urlsafe_b64encode(shipped_policy(name).encode()).decode().rstrip("=")})
        assert service.handle("POST", "/kbs/v0/resource-policy", {}, body.encode()).status == 200

    set_policy("deny_all.rego")
    _refused(service, token, "PolicyDeny")
    set_policy("allow_all.rego")
    assert _get(service, token)[0] == 200
    # A policy that reads the path: the verdict is keyed by the data too, not by the token alone.
    text = 'package policy\nimport rego.v1\nallow if data["resource-path"][2] == "k1"\n'
    body = json.dumps({"policy": base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")})
    assert service.handle("POST", "/kbs/v0/resource-policy", {}, body.encode()).status == 200
    assert service.handle("POST", "/kbs/v0/resource/default/key/k2", {}, b"other").status == 200
    assert _get(service, token)[0] == 200
    denied = service.handle("GET", "/kbs/v0/resource/default/key/k2", {"authorization": f"Bearer {token}"}, b"")
    assert json.loads(denied.body)["type"] == ERR + "PolicyDeny"


def test_each_answer_has_a_fresh_ephemeral_key_cek_and_iv_and_each_token_its_own_tee_key(tmp_path: Path) -> None:
    service = _service(tmp_path, Clock())
    first, second = TeeKey.generate("P-256"), TeeKey.generate("P-521")
    tokens = {first.kind: _token(service, first), second.kind: _token(service, second)}
    seen: set[bytes] = set()
    for _ in range(3):
        for key in (first, second):
            status, body = _get(service, tokens[key.kind])
            assert status == 200
            assert key.decrypt(body) == SECRET  # encrypted to this token's key, not a cached neighbour's
            document = json.loads(body)
            header = json.loads(unb64u(document["protected"]))
            for part in (unb64u(header["epk"]["x"]), unb64u(document["encrypted_key"]), unb64u(document["iv"])):
                assert part not in seen
                seen.add(part)
    assert len(seen) == 18


def _answer_after(barrier: threading.Barrier, recipient: TeeRecipient, bodies: list[bytes]) -> None:
    barrier.wait()
    bodies.append(recipient.encrypt(SECRET))


def test_a_prepared_key_agreement_is_taken_by_exactly_one_answer_even_by_racing_threads() -> None:
    key = TeeKey.generate("P-256")
    recipient = TeeRecipient(key.public_jwk())
    for _ in range(50):
        recipient.prepare()
        recipient.prepare()  # at most one waits
        barrier = threading.Barrier(2)
        bodies: list[bytes] = []
        threads = [threading.Thread(target=_answer_after, args=(barrier, recipient, bodies)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        epks = {json.loads(unb64u(json.loads(body)["protected"]))["epk"]["x"] for body in bodies}
        assert len(epks) == 2, "two answers shared one ephemeral key"
        assert all(key.decrypt(body) == SECRET for body in bodies)


def test_the_token_and_tee_key_caches_are_bounded(tmp_path: Path) -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, devkbs_token_cache_entries=2, devkbs_policy_cache_entries=2)
    service = _service(tmp_path, Clock(), limits)
    keys = [TeeKey.generate("P-256") for _ in range(4)]
    tokens = [_token(service, key) for key in keys]
    for _ in range(2):
        for key, token in zip(keys, tokens, strict=True):
            status, body = _get(service, token)
            assert status == 200
            assert key.decrypt(body) == SECRET
    assert len(service.broker._verified) == 2
    assert len(service._recipients) == 2
    assert len(service._resource_policy._verdicts) == 2


def test_bounded_lru_drops_the_least_recently_used() -> None:
    cache: BoundedLru[str, int] = BoundedLru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    assert len(BoundedLru[str, int](0)) == 0


@pytest.mark.parametrize("size", [0, 1, 4096, 70_000])
def test_resources_are_read_whole_up_to_the_cap(tmp_path: Path, size: int) -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, devkbs_max_resource_bytes=65_536)
    store = ResourceStore(tmp_path, limits)
    data = os.urandom(size)
    (tmp_path / "default" / "key").mkdir(parents=True)
    (tmp_path / "default" / "key" / "k").write_bytes(data)
    if size <= limits.devkbs_max_resource_bytes:
        assert store.read("default/key/k") == data
    else:
        with pytest.raises(KbsApiError, match="larger than 65536 bytes"):
            store.read("default/key/k")


def test_a_fifo_or_directory_in_the_repository_is_not_found_and_does_not_hang(tmp_path: Path) -> None:
    store = ResourceStore(tmp_path)
    (tmp_path / "default" / "key" / "dir").mkdir(parents=True)
    os.mkfifo(tmp_path / "default" / "key" / "fifo")
    for name in ("dir", "fifo"):
        with pytest.raises(KbsApiError, match=f"resource default/key/{name} not found"):
            store.read(f"default/key/{name}")
