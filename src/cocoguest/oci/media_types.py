"""OCI and Docker media types, and the ocicrypt ``+encrypted`` rule.

Invariant: a layer media type is encrypted iff it ends in ``+encrypted`` (containers/image's rule,
ocicrypt.md §2); :func:`encrypted_type` and :func:`decrypted_type` are inverses on supported types.
"""

from __future__ import annotations

from typing import Final

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYOUT_VERSION: Final = "1.0.0"

OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

ENCRYPTED_SUFFIX: Final = "+encrypted"

OCI_LAYER_ENC: Final = OCI_LAYER + ENCRYPTED_SUFFIX
OCI_LAYER_GZIP_ENC: Final = OCI_LAYER_GZIP + ENCRYPTED_SUFFIX
OCI_LAYER_ZSTD_ENC: Final = OCI_LAYER_ZSTD + ENCRYPTED_SUFFIX
OCI_LAYER_ND_ENC: Final = OCI_LAYER_ND + ENCRYPTED_SUFFIX
OCI_LAYER_ND_GZIP_ENC: Final = OCI_LAYER_ND_GZIP + ENCRYPTED_SUFFIX
OCI_LAYER_ND_ZSTD_ENC: Final = OCI_LAYER_ND_ZSTD + ENCRYPTED_SUFFIX

#: Layer types that may be encrypted (ocicrypt.md §2: OCI, non-distributable and Docker, any compression).
ENCRYPTABLE_LAYER_TYPES: Final = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_ND,
        OCI_LAYER_ND_GZIP,
        OCI_LAYER_ND_ZSTD,
        DOCKER_LAYER_GZIP,
        DOCKER_FOREIGN_LAYER_GZIP,
    }
)

#: Docker layer types become their OCI equivalent when a manifest is converted to OCI.
DOCKER_TO_OCI_LAYER: Final = {
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_FOREIGN_LAYER_GZIP: OCI_LAYER_ND_GZIP,
}


def is_encrypted(media_type: str) -> bool:
    """True if ``media_type`` is an ocicrypt-encrypted layer type."""
    return media_type.endswith(ENCRYPTED_SUFFIX)


def encrypted_type(media_type: str) -> str:
    """The encrypted form of a plain layer type.

    Raises:
        ValueError: the type cannot be encrypted (already encrypted, or not a layer type).
    """
    if is_encrypted(media_type):
        msg = f"media type {media_type} is already encrypted"
        raise ValueError(msg)
    oci = DOCKER_TO_OCI_LAYER.get(media_type, media_type)
    if oci not in ENCRYPTABLE_LAYER_TYPES:
        msg = f"media type {media_type} is not an encryptable layer type"
        raise ValueError(msg)
    return oci + ENCRYPTED_SUFFIX


def decrypted_type(media_type: str) -> str:
    """The plain form of an encrypted layer type.

    Raises:
        ValueError: the type is not encrypted.
    """
    if not is_encrypted(media_type):
        msg = f"media type {media_type} is not encrypted"
        raise ValueError(msg)
    return media_type.removesuffix(ENCRYPTED_SUFFIX)


def compression_of(media_type: str) -> str:
    """``"gzip"``, ``"zstd"`` or ``"none"`` for a (plain or encrypted) layer type."""
    base = media_type.removesuffix(ENCRYPTED_SUFFIX)
    if base.endswith(("+gzip", ".tar.gzip")):
        return "gzip"
    if base.endswith("+zstd"):
        return "zstd"
    return "none"
