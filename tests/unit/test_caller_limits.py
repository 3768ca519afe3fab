"""A caller's :class:`Limits` take effect through the library API (issue 8: "limits read where they are used").

Each test passes tightened limits to a public entry point and checks that the refusal names the caller's value
(and the ``Limits`` field), not the default one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cocoguest.crypto import jwe
from cocoguest.crypto.keys import PublicKeyMaterial
from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, KeyUnwrapError, TransportError
from cocoguest.kbs.locations import LocationReader
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci.reference import ImageReference
from cocoguest.ocicrypt import keyspecs
from cocoguest.ocicrypt.keywrap.jwe import ANNOTATION_KEY
from cocoguest.registry.docker import DockerSource
from cocoguest.registry.sigstore_attachments import SigstoreAttachmentReader
from cocoguest.registry.types import RegistryEndpoint
from cocoguest.signature.gate import load_policy
from cocoguest.signature.policy.model import Policy
from tests.fixtures.hostile_registry import REPO, TAG, Answer, HostileRegistry

# Registry limits that make a hostile registry fail fast (no backoff sleeps worth waiting for).
_FAST = Limits(registry_retry_base_delay_s=0.01, registry_retry_max_delay_s=0.02)


def _reference(registry: HostileRegistry) -> ImageReference:
    return ImageReference.parse(f"{registry.host}/{REPO}:{TAG}")


# --- (1) the registry client ---------------------------------------------------------------------------


def test_a_callers_registry_deadline_of_1_s_cuts_off_a_registry_that_never_answers() -> None:
    limits = dataclasses.replace(_FAST, registry_request_deadline_s=1, registry_retry_attempts=1)
    # The manifest answer drips one byte every 10 s: with the default 120 s deadline this would hang.
    registry = HostileRegistry().route(r"GET /v2/.*/manifests/", lambda _: Answer(200, {}, b"{" * 64, drip_s=10.0))
    with registry.running():
        endpoint = RegistryEndpoint(host=registry.host, insecure=True)
        with (
            DockerSource(_reference(registry), endpoint, None, limits=limits) as source,
            pytest.raises(TransportError) as caught,
        ):
            source.get_manifest()
    message = str(caught.value)
    assert "within 1 s" in message
    assert "registry_request_deadline_s" in message


@pytest.mark.timeout(60)
def test_a_callers_registry_deadline_cuts_off_a_registry_dripping_its_headers() -> None:
    # httpx's read timeout restarts with every byte: a head dripped one byte every 0.2 s for 600 s never trips
    # it; only the deadline inside the connection does (the test timeout only bounds a regression).
    limits = dataclasses.replace(_FAST, registry_request_deadline_s=1, registry_retry_attempts=1)
    answer = Answer(200, {}, b"{}", drip_head_s=0.2, max_seconds=600)
    registry = HostileRegistry().route(r"GET /v2/.*/manifests/", answer)
    with registry.running():
        endpoint = RegistryEndpoint(host=registry.host, insecure=True)
        with (
            DockerSource(_reference(registry), endpoint, None, limits=limits) as source,
            pytest.raises(TransportError) as caught,
        ):
            source.get_manifest()
    message = str(caught.value)
    assert "within 1 s (registry_request_deadline_s)" in message
    assert f"http://{registry.host}/v2/{REPO}/manifests/{TAG}" in message


def test_sigstore_attachments_retry_as_the_callers_limits_say() -> None:
    # Before: the attachment reader used the default retry policy (5 tries) whatever limits it was given.
    limits = dataclasses.replace(_FAST, registry_retry_attempts=1)
    digest = Digest.of_bytes(b"image manifest")
    registry = HostileRegistry().route(r"GET /v2/.*/manifests/sha256-", Answer(503, {}, b"busy"))
    with registry.running():
        endpoint = RegistryEndpoint(host=registry.host, insecure=True)
        reader = SigstoreAttachmentReader(_reference(registry), endpoint, None, limits=limits)
        with pytest.raises(TransportError):
            reader.sigstore_signatures(digest)
    assert len(registry.requests_to(r"GET /v2/.*/manifests/sha256-")) == 1


# --- (2) signature policy --------------------------------------------------------------------------------


def _policy_bytes(size: int) -> bytes:
    text = json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
    return (text + " " * (size - len(text))).encode()


def test_a_callers_max_policy_bytes_refuses_a_larger_policy() -> None:
    data = _policy_bytes(200)
    assert Policy.from_json(data, "policy.json").default  # fine with the defaults
    with pytest.raises(ConfigError, match=r"policy policy\.json: larger than 100 bytes \(max_policy_bytes\)"):
        Policy.from_json(data, "policy.json", limits=Limits(max_policy_bytes=100))


def test_load_policy_passes_the_callers_limits_on(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(_policy_bytes(200))
    limits = Limits(max_policy_bytes=100)
    with pytest.raises(ConfigError, match=r"larger than 100 bytes"):
        load_policy(str(path), LocationReader(tmp_path, limits=limits), limits=limits)


def test_a_callers_max_policy_resource_bytes_caps_a_location(tmp_path: Path) -> None:
    (tmp_path / "key.gpg").write_bytes(b"k" * 200)
    with pytest.raises(ConfigError, match=r"larger than the limit of 100 bytes"):
        LocationReader(tmp_path, limits=Limits(max_policy_resource_bytes=100)).read("key.gpg")


# --- (3) crypto --------------------------------------------------------------------------------------------


def _two_recipient_jwe(tmp_path: Path) -> tuple[bytes, Path]:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    entry = jwe.encrypt(b"private options", [PublicKeyMaterial(k.public_key(), f"pub{i}") for i, k in enumerate(keys)])
    key_file = tmp_path / "key.pem"
    pem = keys[0].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file.write_bytes(pem)
    return entry, key_file


def test_a_callers_max_key_recipients_refuses_a_two_recipient_jwe(tmp_path: Path) -> None:
    entry, key_file = _two_recipient_jwe(tmp_path)
    assert DEFAULT_LIMITS.max_key_recipients >= 2
    default_unwrapper = keyspecs.decryption_unwrappers([str(key_file)], keyspecs.KeyContext())[0]
    assert default_unwrapper.unwrap(ANNOTATION_KEY, entry) == b"private options"

    context = keyspecs.KeyContext(limits=Limits(max_key_recipients=1))
    unwrapper = keyspecs.decryption_unwrappers([str(key_file)], context)[0]
    with pytest.raises(KeyUnwrapError, match=r"2 recipients, more than the 1 accepted \(max_key_recipients\)"):
        unwrapper.unwrap(ANNOTATION_KEY, entry)


def test_jwe_decrypt_reads_the_callers_limits(tmp_path: Path) -> None:
    entry, _ = _two_recipient_jwe(tmp_path)
    with pytest.raises(KeyUnwrapError, match=r"more than the 1 accepted"):
        jwe.decrypt(entry, [], "an entry", limits=Limits(max_key_recipients=1))
