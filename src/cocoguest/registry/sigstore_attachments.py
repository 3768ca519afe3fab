"""Cosign signature attachments in a registry: reading them, signing payloads, and pushing new signatures.

Format (cosign ``pkg/oci``; containers/image ``docker/docker_client.go`` and ``docker_image_dest.go``): the
signatures of manifest ``sha256:<hex>`` live in the same repository under the tag ``sha256-<hex>.sig``, as an
image manifest whose layers of media type ``application/vnd.dev.cosign.simplesigning.v1+json`` are payloads
and whose layer annotations carry the signature (``dev.cosignproject.cosign/signature``, base64) and, for
keyless signatures, ``dev.sigstore.cosign/certificate``, ``dev.sigstore.cosign/chain`` and
``dev.sigstore.cosign/bundle``. Its config is an OCI image config whose ``rootfs.diff_ids`` list the payload
digests (containers/image writes ``{"architecture":"","os":"","config":{},"rootfs":{...}}``).

Invariants:
    * Everything read here is UNTRUSTED and returned as such; verification is the policy's job. Payload blobs
      are size-capped and digest-checked before they are returned.
    * A missing ``.sig`` tag means "no signatures" (an empty list); any other failure is an error (we never
      treat an unreadable signature store as unsigned-and-fine: the policy then rejects anyway).
    * Pushing appends: existing layers (of any media type) are kept, a signature identical to an existing
      layer (media type, digest, size, annotations) is not added twice, the manifest is written last.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import BinaryIO, Final, Protocol

from cocoguest.digest import Digest, VerifyingReader
from cocoguest.errors import ProtocolError, ResourceNotFoundError
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor, ImageManifest, dump_json
from cocoguest.oci.reference import ImageReference
from cocoguest.oci.source import ImageSource
from cocoguest.registry.docker import DockerDestination, DockerSource
from cocoguest.registry.http import RetryPolicy
from cocoguest.registry.types import Credentials, RegistryEndpoint, SigstoreSignature

_logger = logging.getLogger(__name__)

SIMPLESIGNING_MEDIA_TYPE: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION: Final = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION: Final = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION: Final = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION: Final = "dev.sigstore.cosign/bundle"

#: Creator recorded in payloads we sign.
CREATOR: Final = "cocoguest"


class AttachmentDestination(Protocol):
    """What pushing needs from a registry destination (:class:`DockerDestination` implements it)."""

    def has_blob(self, digest: Digest) -> bool:
        """Whether the repository has the blob."""
        ...

    def put_blob(self, stream: BinaryIO, digest: Digest, size: int) -> None:
        """Upload a blob."""
        ...

    def put_manifest(self, data: bytes, media_type: str, tag_or_digest: str | None = None) -> Digest:
        """Upload a manifest under a tag."""
        ...


def signature_tag(manifest_digest: Digest) -> str:
    """``sha256-<hex>.sig``: the tag holding the signatures of ``manifest_digest``."""
    return f"{manifest_digest.algorithm}-{manifest_digest.hex}.sig"


def signature_reference(image: ImageReference, manifest_digest: Digest) -> ImageReference:
    """The reference of the attachment manifest of ``manifest_digest`` in ``image``'s repository."""
    return ImageReference(image.registry, image.repository, signature_tag(manifest_digest), None)


# --- reading ------------------------------------------------------------------------------------------


def _read_small_blob(source: ImageSource, desc: Descriptor, cap: int, what: str) -> bytes:
    if desc.size > cap:
        msg = f"{what}: blob {desc.digest} declares {desc.size} bytes (limit {cap})"
        raise ProtocolError(msg)
    stream = source.open_blob(desc)
    try:
        # SECURITY: exactly desc.size bytes hashing to desc.digest, or an error.
        reader = VerifyingReader(stream, desc.digest, desc.size, f"{what}: blob {desc.digest}")
        parts = []
        while chunk := reader.read():
            parts.append(chunk)
        return b"".join(parts)
    finally:
        stream.close()


def _parse_attachment_manifest(untrusted: bytes, declared: str | None, what: str) -> ImageManifest:
    try:
        manifest = ImageManifest.from_bytes(untrusted, f"{what}: manifest", declared_type=declared)
    except ValueError as e:
        msg = f"{what}: not an image manifest ({e})"
        raise ProtocolError(msg) from e
    return manifest


def _annotation(annotations: Mapping[str, str], key: str) -> bytes | None:
    value = annotations.get(key)
    return None if value is None else value.encode("utf-8")


def read_sigstore_signatures(source: ImageSource, *, limits: Limits = DEFAULT_LIMITS) -> list[SigstoreSignature]:
    """The cosign signatures in the attachment manifest that ``source`` names (opened at the ``.sig`` tag).

    Layers of other media types (attestations, SBOMs) and layers without a signature annotation are skipped.

    Raises:
        ProtocolError: the attachment manifest is malformed or too large, or a payload is oversized.
        DigestMismatchError, SizeMismatchError: a payload blob does not match its descriptor.
        TransportError: the registry cannot be read.
    """
    what = f"sigstore attachments {source.describe()}"
    try:
        untrusted_manifest, declared = source.get_manifest()
    except ResourceNotFoundError:
        _logger.debug("%s: no attachment manifest; no sigstore signatures", what)
        return []
    manifest = _parse_attachment_manifest(untrusted_manifest, declared, what)
    # SECURITY: each signature layer costs a blob download and a verification.
    if len(manifest.layers) > limits.max_sigstore_attachment_layers:
        msg = (
            f"{what}: {len(manifest.layers)} layers "
            f"(limit {limits.max_sigstore_attachment_layers}, max_sigstore_attachment_layers)"
        )
        raise ProtocolError(msg)
    signatures: list[SigstoreSignature] = []
    for index, layer in enumerate(manifest.layers):
        if layer.media_type != SIMPLESIGNING_MEDIA_TYPE:
            _logger.debug("%s: layer %d is %s, not a signature; skipped", what, index, layer.media_type)
            continue
        untrusted_signature = layer.annotations.get(SIGNATURE_ANNOTATION)
        if untrusted_signature is None:
            _logger.warning("%s: layer %d has no %s annotation; skipped", what, index, SIGNATURE_ANNOTATION)
            continue
        payload = _read_small_blob(source, layer, min(limits.max_sigstore_payload_bytes, limits.max_blob_bytes), what)
        signatures.append(
            SigstoreSignature(
                payload=payload,
                signature_b64=untrusted_signature,
                certificate_pem=_annotation(layer.annotations, CERTIFICATE_ANNOTATION),
                chain_pem=_annotation(layer.annotations, CHAIN_ANNOTATION),
                bundle_json=_annotation(layer.annotations, BUNDLE_ANNOTATION),
            )
        )
    return signatures


def fetch_sigstore_signatures(
    image: ImageReference,
    manifest_digest: Digest,
    endpoint: RegistryEndpoint,
    credentials: Credentials | None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    env: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
) -> list[SigstoreSignature]:
    """The cosign signatures of ``manifest_digest`` stored in ``image``'s repository at ``endpoint``.

    Raises:
        As :func:`read_sigstore_signatures`.
    """
    reference = signature_reference(image, manifest_digest)
    with DockerSource(reference, endpoint, credentials, limits=limits, env=env, retry=retry) as source:
        return read_sigstore_signatures(source, limits=limits)


class SigstoreAttachmentReader:
    """Reads cosign attachments of one repository location; the ``sigstore_signatures`` half of a
    :class:`~cocoguest.signature.policy.types.SignatureSource`."""

    def __init__(
        self,
        image: ImageReference,
        endpoint: RegistryEndpoint,
        credentials: Credentials | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        env: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Remember where to look; no request is made until :meth:`sigstore_signatures`.

        ``retry`` ``None`` is the retry policy ``limits`` describe.
        """
        self._image = image
        self._endpoint = endpoint
        self._credentials = credentials
        self._limits = limits
        self._env = env
        self._retry = retry

    def sigstore_signatures(self, manifest_digest: Digest) -> list[SigstoreSignature]:
        """Signatures at ``sha256-<hex>.sig`` (may be empty).

        Raises:
            As :func:`read_sigstore_signatures`.
        """
        return fetch_sigstore_signatures(
            self._image,
            manifest_digest,
            self._endpoint,
            self._credentials,
            limits=self._limits,
            env=self._env,
            retry=self._retry,
        )


# --- pushing ------------------------------------------------------------------------------------------


def _signature_annotations(signature: SigstoreSignature) -> dict[str, str]:
    annotations = {SIGNATURE_ANNOTATION: signature.signature_b64}
    for key, value in (
        (CERTIFICATE_ANNOTATION, signature.certificate_pem),
        (CHAIN_ANNOTATION, signature.chain_pem),
        (BUNDLE_ANNOTATION, signature.bundle_json),
    ):
        if value is not None:
            annotations[key] = value.decode("utf-8")
    return annotations


def _new_config() -> dict[str, object]:
    # containers/image: json.Marshal of an empty imgspecv1.Image with RootFS.Type "layers".
    return {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}


def _load_config(source: ImageSource, desc: Descriptor, limits: Limits, what: str) -> dict[str, object]:
    data = _read_small_blob(source, desc, limits.max_config_bytes, f"{what}: config")
    config = load_object(data, f"{what}: config {desc.digest}")
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    if not isinstance(rootfs, dict) or not isinstance(rootfs.setdefault("diff_ids", []), list):
        msg = f"{what}: config {desc.digest} has a malformed rootfs"
        raise ProtocolError(msg)
    return config


def _upload(destination: AttachmentDestination, data: bytes) -> Digest:
    digest = Digest.of_bytes(data)
    if not destination.has_blob(digest):
        destination.put_blob(io.BytesIO(data), digest, len(data))
    return digest


def push_sigstore_signature(
    source: ImageSource | None,
    destination: AttachmentDestination,
    manifest_digest: Digest,
    signature: SigstoreSignature,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Digest:
    """Append ``signature`` to the attachment manifest of ``manifest_digest`` and push it.

    Args:
        source: reads the existing attachment manifest (opened at the ``.sig`` tag); ``None`` starts afresh.
        destination: the repository to write to.
        manifest_digest: the signed manifest.
        signature: the signature to add.
        limits: size limits for what is read back.

    Returns:
        The digest of the attachment manifest written.

    Raises:
        ProtocolError: the existing attachment manifest or config is malformed.
        TransportError: the registry refused an upload.
    """
    tag = signature_tag(manifest_digest)
    what = f"sigstore attachment {tag}"
    layers: list[Descriptor] = []
    config = _new_config()
    if source is not None:
        try:
            untrusted_manifest, declared = source.get_manifest()
        except ResourceNotFoundError:
            untrusted_manifest, declared = None, None
        if untrusted_manifest is not None:
            existing = _parse_attachment_manifest(untrusted_manifest, declared, what)
            layers = list(existing.layers)
            config = _load_config(source, existing.config, limits, what)
    annotations = _signature_annotations(signature)
    payload_digest = Digest.of_bytes(signature.payload)
    new_layer = Descriptor(
        SIMPLESIGNING_MEDIA_TYPE, payload_digest, len(signature.payload), MappingProxyType(annotations)
    )
    duplicate = any(
        layer.media_type == new_layer.media_type
        and layer.digest == new_layer.digest
        and layer.size == new_layer.size
        and dict(layer.annotations) == annotations
        for layer in layers
    )
    if duplicate:
        _logger.info("%s: the signature is already there", what)
    else:
        _upload(destination, signature.payload)
        layers.append(new_layer)
        rootfs = config["rootfs"]
        if isinstance(rootfs, dict):
            diff_ids = rootfs["diff_ids"]
            if isinstance(diff_ids, list):
                diff_ids.append(str(payload_digest))
    config_bytes = dump_json(config)
    config_digest = _upload(destination, config_bytes)
    manifest = ImageManifest(
        media_type=media_types.OCI_MANIFEST,
        config=Descriptor(media_types.OCI_CONFIG, config_digest, len(config_bytes)),
        layers=tuple(layers),
    )
    return destination.put_manifest(manifest.to_bytes(), media_types.OCI_MANIFEST, tag)


def push_sigstore_attachment(
    image: ImageReference,
    manifest_digest: Digest,
    signature: SigstoreSignature,
    endpoint: RegistryEndpoint,
    credentials: Credentials | None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    env: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
) -> Digest:
    """:func:`push_sigstore_signature` to ``image``'s repository at ``endpoint`` (reads and writes the ``.sig`` tag).

    Raises:
        As :func:`push_sigstore_signature`.
    """
    reference = signature_reference(image, manifest_digest)
    with (
        DockerSource(reference, endpoint, credentials, limits=limits, env=env, retry=retry) as source,
        DockerDestination(reference, endpoint, credentials, limits=limits, env=env, retry=retry) as destination,
    ):
        return push_sigstore_signature(source, destination, manifest_digest, signature, limits=limits)
