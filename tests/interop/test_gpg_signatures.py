"""GPG simple signing against Debian's skopeo 1.9.3 and gpg 2.2, with a loopback registry and a lookaside.

* skopeo signs (``copy --sign-by``, into a ``file://`` lookaside configured by ``--registries.d``); cocoguest
  reads the lookaside and verifies (RSA and Ed25519 keys).
* cocoguest signs (:func:`sign_image` with the key exported from the GnuPG home) and writes the lookaside;
  skopeo's ``copy --policy`` with a ``signedBy`` requirement accepts it, and rejects it with another key;
  once over a ``file://`` and once over an ``http://`` lookaside served by a tiny HTTP server.
* X-Registry-Supports-Signatures: a tiny fake registry advertises the extension and serves the list;
  :class:`DockerSource` is used to read it.

Invariants: everything lives in ``tmp_path``/module temp dirs; ports come from port 0; the scratch gpg agent is
stopped at the end of the module.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.digest import Digest
from cocoguest.errors import SignatureError
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.config.registries_d import RegistriesD
from cocoguest.registry.docker import DockerSource
from cocoguest.registry.signature_store import LookasideSignatureSource, write_lookaside_signature
from cocoguest.registry.types import RegistryEndpoint
from cocoguest.signature.simple_signing import GpgSimpleSigningVerifier, sign_image
from tests.fixtures.gnupg import GnuPG, make_gnupg
from tests.fixtures.images import build_layout
from tests.fixtures.registry import Registry, push_layout, start_registry

pytestmark = pytest.mark.interop

KEY_SPECS = {"rsa": "rsa2048", "ed25519": "ed25519", "other": "rsa2048"}


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, env=env, check=False, timeout=120)


def _ok(args: list[str], env: dict[str, str] | None = None) -> bytes:
    result = _run(args, env)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


@pytest.fixture(scope="module")
def gnupg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    home = make_gnupg(tmp_path_factory.mktemp("gnupg"), KEY_SPECS)
    yield home
    home.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_layout(tmp_path_factory.mktemp("image") / "layout", filler_bytes=0)


def _registries_d(directory: Path, host: str, lookaside: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lookaside.yaml").write_text(f"docker:\n  {host}:\n    lookaside: {lookaside}\n")
    return directory


def _manifest_digest(ref: str) -> Digest:
    raw = _ok(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"])
    return Digest("sha256", hashlib.sha256(raw).hexdigest())


def _policy(path: Path, host: str, key: Path) -> Path:
    requirement = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key)}
    policy = {"default": [{"type": "reject"}], "transports": {"docker": {host: [requirement]}}}
    path.write_text(json.dumps(policy))
    return path


def _skopeo_pull(ref: str, policy: Path, registries_d: Path, dest: Path) -> subprocess.CompletedProcess[bytes]:
    return _run(["skopeo", "--policy", str(policy), "--registries.d", str(registries_d), "copy", "--quiet",
                 "--remove-signatures", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:x"])  # fmt: skip


@contextlib.contextmanager
def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


# --- skopeo signs, cocoguest verifies -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ed25519"])
def test_skopeo_signature_verifies(key: str, gnupg: GnuPG, registry: Registry, layout: Path, tmp_path: Path) -> None:
    lookaside = tmp_path / "lookaside"
    registries_d = _registries_d(tmp_path / "registries.d", registry.host, f"file://{lookaside}")
    ref = f"{registry.host}/skopeo-signed/{key}:v1"
    _ok(["skopeo", "--insecure-policy", "--registries.d", str(registries_d), "copy", "--quiet",
         "--dest-tls-verify=false", "--sign-by", gnupg.fingerprints[key], f"oci:{layout}:latest", f"docker://{ref}"],
        gnupg.env())  # fmt: skip
    digest = _manifest_digest(ref)
    source = LookasideSignatureSource(ImageReference.parse(ref), RegistriesD.load(registries_d), default_lookaside=None)
    signatures = source.simple_signatures(digest)
    assert len(signatures) == 1
    signed = GpgSimpleSigningVerifier().verify(signatures[0], [gnupg.public_keys[key].read_bytes()])
    assert signed.manifest_digest == digest
    assert signed.docker_reference == ref
    assert signed.signer == gnupg.fingerprints[key]
    with pytest.raises(SignatureError, match="not in the trusted keyrings"):
        GpgSimpleSigningVerifier().verify(signatures[0], [gnupg.public_keys["other"].read_bytes()])
    tampered = bytearray(signatures[0])
    tampered[-5] ^= 0x40
    with pytest.raises(SignatureError):
        GpgSimpleSigningVerifier().verify(bytes(tampered), [gnupg.public_keys[key].read_bytes()])


# --- cocoguest signs, skopeo verifies -----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["file", "http"])
def test_cocoguest_signature_accepted_by_skopeo(
    transport: str, gnupg: GnuPG, registry: Registry, layout: Path, tmp_path: Path
) -> None:
    lookaside = tmp_path / "lookaside"
    lookaside.mkdir()
    ref = f"{registry.host}/cocoguest-signed/{transport}:v1"
    push_layout(layout, ref)
    digest = _manifest_digest(ref)
    signature = sign_image(digest, ref, gnupg_home=gnupg.home, fingerprint=gnupg.fingerprints["rsa"])
    written = write_lookaside_signature(f"file://{lookaside}", ImageReference.parse(ref), digest, signature)
    assert written == lookaside / "cocoguest-signed" / f"{transport}@sha256={digest.hex}" / "signature-1"
    handler = functools.partial(_QuietFiles, directory=str(lookaside))
    with _serve(handler) as server:  # type: ignore[arg-type]
        base = f"file://{lookaside}" if transport == "file" else f"http://{server}"
        registries_d = _registries_d(tmp_path / "registries.d", registry.host, base)
        good = _policy(tmp_path / "good.json", registry.host, gnupg.public_keys["rsa"])
        result = _skopeo_pull(ref, good, registries_d, tmp_path / "out-good")
        assert result.returncode == 0, result.stderr.decode()
        bad = _policy(tmp_path / "bad.json", registry.host, gnupg.public_keys["other"])
        result = _skopeo_pull(ref, bad, registries_d, tmp_path / "out-bad")
        assert result.returncode != 0
        assert b"source image rejected" in result.stderr.lower(), result.stderr.decode()
        # and cocoguest reads the same lookaside (file or http) and agrees
        source = LookasideSignatureSource(ImageReference.parse(ref), RegistriesD.load(registries_d))
        signatures = source.simple_signatures(digest)
        assert signatures == [signature]
        signed = GpgSimpleSigningVerifier().verify(signatures[0], [gnupg.public_keys["rsa"].read_bytes()])
        assert (signed.manifest_digest, signed.docker_reference) == (digest, ref)


def test_signature_moved_to_another_digest_is_rejected_by_skopeo(
    gnupg: GnuPG, registry: Registry, layout: Path, tmp_path: Path
) -> None:
    lookaside = tmp_path / "lookaside"
    ref = f"{registry.host}/cocoguest-signed/moved:v1"
    push_layout(layout, ref)
    digest = _manifest_digest(ref)
    other = Digest("sha256", "ab" * 32)
    signature = sign_image(other, ref, gnupg_home=gnupg.home, fingerprint=gnupg.fingerprints["ed25519"])
    write_lookaside_signature(f"file://{lookaside}", ImageReference.parse(ref), digest, signature)
    registries_d = _registries_d(tmp_path / "registries.d", registry.host, f"file://{lookaside}")
    policy = _policy(tmp_path / "policy.json", registry.host, gnupg.public_keys["ed25519"])
    result = _skopeo_pull(ref, policy, registries_d, tmp_path / "out")
    assert result.returncode != 0
    assert b"source image rejected" in result.stderr.lower(), result.stderr.decode()
    assert b"digest" in result.stderr.lower(), result.stderr.decode()
    signed = GpgSimpleSigningVerifier().verify(signature, [gnupg.public_keys["ed25519"].read_bytes()])
    assert signed.manifest_digest == other  # the verifier reports the claim; the policy compares it


# --- X-Registry-Supports-Signatures ------------------------------------------------------------------


def test_registry_signature_extension(gnupg: GnuPG, tmp_path: Path) -> None:
    digest = Digest("sha256", "cd" * 32)
    state: dict[str, object] = {"advertise": True, "requests": []}

    class FakeRegistry(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:
            requests = state["requests"]
            assert isinstance(requests, list)
            requests.append(self.path)
            if self.path == "/v2/":
                self.send_response(200)
                if state["advertise"]:
                    self.send_header("X-Registry-Supports-Signatures", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            if self.path == f"/extensions/v2/ns/app/signatures/{digest}":
                entry = {"schemaVersion": 2, "type": "atomic", "name": f"{digest}@0123",
                         "content": base64.b64encode(state["signature"]).decode()}  # type: ignore[arg-type]  # fmt: skip
                body = json.dumps({"signatures": [entry]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with _serve(FakeRegistry) as host:
        ref = ImageReference.parse(f"{host}/ns/app:v1")
        state["signature"] = sign_image(digest, str(ref), gnupg_home=gnupg.home, fingerprint=gnupg.fingerprints["rsa"])
        with DockerSource(ref, RegistryEndpoint(host, insecure=True), None) as docker:
            source = LookasideSignatureSource(ref, RegistriesD(), registry_source=docker, default_lookaside=None)
            signatures = source.simple_signatures(digest)
        assert signatures == [state["signature"]]
        signed = GpgSimpleSigningVerifier().verify(signatures[0], [gnupg.public_keys["rsa"].read_bytes()])
        assert signed.docker_reference == str(ref)
        # a registry that does not advertise the extension: the (here unconfigured) lookaside instead
        state["advertise"] = False
        with DockerSource(ref, RegistryEndpoint(host, insecure=True), None) as docker:
            source = LookasideSignatureSource(ref, RegistriesD(), registry_source=docker, default_lookaside=None)
            assert source.simple_signatures(digest) == []
