"""The KBS client against the independent test KBS on loopback (tests/fixtures/test_kbs.py).

Issue 9 acceptance: sample attestation and resources fetched; ten get_token calls within a token's lifetime
cause one attestation; an expired token one new attestation; a 401 one re-attestation; each fault refused with
a typed error naming the cause.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.errors import (
    ConfigError,
    DecryptionIntegrityError,
    KbsDeniedError,
    KbsProtocolError,
    TransportError,
)
from cocoguest.kbs.client import (
    AsyncKbsClient,
    KbsClient,
    PassportKbsClient,
    credentials_from_aa_json,
    credentials_to_aa_json,
)
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.tee_key import TeeKeyAlgorithm
from cocoguest.kbs.token_cache import Credentials
from cocoguest.limits import Limits, MiB
from tests.fixtures.registry import free_port, make_ca
from tests.fixtures.test_kbs import SampleEvidence, TestKbs

KEY = ResourceUri.parse("kbs:///default/key/1")
SECRET = b"\x01" * 32


class FakeClock:
    """Seconds since the epoch that a test moves forward."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kbs() -> Iterator[TestKbs]:
    with TestKbs(resources={"default/key/1": SECRET, "default/policy/p": b'{"default":[]}'}).running() as server:
        yield server


def _client(kbs: TestKbs, **kwargs: object) -> KbsClient:
    return KbsClient(kbs.url, SampleEvidence(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", list(TeeKeyAlgorithm))
def test_sample_attestation_and_resource_for_every_tee_key(kbs: TestKbs, algorithm: TeeKeyAlgorithm) -> None:
    client = _client(kbs, tee_key_algorithm=algorithm)
    assert client.get_resource(KEY) == SECRET
    assert client.get_resource(ResourceUri.parse("kbs://ignored.example:1/default/policy/p")) == b'{"default":[]}'
    assert kbs.attestations == 1
    assert client.fetches == 1


def test_report_data_binds_nonce_and_key(kbs: TestKbs) -> None:
    evidence = SampleEvidence()
    client = KbsClient(kbs.url, evidence)
    client.get_token()
    client.get_token()  # cached: no second evidence
    assert len(evidence.report_data) == 1
    assert len(evidence.report_data[0]) == 48  # SHA-384


def test_init_data_is_sent(kbs: TestKbs) -> None:
    toml = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n'
    _client(kbs, init_data_toml=toml).get_token()
    assert kbs.last_init_data == {"format": "toml", "body": toml}


def test_ten_get_token_calls_cause_one_attestation(kbs: TestKbs) -> None:
    client = _client(kbs)
    tokens = {client.get_token().token.raw for _ in range(10)}
    assert len(tokens) == 1
    assert kbs.attestations == 1


def test_concurrent_get_token_threads_cause_one_attestation(kbs: TestKbs) -> None:
    client = _client(kbs)
    results: list[Credentials] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        barrier.wait()
        results.append(client.get_token())

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 10
    assert len({r.token.raw for r in results}) == 1
    assert kbs.attestations == 1


def test_concurrent_async_get_token_cause_one_attestation(kbs: TestKbs) -> None:
    client = AsyncKbsClient(_client(kbs))

    async def run() -> list[Credentials]:
        return await asyncio.gather(*(client.get_token() for _ in range(10)))

    results = asyncio.run(run())
    assert len({r.token.raw for r in results}) == 1
    assert kbs.attestations == 1
    assert asyncio.run(client.get_resource(KEY)) == SECRET
    assert kbs.attestations == 1


def test_expired_token_causes_one_new_attestation(kbs: TestKbs) -> None:
    clock = FakeClock()
    kbs.clock = clock
    limits = Limits()
    client = _client(kbs, clock=clock, limits=limits)
    first = client.get_token()
    assert first.token.untrusted_exp is not None
    clock.now = first.token.untrusted_exp - limits.kbs_token_refresh_margin_s - 1
    assert client.get_token() is first  # still fresh
    clock.now = first.token.untrusted_exp - limits.kbs_token_refresh_margin_s + 1  # inside the margin
    second = client.get_token()
    assert second is not first
    for _ in range(5):
        assert client.get_token() is second
    assert kbs.attestations == 2


def test_401_causes_one_reattestation(kbs: TestKbs) -> None:
    client = _client(kbs)
    client.get_token()
    kbs.refuse_next_tokens = 1
    assert client.get_resource(KEY) == SECRET
    assert kbs.attestations == 2
    assert kbs.resource_gets == 2


def test_persistent_401_reattests_once_then_fails(kbs: TestKbs) -> None:
    client = _client(kbs)
    kbs.refuse_next_tokens = 100
    with pytest.raises(KbsDeniedError, match=r"resource .* HTTP 401 \(TokenVerifierError") as info:
        client.get_resource(KEY)
    assert info.value.step == "resource"
    assert info.value.error_type == "TokenVerifierError"
    assert kbs.attestations == 2


def test_kbs_issuing_expired_tokens_is_refused(kbs: TestKbs) -> None:
    kbs.expired_tokens = True
    client = _client(kbs)
    with pytest.raises(KbsDeniedError, match="TokenVerifierError"):
        client.get_resource(KEY)
    assert kbs.attestations == 2  # an expired token is never cached: one retry with a new one


@pytest.mark.parametrize("status", [401, 403])
def test_policy_denial_is_refused_without_reattesting(kbs: TestKbs, status: int) -> None:
    kbs.deny_status = status
    client = _client(kbs)
    with pytest.raises(KbsDeniedError, match=rf"HTTP {status} \(PolicyDeny: Access denied by policy\)") as info:
        client.get_resource(KEY)
    assert (info.value.status, info.value.error_type, info.value.step) == (status, "PolicyDeny", "resource")
    assert kbs.attestations == 1


def test_missing_resource_names_the_kbs_error(kbs: TestKbs) -> None:
    with pytest.raises(KbsDeniedError, match="PluginInternalError: resource default/key/nope not found"):
        _client(kbs).get_resource(ResourceUri.parse("kbs:///default/key/nope"))


def test_resource_encrypted_to_another_key_is_refused(kbs: TestKbs) -> None:
    kbs.encrypt_to_other_key = True
    with pytest.raises(DecryptionIntegrityError, match="not encrypted to this guest's TEE key"):
        _client(kbs).get_resource(KEY)


@pytest.mark.parametrize("algorithm", [TeeKeyAlgorithm.RSA_OAEP_256, TeeKeyAlgorithm.RSA1_5])
def test_rsa_resource_encrypted_to_another_key_is_refused(kbs: TestKbs, algorithm: TeeKeyAlgorithm) -> None:
    kbs.encrypt_to_other_key = True
    with pytest.raises(DecryptionIntegrityError, match="not encrypted to this guest's TEE key"):
        _client(kbs, tee_key_algorithm=algorithm).get_resource(KEY)


def test_tampered_tag_is_refused(kbs: TestKbs) -> None:
    kbs.tamper_tag = True
    with pytest.raises(DecryptionIntegrityError, match="AES-GCM tag check failed"):
        _client(kbs).get_resource(KEY)


@pytest.mark.parametrize(("step", "error_step"), [("auth", "auth"), ("attest", "attest"), ("resource", "resource")])
def test_non_json_answers_are_refused(kbs: TestKbs, step: str, error_step: str) -> None:
    kbs.non_json_step = step
    with pytest.raises(KbsProtocolError, match=rf"KBS {error_step}: .*not valid JSON") as info:
        _client(kbs).get_resource(KEY)
    assert info.value.step == error_step


@pytest.mark.parametrize("declared", [True, False])
def test_64_mib_answer_is_refused_without_reading_it_all(kbs: TestKbs, declared: bool) -> None:
    kbs.oversized_bytes = 64 * MiB
    kbs.oversized_declared = declared
    with pytest.raises(KbsProtocolError, match="larger than the limit of 8388608") as info:
        _client(kbs).get_resource(KEY)
    assert info.value.step == "resource"
    # The server could push only what fits in socket buffers before we hung up (or nothing, when declared).
    assert kbs.oversized_bytes_sent < 64 * MiB


def test_attestation_refused_names_the_kbs_error(kbs: TestKbs) -> None:
    class LyingEvidence(SampleEvidence):
        def get_evidence(self, report_data: bytes) -> bytes:
            return super().get_evidence(b"\x00" * 48)

    client = KbsClient(kbs.url, LyingEvidence())
    with pytest.raises(KbsDeniedError, match=r"KBS attest .*HTTP 401 \(AttestationError: .*REPORT_DATA") as info:
        client.get_token()
    assert info.value.step == "attest"
    assert kbs.attestations == 0


def test_wrong_protocol_version_error_names_auth_step(kbs: TestKbs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cocoguest.kbs.protocol.KBS_PROTOCOL_VERSION", "0.3.0")
    with pytest.raises(KbsDeniedError, match=r"KBS auth .*HTTP 401 \(AttestationError: .*Version Mismatch") as info:
        _client(kbs).get_token()
    assert info.value.step == "auth"


def test_https_with_configured_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server = TestKbs(resources={"default/key/1": SECRET}, tls_cert=ca.server_cert, tls_key=ca.server_key)
    with server.running():
        client = KbsClient(server.url, SampleEvidence(), ca_cert_pem=ca.ca_cert.read_bytes())
        assert client.get_resource(KEY) == SECRET
        with pytest.raises(TransportError, match="KBS auth"):
            KbsClient(server.url, SampleEvidence()).get_token()  # not trusted without the CA
    with pytest.raises(ConfigError, match="CA certificate"):
        KbsClient(server.url, SampleEvidence(), ca_cert_pem=b"not a certificate")


def test_unreachable_kbs_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="KBS auth"):
        KbsClient(f"http://127.0.0.1:{free_port()}", SampleEvidence()).get_token()


class _AaTokenProvider:
    """Passport mode: credentials from a background-check client, passed through the AA's JSON form."""

    def __init__(self, kbs: TestKbs) -> None:
        self.inner = KbsClient(kbs.url, SampleEvidence())
        self.calls = 0

    def get_kbs_credentials(self) -> Credentials:
        self.calls += 1
        self.inner.attest_now()
        return credentials_from_aa_json(credentials_to_aa_json(self.inner.get_token()), "test AA")


def test_passport_mode(kbs: TestKbs) -> None:
    provider = _AaTokenProvider(kbs)
    client = PassportKbsClient(kbs.url, provider)
    assert client.get_resource(KEY) == SECRET
    assert client.get_resource(KEY) == SECRET
    assert provider.calls == 1
    kbs.refuse_next_tokens = 1
    assert client.get_resource(KEY) == SECRET
    assert provider.calls == 2


def test_bad_url_is_a_config_error() -> None:
    for url in ("ftp://kbs", "http://", "http://u:p@kbs:8080", "http://kbs/?q=1"):
        with pytest.raises(ConfigError, match="KBS URL"):
            KbsClient(url, SampleEvidence())
