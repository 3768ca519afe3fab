"""`cocoguest pull` (the real CLI, as a subprocess) against a hostile registry: every hostile answer gives exit
status 1, exactly one short `error:` line, no traceback and nothing written; bodies never cost memory."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fixtures.cli import cocoguest_command, run_cocoguest
from tests.fixtures.hostile_registry import (
    MEDIA_MANIFEST,
    REPO,
    Answer,
    HostileRegistry,
    Request,
    TinyImage,
    huge_number_json,
    nested_json,
    sha256,
)

MiB = 1024 * 1024
FAST = "registry_retry_base_delay_s=0.01,registry_retry_max_delay_s=0.05"
SLOW_LIMITS = f"{FAST},registry_request_deadline_s=2,registry_blob_rate_window_s=1,registry_blob_min_bytes_per_s=4096"


@cache
def _bomb(encoding: str, size: int = 512 * MiB) -> bytes:
    """``size`` zero bytes, compressed (a few hundred KiB on the wire)."""
    block = bytes(MiB)
    if encoding == "zstd":
        compressor = zstandard.ZstdCompressor(level=3).compressobj()
        return b"".join([compressor.compress(block) for _ in range(size // MiB)]) + compressor.flush()
    wbits = 31 if encoding == "gzip" else 15
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return b"".join([z.compress(block) for _ in range(size // MiB)]) + z.flush()


def _env(limits: str = FAST) -> dict[str, str]:
    return {**os.environ, "COCOGUEST_LIMITS": limits}


def _pull_args(registry: HostileRegistry, tmp_path: Path, *extra: str) -> list[str]:
    return ["pull", "--tls-verify=false", "-q", "--work-dir", str(tmp_path / "work"), "--snapshotter", "copy",
            *(extra or ("--insecure-policy",)), registry.ref, str(tmp_path / "bundle")]  # fmt: skip


def _assert_refused(tmp_path: Path, returncode: int, stderr: str, *expected: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert returncode == 1, stderr[-3000:]
    assert len(errors) == 1, stderr[-3000:]
    assert len(errors[0]) < 2000
    assert "Traceback" not in stderr
    for text in expected:
        assert text in errors[0], errors[0]
    # Nothing half-written: no bundle, no layer in the store, no staging left behind.
    assert not (tmp_path / "bundle").exists()
    layers = tmp_path / "work" / "layers"
    assert not layers.exists() or not any(p for p in layers.rglob("*") if p.is_file())
    return errors[0]


def _refused(
    registry: HostileRegistry, tmp_path: Path, *expected: str, limits: str = FAST, extra: tuple[str, ...] = ()
) -> str:
    with registry.running():
        result = run_cocoguest(*_pull_args(registry, tmp_path, *extra), env=_env(limits))
    return _assert_refused(tmp_path, result.returncode, result.stderr, *expected)


def _gz(body: bytes) -> Answer:
    return Answer(200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, gzip.compress(body))


MANIFEST = rf"GET /v2/{REPO}/manifests/v1$"
TOKEN = r"GET /token"
CONFIG = rf"GET /v2/{REPO}/blobs/{{config}}"
LAYER = rf"GET /v2/{REPO}/blobs/{{layer}}"

# (name, route pattern, answer, expected words in the error line, token auth, limits)
CASES: list[tuple[str, str, Callable[[TinyImage], Answer], tuple[str, ...], bool, str]] = [
    (
        "manifest-nested-json",
        MANIFEST,
        lambda i: Answer(200, {"Content-Type": MEDIA_MANIFEST}, nested_json(5000)),
        ("manifest",),
        False,
        FAST,
    ),
    (
        "manifest-endless",
        MANIFEST,
        lambda i: Answer(200, {}, b"{" * MiB, endless=True),
        ("manifest", "4194304-byte limit"),
        False,
        FAST,
    ),
    (
        "manifest-huge-declared",
        MANIFEST,
        lambda i: Answer(200, {}, b" " * MiB, repeat=64),
        ("manifest", "67108864 bytes exceeds"),
        False,
        FAST,
    ),
    (
        "manifest-gzip-bomb",
        MANIFEST,
        lambda i: Answer(200, {"Content-Encoding": "gzip"}, _bomb("gzip")),
        ("manifest", "(decoded)"),
        False,
        FAST,
    ),
    (
        "manifest-zstd-bomb",
        MANIFEST,
        lambda i: Answer(200, {"Content-Encoding": "zstd"}, _bomb("zstd")),
        ("manifest", "(decoded)"),
        False,
        FAST,
    ),
    (
        "manifest-deflate-bomb",
        MANIFEST,
        lambda i: Answer(200, {"Content-Encoding": "deflate"}, _bomb("deflate")),
        ("manifest", "(decoded)"),
        False,
        FAST,
    ),
    (
        "manifest-drip",
        MANIFEST,
        lambda i: Answer(200, {}, i.manifest, drip_s=0.2),
        ("manifest", "registry_request_deadline_s"),
        False,
        SLOW_LIMITS,
    ),
    (
        "manifest-short-content-length",
        MANIFEST,
        lambda i: Answer(200, {}, i.manifest, content_length=len(i.manifest) + 50),
        ("test/app",),
        False,
        FAST,
    ),
    (
        "manifest-retry-after",
        MANIFEST,
        lambda i: Answer(503, {"Retry-After": "100000"}, b"{}"),
        ("100000 s", "registry_retry_after_cap_s"),
        False,
        FAST,
    ),
    (
        "manifest-redirect-loop",
        MANIFEST,
        lambda i: Answer(302, {"Location": f"/v2/{REPO}/manifests/v1"}),
        ("redirects",),
        False,
        FAST,
    ),
    ("token-nested-json", TOKEN, lambda i: Answer(200, {}, nested_json(5000)), ("token",), True, FAST),
    (
        "token-huge-number",
        TOKEN,
        lambda i: Answer(200, {}, huge_number_json("expires_in", 5000, {"token": "t0k3n"})),
        ("token",),
        True,
        FAST,
    ),
    (
        "token-gzip-bomb",
        TOKEN,
        lambda i: Answer(200, {"Content-Encoding": "gzip"}, _bomb("gzip")),
        ("token", "(decoded)"),
        True,
        FAST,
    ),
    (
        "token-zstd-bomb",
        TOKEN,
        lambda i: Answer(200, {"Content-Encoding": "zstd"}, _bomb("zstd")),
        ("token", "(decoded)"),
        True,
        FAST,
    ),
    ("token-endless", TOKEN, lambda i: Answer(200, {}, b" " * MiB, endless=True), ("token", "limit"), True, FAST),
    (
        "token-drip",
        TOKEN,
        lambda i: Answer(200, {}, b'{"token": "t0k3n"}', drip_s=0.3),
        ("token", "registry_request_deadline_s"),
        True,
        SLOW_LIMITS,
    ),
    (
        "config-drip",
        CONFIG,
        lambda i: Answer(200, {}, i.config, drip_s=0.3),
        ("blob {config}", "too slow", "registry_blob_min_bytes_per_s"),
        False,
        SLOW_LIMITS,
    ),
    ("config-wrong-digest", CONFIG, lambda i: Answer(200, {}, i.config[:-1] + b" "), ("config", "digest"), False, FAST),
    (
        "layer-drip",
        LAYER,
        lambda i: Answer(200, {}, i.layer, drip_s=0.3),
        ("blob {layer}", "too slow", "registry_blob_min_bytes_per_s"),
        False,
        SLOW_LIMITS,
    ),
    ("layer-endless", LAYER, lambda i: Answer(200, {}, b"\0" * MiB, endless=True), ("layer",), False, FAST),
    ("layer-wrong-digest", LAYER, lambda i: Answer(200, {}, bytes(len(i.layer))), ("layer",), False, FAST),
]


@pytest.mark.parametrize(
    ("pattern", "answer", "expected", "token_auth", "limits"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_hostile_answer_is_one_error_line_and_nothing_written(
    tmp_path: Path,
    pattern: str,
    answer: Callable[[TinyImage], Answer],
    expected: tuple[str, ...],
    token_auth: bool,
    limits: str,
) -> None:
    image = TinyImage()
    route = pattern.format(config=sha256(image.config), layer=sha256(image.layer))
    digests = {"config": sha256(image.config), "layer": sha256(image.layer)}
    registry = HostileRegistry(image, token_auth=token_auth).route(route, answer(image))
    _refused(registry, tmp_path, *(text.format(**digests) for text in expected), limits=limits)


# The head is dripped one byte every 0.2 s for 600 s: only the request deadline inside the connection stops it
# (httpx's read timeout restarts with every byte); the subprocess timeout only bounds a regression.
HEAD_DRIP_CASES = [
    pytest.param(MANIFEST, ("manifest", f"/v2/{REPO}/manifests/v1"), False, id="manifest"),
    pytest.param(TOKEN, ("token request", "/token"), True, id="token"),
    pytest.param(CONFIG, ("blob {config}", "/v2/test/app/blobs/{config}"), False, id="config"),
]


@pytest.mark.parametrize(("pattern", "expected", "token_auth"), HEAD_DRIP_CASES)
def test_a_registry_dripping_its_headers_is_cut_off_at_the_request_deadline(
    tmp_path: Path, pattern: str, expected: tuple[str, ...], token_auth: bool
) -> None:
    image = TinyImage()
    digests = {"config": sha256(image.config)}
    answer = Answer(200, {}, b"{}", drip_head_s=0.2, max_seconds=600)
    registry = HostileRegistry(image, token_auth=token_auth).route(pattern.format(**digests), answer)
    with registry.running():
        args = [*cocoguest_command(), *_pull_args(registry, tmp_path)]
        result = subprocess.run(args, env=_env(SLOW_LIMITS), capture_output=True, text=True, check=False, timeout=60)
    wanted = (*(text.format(**digests) for text in expected), "within 2 s (registry_request_deadline_s)")
    _assert_refused(tmp_path, result.returncode, result.stderr, *wanted)


def test_huge_integer_in_config(tmp_path: Path) -> None:
    config = huge_number_json("created_by_size", 5000, {"architecture": "amd64", "os": "linux"})
    registry = HostileRegistry(TinyImage(config_raw=config))
    _refused(registry, tmp_path, "config")


def test_wrong_content_range_on_resume_is_named(tmp_path: Path) -> None:
    image = TinyImage(config_padding=0)
    size = len(image.layer)

    def layer(request: Request) -> Answer:
        if "Range" not in request.headers:
            return Answer(200, {}, image.layer, cut_after=size // 2)
        return Answer(206, {"Content-Range": f"bytes 0-{size - 1}/{size}"}, image.layer)

    registry = HostileRegistry(image).route(rf"GET /v2/{REPO}/blobs/{sha256(image.layer)}", layer)
    line = _refused(registry, tmp_path, "wrong Content-Range", "received 'bytes 0-")
    assert f"expected 'bytes {size // 2}-{size - 1}/{size}'" in line


def test_index_size_mismatch_names_both_sizes(tmp_path: Path) -> None:
    image = TinyImage()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": image.manifest_digest, "size": len(image.manifest) + 1,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }  # fmt: skip
    answer = Answer(200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, json.dumps(index).encode())
    registry = HostileRegistry(image).route(MANIFEST, answer)
    line = _refused(registry, tmp_path, f"has {len(image.manifest)} bytes, the index says {len(image.manifest) + 1}",
                    extra=("--insecure-policy", "--platform", "linux/amd64"))  # fmt: skip
    assert line.count(image.manifest_digest) == 1


def test_nested_json_in_signature_list(tmp_path: Path) -> None:
    keyring = tmp_path / "key.gpg"
    keyring.write_bytes(b"not needed: the list is refused first")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keyring)}]}))
    registry = HostileRegistry(supports_signatures=True).route(
        r"GET /extensions/v2/", Answer(200, {}, nested_json(5000))
    )
    _refused(registry, tmp_path, "signature", extra=("--policy", str(policy)))


def test_nested_json_in_cosign_signature_manifest(tmp_path: Path) -> None:
    key = tmp_path / "cosign.pub"
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    key.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "sigstoreSigned", "keyPath": str(key)}]}))
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "default.yaml").write_text("default-docker:\n  use-sigstore-attachments: true\n")
    registry = HostileRegistry().route(r"GET .*/manifests/sha256-[0-9a-f]{64}\.sig", Answer(200, {}, nested_json(5000)))
    _refused(registry, tmp_path, extra=("--policy", str(policy), "--registries-d", str(registries_d)))


def test_credentials_never_go_to_a_plain_http_realm_of_an_https_registry() -> None:
    # Unit-level: the registry was reached over HTTPS; its realm is plain HTTP.
    import httpx  # noqa: PLC0415

    from cocoguest.errors import TransportError  # noqa: PLC0415
    from cocoguest.registry.auth import Challenge, TokenAuthenticator  # noqa: PLC0415
    from cocoguest.registry.http import DEFAULT_RETRY  # noqa: PLC0415
    from cocoguest.registry.types import Credentials  # noqa: PLC0415

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"token": "t"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    auth = TokenAuthenticator(client, host="reg.example", credentials=Credentials("u", "p"), retry=DEFAULT_RETRY,
                              user_agent="t", allow_insecure_realm=True, registry_scheme=lambda: "https")  # fmt: skip
    with pytest.raises(TransportError, match="refusing to send credentials to the plain-HTTP token realm"):
        auth.authorization(Challenge("bearer", {"realm": "http://tokens.example/t"}), ("repository:a:pull",))
    assert sent == []


def test_credentials_to_another_host_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="cocoguest")
    import httpx  # noqa: PLC0415

    from cocoguest.registry.auth import Challenge, TokenAuthenticator  # noqa: PLC0415
    from cocoguest.registry.http import DEFAULT_RETRY  # noqa: PLC0415
    from cocoguest.registry.types import Credentials  # noqa: PLC0415

    class _Body(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b'{"token": "t"}'

    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=_Body())))
    auth = TokenAuthenticator(client, host="reg.example", credentials=Credentials("u", "p"), retry=DEFAULT_RETRY,
                              user_agent="t", allow_insecure_realm=False, registry_scheme=lambda: "https")  # fmt: skip
    challenge = Challenge("bearer", {"realm": "https://tokens.example/t"})
    auth.authorization(challenge, ("repository:a:pull",))
    auth.authorization(challenge, ("repository:b:pull",))
    warnings = [r.getMessage() for r in caplog.records if "token realm on another host" in r.getMessage()]
    assert warnings == ["registry reg.example: sending credentials to the token realm on another host, tokens.example"]


# --- memory ------------------------------------------------------------------------------------------

RSS_CASES: list[tuple[str, str, Callable[[TinyImage], Answer], bool, bool]] = [
    ("probe-2GiB", r"GET /v2/$", lambda i: Answer(200, {}, b"\0" * MiB, repeat=2048), False, True),
    ("probe-endless", r"GET /v2/$", lambda i: Answer(200, {}, b"\0" * MiB, endless=True), False, True),
    (
        "manifest-endless",
        MANIFEST,
        lambda i: Answer(200, {}, b" " * MiB, endless=True, content_length=-1),
        False,
        False,
    ),
    (
        "token-zstd-bomb",
        TOKEN,
        lambda i: Answer(200, {"Content-Encoding": "zstd"}, _bomb("zstd", 4096 * MiB)),
        True,
        False,
    ),
    ("manifest-gzip-bomb", MANIFEST, lambda i: Answer(200, {"Content-Encoding": "gzip"}, _bomb("gzip")), False, False),
    ("layer-endless", LAYER, lambda i: Answer(200, {}, b"\0" * MiB, endless=True), False, False),
]


TIME_TOOL = Path("/usr/bin/time")


@pytest.mark.skipif(not TIME_TOOL.exists(), reason="/usr/bin/time is not installed (Debian package time)")
@pytest.mark.parametrize(
    ("pattern", "answer", "token_auth", "succeeds"), [pytest.param(*c[1:], id=c[0]) for c in RSS_CASES]
)
def test_peak_rss_stays_under_150_mb(
    tmp_path: Path,
    pattern: str,
    answer: Callable[[TinyImage], Answer],
    token_auth: bool,
    succeeds: bool,
) -> None:
    import subprocess  # noqa: PLC0415

    image = TinyImage()
    route = pattern.format(config=sha256(image.config), layer=sha256(image.layer))
    registry = HostileRegistry(image, token_auth=token_auth).route(route, answer(image))
    with registry.running():
        command = [str(TIME_TOOL), "-f", "peak-rss-kb=%M", *cocoguest_command(), *_pull_args(registry, tmp_path)]
        result = subprocess.run(command, env=_env(), capture_output=True, text=True, check=False)
    lines = result.stderr.splitlines()
    peak_kb = int(next(line for line in reversed(lines) if line.startswith("peak-rss-kb=")).split("=")[1])
    if succeeds:
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        stderr = "\n".join(line for line in lines if not line.startswith(("peak-rss-kb=", "Command exited")))
        _assert_refused(tmp_path, 1 if result.returncode == 1 else result.returncode, stderr)
    assert peak_kb < 150 * 1000, f"peak RSS {peak_kb} kB"
