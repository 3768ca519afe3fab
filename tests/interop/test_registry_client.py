"""The docker:// registry client against Debian's docker-registry (distribution 2.8) on loopback.

Registries (one per variant, per module): plain HTTP; HTTPS with a test CA + htpasswd; token auth through
the test token server. Faults are injected by :mod:`tests.fixtures.faulty_proxy` in front of the plain one.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.digest import Digest, VerifyingReader
from cocoguest.errors import DigestMismatchError, ProtocolError, ResourceNotFoundError, TransportError
from cocoguest.limits import Limits
from cocoguest.oci.descriptor import Descriptor, ImageManifest
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.auth import parse_www_authenticate, pick_challenge
from cocoguest.registry.docker import DockerDestination, DockerSource
from cocoguest.registry.http import HttpStatusError, RetryPolicy
from cocoguest.registry.types import Credentials, RegistryEndpoint, TlsSettings
from tests.fixtures.faulty_proxy import Fault, FaultyProxy
from tests.fixtures.images import blob, build_layout, manifest
from tests.fixtures.registry import Registry, TokenServer, make_ca, push_layout, start_registry

FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05, retry_after_cap_s=0.2, blob_resumes=3)
USER, PASSWORD = "alice", "s3cret-pw"
REFRESH_TOKEN = "refresh-token-of-alice"


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-layer gzip image layout (ref ``latest``)."""
    return build_layout(tmp_path_factory.mktemp("img") / "layout")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, layout: Path) -> Iterator[Registry]:
    """Plain-HTTP registry holding ``test/app:v1``."""
    with start_registry(tmp_path_factory.mktemp("plain")) as reg:
        push_layout(layout, f"{reg.host}/test/app:v1")
        yield reg


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, layout: Path) -> Iterator[Registry]:
    """HTTPS (test CA) + htpasswd registry holding ``sec/app:v1``."""
    with start_registry(tmp_path_factory.mktemp("tls"), tls=True, htpasswd_user=(USER, PASSWORD)) as reg:
        push_layout(layout, f"{reg.host}/sec/app:v1", creds=(USER, PASSWORD))
        yield reg


@pytest.fixture(scope="module")
def tokened(tmp_path_factory: pytest.TempPathFactory, layout: Path) -> Iterator[Registry]:
    """Token-auth registry holding ``public/app:v1`` (anonymous pull) and ``private/app:v1``."""
    base = tmp_path_factory.mktemp("token")
    server = TokenServer(base / "token", users={USER: PASSWORD}, identity_tokens={REFRESH_TOKEN: USER})
    with server.running(), start_registry(base / "registry", token_server=server) as reg:
        push_layout(layout, f"{reg.host}/public/app:v1", creds=(USER, PASSWORD))
        push_layout(layout, f"{reg.host}/private/app:v1", creds=(USER, PASSWORD))
        yield reg


def source(
    host: str,
    name: str,
    *,
    insecure: bool = True,
    creds: Credentials | None = None,
    ca: Path | None = None,
    limits: Limits | None = None,
    env: dict[str, str] | None = None,
    retry: RetryPolicy = FAST,
) -> DockerSource:
    tls = TlsSettings(ca_files=(ca,) if ca else ())
    return DockerSource(
        ImageReference.parse(f"{host}/{name}"),
        RegistryEndpoint(host, insecure=insecure, tls=tls),
        creds,
        limits=limits or Limits(),
        env=env,
        retry=retry,
    )


def pull_all(src: DockerSource) -> tuple[ImageManifest, dict[Digest, bytes]]:
    """Manifest and every blob (config + layers), each checked with a VerifyingReader."""
    data, media_type = src.get_manifest()
    parsed = ImageManifest.from_bytes(data, declared_type=media_type)
    blobs: dict[Digest, bytes] = {}
    for desc in (parsed.config, *parsed.layers):
        with src.open_blob(desc) as stream:
            blobs[desc.digest] = drain(VerifyingReader(stream, desc.digest, desc.size, f"blob {desc.digest}"))
    return parsed, blobs


def drain(reader: VerifyingReader) -> bytes:
    """Read to EOF (so the reader's checks fire)."""
    parts = []
    while chunk := reader.read(16384):
        parts.append(chunk)
    return b"".join(parts)


def assert_same_as_layout(layout: Path, blobs: dict[Digest, bytes]) -> None:
    for digest, data in blobs.items():
        assert data == blob(layout, str(digest))


def largest_layer(src: DockerSource) -> Descriptor:
    data, media_type = src.get_manifest()
    return max(ImageManifest.from_bytes(data, declared_type=media_type).layers, key=lambda d: d.size)


# --- pure parsing --------------------------------------------------------------------------------------


def test_parse_www_authenticate_bearer_and_basic() -> None:
    challenges = parse_www_authenticate(
        ['Basic realm="r1", Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"']
    )
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    chosen = pick_challenge(challenges)
    assert chosen is not None
    assert chosen.scheme == "bearer"
    assert chosen.params == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull"}


def test_parse_www_authenticate_quoted_escapes_and_garbage() -> None:
    [challenge] = parse_www_authenticate(['Bearer realm="a\\"b", error=insufficient_scope'])
    assert challenge.params == {"realm": 'a"b', "error": "insufficient_scope"}
    assert pick_challenge(parse_www_authenticate(["Negotiate"])) is None


# --- plain HTTP ----------------------------------------------------------------------------------------


@pytest.mark.interop
def test_plain_http_pull_manifest_and_blobs(plain: Registry, layout: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), source(plain.host, "test/app:v1") as src:
        parsed, blobs = pull_all(src)
    assert parsed.to_json()["layers"] == manifest(layout)["layers"]
    assert len(blobs) == 4
    assert_same_as_layout(layout, blobs)
    # SECURITY: insecure use is announced.
    assert any("insecure" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.interop
def test_plain_http_is_not_used_unless_insecure(plain: Registry) -> None:
    with source(plain.host, "test/app:v1", insecure=False) as src, pytest.raises(TransportError) as info:
        src.get_manifest()
    assert plain.host in str(info.value)
    assert "docker://" in str(info.value)


@pytest.mark.interop
def test_get_manifest_by_digest(plain: Registry, layout: Path) -> None:
    with source(plain.host, "test/app:v1") as src:
        data, _ = src.get_manifest()
        again, media_type = src.get_manifest(Digest.of_bytes(data))
    assert again == data
    assert media_type == "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.interop
def test_unknown_tag_is_resource_not_found(plain: Registry) -> None:
    with source(plain.host, "test/app:nope") as src, pytest.raises(ResourceNotFoundError) as info:
        src.get_manifest()
    assert str(info.value) == f"docker://{plain.host}/test/app:nope: manifest unknown"


@pytest.mark.interop
def test_unknown_blob_is_resource_not_found(plain: Registry) -> None:
    missing = Descriptor("application/octet-stream", Digest.of_bytes(b"not there"), 9)
    with source(plain.host, "test/app:v1") as src, pytest.raises(ResourceNotFoundError) as info:
        src.open_blob(missing)
    assert str(missing.digest) in str(info.value)


@pytest.mark.interop
def test_oversized_manifest_is_protocol_error(plain: Registry) -> None:
    with (
        source(plain.host, "test/app:v1", limits=Limits(max_manifest_bytes=200)) as src,
        pytest.raises(ProtocolError, match="200-byte limit"),
    ):
        src.get_manifest()


# --- HTTPS + htpasswd ----------------------------------------------------------------------------------


@pytest.mark.interop
def test_https_htpasswd_good_credentials(secured: Registry, layout: Path) -> None:
    creds = Credentials(USER, PASSWORD)
    with source(secured.host, "sec/app:v1", insecure=False, ca=secured.ca_cert, creds=creds) as src:
        _, blobs = pull_all(src)
    assert_same_as_layout(layout, blobs)


@pytest.mark.interop
def test_https_htpasswd_bad_credentials(secured: Registry) -> None:
    creds = Credentials(USER, "wrong")
    with (
        source(secured.host, "sec/app:v1", insecure=False, ca=secured.ca_cert, creds=creds) as src,
        pytest.raises(HttpStatusError) as info,
    ):
        src.get_manifest()
    assert str(info.value) == f"registry {secured.host}: authentication failed for {USER}"
    assert info.value.status == 401
    assert not info.value.retryable


@pytest.mark.interop
def test_https_htpasswd_no_credentials(secured: Registry) -> None:
    with (
        source(secured.host, "sec/app:v1", insecure=False, ca=secured.ca_cert) as src,
        pytest.raises(HttpStatusError, match="requires authentication"),
    ):
        src.get_manifest()


@pytest.mark.interop
def test_https_wrong_ca_is_tls_error_with_hint(secured: Registry, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other")
    creds = Credentials(USER, PASSWORD)
    with (
        source(secured.host, "sec/app:v1", insecure=False, ca=other.ca_cert, creds=creds) as src,
        pytest.raises(TransportError) as info,
    ):
        src.get_manifest()
    message = str(info.value)
    assert "--cert-dir" in message
    assert "--tls-verify=false" in message
    assert secured.host in message
    assert not info.value.retryable


@pytest.mark.interop
def test_https_insecure_skips_verification(secured: Registry) -> None:
    with source(secured.host, "sec/app:v1", creds=Credentials(USER, PASSWORD)) as src:
        data, _ = src.get_manifest()
    assert json.loads(data)["schemaVersion"] == 2


# --- token auth ----------------------------------------------------------------------------------------


@pytest.mark.interop
def test_token_anonymous_pull_of_public_repo_reuses_token(tokened: Registry, layout: Path) -> None:
    server = tokened.token_server
    assert server is not None
    before = len(server.requests)
    with source(tokened.host, "public/app:v1") as src:
        _, blobs = pull_all(src)
        assert src.token_requests == 1
    assert_same_as_layout(layout, blobs)
    new = server.requests[before:]
    assert new == [("GET", "", ("repository:public/app:pull",))]


@pytest.mark.interop
def test_token_private_repo_needs_credentials(tokened: Registry) -> None:
    with source(tokened.host, "private/app:v1") as src, pytest.raises(HttpStatusError) as info:
        src.get_manifest()
    assert "requires authentication" in str(info.value)
    assert f"docker://{tokened.host}/private/app:v1" in str(info.value)


@pytest.mark.interop
def test_token_private_repo_with_credentials(tokened: Registry, layout: Path) -> None:
    with source(tokened.host, "private/app:v1", creds=Credentials(USER, PASSWORD)) as src:
        _, blobs = pull_all(src)
        assert src.token_requests == 1
    assert_same_as_layout(layout, blobs)


@pytest.mark.interop
def test_token_bad_credentials(tokened: Registry) -> None:
    with (
        source(tokened.host, "private/app:v1", creds=Credentials(USER, "nope")) as src,
        pytest.raises(HttpStatusError) as info,
    ):
        src.get_manifest()
    assert str(info.value) == f"registry {tokened.host}: authentication failed for {USER}"


@pytest.mark.interop
def test_token_identity_token_uses_oauth_post(tokened: Registry) -> None:
    server = tokened.token_server
    assert server is not None
    before = len(server.requests)
    with source(tokened.host, "private/app:v1", creds=Credentials(identity_token=REFRESH_TOKEN)) as src:
        data, _ = src.get_manifest()
    assert json.loads(data)["schemaVersion"] == 2
    assert server.requests[before:] == [("POST", USER, ("repository:private/app:pull",))]


@pytest.mark.interop
def test_token_realm_over_http_refused_for_verified_registry() -> None:
    """Unit-level: credentials never go to a plain-HTTP realm of a TLS-verified registry."""
    import httpx  # noqa: PLC0415

    from cocoguest.registry.auth import Challenge, TokenAuthenticator  # noqa: PLC0415

    with httpx.Client() as client:
        auth = TokenAuthenticator(
            client,
            host="reg.example",
            credentials=Credentials(USER, PASSWORD),
            retry=FAST,
            user_agent="t",
            allow_insecure_realm=False,
        )
        challenge = Challenge("bearer", {"realm": "http://127.0.0.1:9/token", "service": "s"})
        with pytest.raises(TransportError, match="refusing to send credentials"):
            auth.authorization(challenge, ("repository:a:pull",))


# --- push ----------------------------------------------------------------------------------------------


@pytest.mark.interop
def test_push_then_pull_back_and_skopeo_inspect(tokened: Registry, layout: Path) -> None:
    ref = ImageReference.parse(f"{tokened.host}/private/pushed:v2")
    endpoint = RegistryEndpoint(tokened.host, insecure=True)
    desc = manifest(layout)
    blob_descs = [desc["config"], *desc["layers"]]
    with DockerDestination(ref, endpoint, Credentials(USER, PASSWORD), retry=FAST) as dest:
        for d in blob_descs:
            digest = Digest.parse(d["digest"])
            data = blob(layout, d["digest"])
            assert not dest.has_blob(digest)
            path = layout / "blobs" / digest.algorithm / digest.hex
            with path.open("rb") as stream:
                dest.put_blob(stream, digest, len(data))
            assert dest.has_blob(digest)
        raw = json.dumps(desc).encode()
        pushed = dest.put_manifest(raw, desc["mediaType"])
    assert pushed == Digest.of_bytes(raw)

    with source(tokened.host, "private/pushed:v2", creds=Credentials(USER, PASSWORD)) as src:
        data, _ = src.get_manifest()
        assert data == raw
        _, blobs = pull_all(src)
    assert_same_as_layout(layout, blobs)

    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Digest"] == str(pushed)
    assert info["Layers"] == [d["digest"] for d in desc["layers"]]


@pytest.mark.interop
def test_push_without_push_permission_fails(tokened: Registry) -> None:
    ref = ImageReference.parse(f"{tokened.host}/public/app:other")
    with (
        DockerDestination(ref, RegistryEndpoint(tokened.host, insecure=True), None, retry=FAST) as dest,
        pytest.raises(HttpStatusError, match="requires authentication"),
    ):
        dest.put_manifest(b"{}", "application/vnd.oci.image.manifest.v1+json")


# --- fault injection -----------------------------------------------------------------------------------


@pytest.fixture
def proxy(plain: Registry) -> Iterator[FaultyProxy]:
    with FaultyProxy(plain.host).running() as p:
        yield p


@pytest.mark.interop
def test_cut_mid_blob_is_resumed_with_range(proxy: FaultyProxy, layout: Path) -> None:
    with source(proxy.host, "test/app:v1") as src:
        layer = largest_layer(src)
        proxy.faults.append(Fault("cut", path=f"/blobs/{layer.digest}", cut_after=layer.size // 3))
        with src.open_blob(layer) as stream:
            data = drain(VerifyingReader(stream, layer.digest, layer.size, "layer"))
    assert data == blob(layout, str(layer.digest))
    ranged = [r for r in proxy.requests_to(f"/blobs/{layer.digest}") if "Range" in r.headers]
    assert [r.headers["Range"] for r in ranged] == [f"bytes={layer.size // 3}-"]


@pytest.mark.interop
def test_cut_mid_blob_with_server_ignoring_range_fails_clearly(proxy: FaultyProxy) -> None:
    with source(proxy.host, "test/app:v1") as src:
        layer = largest_layer(src)
        proxy.faults += [
            Fault("cut", path=f"/blobs/{layer.digest}", cut_after=layer.size // 2),
            Fault("strip_range", path=f"/blobs/{layer.digest}"),
        ]
        with src.open_blob(layer) as stream:
            first = stream.read(1024)
            assert first
            with pytest.raises(TransportError, match="does not support resuming") as info:
                stream.read()
    assert str(layer.digest) in str(info.value)


@pytest.mark.interop
def test_cut_before_any_byte_delivered_restarts_when_range_ignored(proxy: FaultyProxy, layout: Path) -> None:
    with source(proxy.host, "test/app:v1") as src:
        layer = largest_layer(src)
        proxy.faults += [
            Fault("cut", path=f"/blobs/{layer.digest}", cut_after=0),
            Fault("strip_range", path=f"/blobs/{layer.digest}"),
        ]
        with src.open_blob(layer) as stream:
            data = stream.read()
    assert data == blob(layout, str(layer.digest))


@pytest.mark.interop
def test_500_then_ok_is_retried(proxy: FaultyProxy) -> None:
    proxy.faults.append(Fault("status", path="/manifests/v1", status=500, times=2))
    with source(proxy.host, "test/app:v1") as src:
        data, _ = src.get_manifest()
    assert json.loads(data)["schemaVersion"] == 2
    assert len(proxy.requests_to("/manifests/v1")) == 3


@pytest.mark.interop
def test_429_with_retry_after_is_retried(proxy: FaultyProxy) -> None:
    proxy.faults.append(Fault("status", path="/manifests/v1", status=429, retry_after="0"))
    with source(proxy.host, "test/app:v1") as src:
        src.get_manifest()
    assert len(proxy.requests_to("/manifests/v1")) == 2


@pytest.mark.interop
def test_persistent_500_is_transport_error(proxy: FaultyProxy) -> None:
    proxy.faults.append(Fault("status", path="/manifests/v1", status=503, times=None))
    with source(proxy.host, "test/app:v1") as src, pytest.raises(HttpStatusError) as info:
        src.get_manifest()
    assert info.value.status == 503
    assert proxy.host in str(info.value)
    assert "INJECTED" in str(info.value)
    assert len(proxy.requests_to("/manifests/v1")) == FAST.attempts


@pytest.mark.interop
def test_501_is_not_retried(proxy: FaultyProxy) -> None:
    proxy.faults.append(Fault("status", path="/manifests/v1", status=501, times=None))
    with source(proxy.host, "test/app:v1") as src, pytest.raises(HttpStatusError):
        src.get_manifest()
    assert len(proxy.requests_to("/manifests/v1")) == 1


@pytest.mark.interop
def test_404_from_server_is_resource_not_found(proxy: FaultyProxy) -> None:
    proxy.faults.append(Fault("status", path="/manifests/v1", status=404))
    with source(proxy.host, "test/app:v1") as src, pytest.raises(ResourceNotFoundError, match="manifest unknown"):
        src.get_manifest()


@pytest.mark.interop
def test_wrong_bytes_are_passed_through_and_caught_by_digest_check(proxy: FaultyProxy) -> None:
    with source(proxy.host, "test/app:v1") as src:
        layer = largest_layer(src)
        proxy.faults.append(Fault("corrupt", path=f"/blobs/{layer.digest}"))
        with src.open_blob(layer) as stream:
            reader = VerifyingReader(stream, layer.digest, layer.size, f"layer {layer.digest}")
            with pytest.raises(DigestMismatchError, match=str(layer.digest)):
                drain(reader)


@pytest.mark.interop
def test_overlong_blob_is_capped_at_size_plus_one(proxy: FaultyProxy) -> None:
    with source(proxy.host, "test/app:v1") as src:
        layer = largest_layer(src)
        short = layer.with_changes(size=100)
        with src.open_blob(short) as stream:
            assert len(stream.read()) == 101


@pytest.mark.interop
def test_redirect_to_other_host_drops_authorization(plain: Registry, layout: Path) -> None:
    storage = FaultyProxy(plain.host, bind="127.0.0.2")
    try:
        storage_ctx = storage.running()
        storage_ctx.__enter__()
    except OSError:
        pytest.skip("127.0.0.2 is not usable on this host")
    try:
        front = FaultyProxy(plain.host, require_basic=(USER, PASSWORD))
        with front.running():
            front.faults.append(Fault("redirect", path="/blobs/", redirect_base=f"http://{storage.host}", times=None))
            with source(front.host, "test/app:v1", creds=Credentials(USER, PASSWORD)) as src:
                _, blobs = pull_all(src)
        assert_same_as_layout(layout, blobs)
        assert all("Authorization" in r.headers for r in front.requests_to("/blobs/"))
        assert storage.requests_to("/blobs/")
        assert not any("Authorization" in r.headers for r in storage.log)
    finally:
        storage_ctx.__exit__(None, None, None)


@pytest.mark.interop
def test_proxy_from_env_and_no_proxy(plain: Registry, proxy: FaultyProxy) -> None:
    env = {"HTTP_PROXY": f"http://{proxy.host}"}
    with source(plain.host, "test/app:v1", env=env) as src:
        src.get_manifest()
    assert proxy.requests_to("/manifests/v1")

    proxy.log.clear()
    with source(plain.host, "test/app:v1", env={**env, "NO_PROXY": "localhost,127.0.0.1"}) as src:
        src.get_manifest()
    assert proxy.log == []
