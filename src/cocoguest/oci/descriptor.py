"""OCI descriptors, image manifests and indexes as immutable values.

Invariants:
    * Parsing never trusts types: every field is checked and a :class:`ValueError` names the field.
    * Unknown JSON members are kept in ``extra`` and written back, so rewriting a manifest loses nothing.
    * ``to_json`` writes compact JSON with the field order containers/image uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Self

from cocoguest.digest import Digest
from cocoguest.errors import CocoError
from cocoguest.jsonutil import load_object
from cocoguest.oci import media_types

JsonObject = dict[str, Any]  # JSON is dynamically typed by nature


def _expect(obj: JsonObject, key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        msg = f"{where}: field {key!r} must be a {kind.__name__}"
        raise ValueError(msg)
    return value


def _annotations(obj: JsonObject, where: str) -> Mapping[str, str]:
    raw = obj.get("annotations")
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        msg = f"{where}: annotations must map strings to strings"
        raise ValueError(msg)
    return MappingProxyType(dict(raw))


@dataclass(frozen=True, slots=True)
class Platform:
    """An image platform (os/architecture/variant)."""

    os: str
    architecture: str
    variant: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(cls, obj: object, where: str = "platform") -> Platform:
        """Parse a platform object."""
        if not isinstance(obj, dict):
            msg = f"{where}: must be an object"
            raise ValueError(msg)
        variant = obj.get("variant")
        if variant is not None and not isinstance(variant, str):
            msg = f"{where}: variant must be a string"
            raise ValueError(msg)
        extra = {k: v for k, v in obj.items() if k not in {"os", "architecture", "variant"}}
        return cls(
            _expect(obj, "os", str, where),
            _expect(obj, "architecture", str, where),
            variant,
            MappingProxyType(extra),
        )

    def to_json(self) -> JsonObject:
        """JSON object form."""
        out: JsonObject = {"architecture": self.architecture, "os": self.os}
        out.update(self.extra)
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    urls: tuple[str, ...] = ()
    platform: Platform | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(cls, obj: object, where: str = "descriptor") -> Descriptor:
        """Parse a descriptor object.

        Raises:
            ValueError: a field is missing or malformed.
        """
        if not isinstance(obj, dict):
            msg = f"{where}: must be an object"
            raise ValueError(msg)
        size = _expect(obj, "size", int, where)
        if size < 0:
            msg = f"{where}: negative size"
            raise ValueError(msg)
        try:
            digest = Digest.parse(_expect(obj, "digest", str, where))
        except ValueError as e:
            msg = f"{where}: {e}"
            raise ValueError(msg) from e
        urls_raw = obj.get("urls", [])
        if not isinstance(urls_raw, list) or not all(isinstance(u, str) for u in urls_raw):
            msg = f"{where}: urls must be a list of strings"
            raise ValueError(msg)
        platform = obj.get("platform")
        known = {"mediaType", "digest", "size", "annotations", "urls", "platform"}
        return cls(
            media_type=_expect(obj, "mediaType", str, where),
            digest=digest,
            size=size,
            annotations=_annotations(obj, where),
            urls=tuple(urls_raw),
            platform=None if platform is None else Platform.from_json(platform, f"{where}.platform"),
            extra=MappingProxyType({k: v for k, v in obj.items() if k not in known}),
        )

    def to_json(self) -> JsonObject:
        """JSON object form (containers/image field order)."""
        out: JsonObject = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        out.update(self.extra)
        return out

    def with_changes(self, **changes: Any) -> Self:
        """A copy with some fields replaced."""
        return replace(self, **changes)


def _load_object(data: bytes, what: str) -> JsonObject:
    try:
        return load_object(data, what)
    except CocoError as e:  # this module's contract is ValueError (see the module docstring)
        raise ValueError(str(e)) from e


def dump_json(obj: JsonObject) -> bytes:
    """Compact JSON as containers/image writes it (no spaces, no HTML escaping)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """An OCI image manifest or a Docker schema2 manifest."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "manifest", declared_type: str | None = None) -> ImageManifest:
        """Parse manifest JSON.

        ``declared_type`` is the media type the container (index or HTTP header) gave, used when the
        manifest has no ``mediaType`` member (allowed for OCI).

        Raises:
            ValueError: the manifest is malformed or of another kind.
        """
        obj = _load_object(data, what)
        if obj.get("schemaVersion") != 2:
            msg = f"{what}: unsupported schemaVersion {obj.get('schemaVersion')!r}"
            raise ValueError(msg)
        media_type = obj.get("mediaType", declared_type or media_types.OCI_MANIFEST)
        if media_type not in {media_types.OCI_MANIFEST, media_types.DOCKER_MANIFEST}:
            msg = f"{what}: media type {media_type!r} is not an image manifest"
            raise ValueError(msg)
        layers_raw = obj.get("layers")
        if not isinstance(layers_raw, list):
            msg = f"{what}: field 'layers' must be a list"
            raise ValueError(msg)
        known = {"schemaVersion", "mediaType", "config", "layers", "annotations"}
        return cls(
            media_type=media_type,
            config=Descriptor.from_json(obj.get("config"), f"{what}.config"),
            layers=tuple(Descriptor.from_json(d, f"{what}.layers[{i}]") for i, d in enumerate(layers_raw)),
            annotations=_annotations(obj, what),
            extra=MappingProxyType({k: v for k, v in obj.items() if k not in known}),
        )

    def to_json(self) -> JsonObject:
        """JSON object form."""
        out: JsonObject = {"schemaVersion": 2, "mediaType": self.media_type}
        out["config"] = self.config.to_json()
        out["layers"] = [layer.to_json() for layer in self.layers]
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        out.update(self.extra)
        return out

    def to_bytes(self) -> bytes:
        """Serialized manifest."""
        return dump_json(self.to_json())

    def with_changes(self, **changes: Any) -> Self:
        """A copy with some fields replaced."""
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ImageIndex:
    """An OCI image index (also the root ``index.json`` of a layout) or a Docker manifest list."""

    media_type: str | None
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "index") -> ImageIndex:
        """Parse index JSON.

        Raises:
            ValueError: the index is malformed.
        """
        obj = _load_object(data, what)
        if obj.get("schemaVersion") != 2:
            msg = f"{what}: unsupported schemaVersion {obj.get('schemaVersion')!r}"
            raise ValueError(msg)
        media_type = obj.get("mediaType")
        if media_type is not None and media_type not in {
            media_types.OCI_INDEX,
            media_types.DOCKER_MANIFEST_LIST,
        }:
            msg = f"{what}: media type {media_type!r} is not an index"
            raise ValueError(msg)
        manifests_raw = obj.get("manifests")
        if not isinstance(manifests_raw, list):
            msg = f"{what}: field 'manifests' must be a list"
            raise ValueError(msg)
        known = {"schemaVersion", "mediaType", "manifests", "annotations"}
        return cls(
            media_type=media_type,
            manifests=tuple(Descriptor.from_json(d, f"{what}.manifests[{i}]") for i, d in enumerate(manifests_raw)),
            annotations=_annotations(obj, what),
            extra=MappingProxyType({k: v for k, v in obj.items() if k not in known}),
        )

    def to_json(self) -> JsonObject:
        """JSON object form."""
        out: JsonObject = {"schemaVersion": 2}
        if self.media_type is not None:
            out["mediaType"] = self.media_type
        out["manifests"] = [m.to_json() for m in self.manifests]
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        out.update(self.extra)
        return out

    def to_bytes(self) -> bytes:
        """Serialized index."""
        return dump_json(self.to_json())


def media_type_of(data: bytes, what: str) -> str | None:
    """The ``mediaType`` member of a manifest-like JSON document, if any.

    Raises:
        ValueError: not a JSON object.
    """
    value = _load_object(data, what).get("mediaType")
    return value if isinstance(value, str) else None
