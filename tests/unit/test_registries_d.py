"""registries.d (containers-registries.d(5)) loading and lookup, and the file:// / X-R-S-S signature source.

Vectors: image-rs ``signature/sigstore_config/test_case_N/{1,2}.yaml`` merge into ``merged_result/resN.yaml``;
``get_base_url/res.yaml`` resolves lookaside base URLs.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, ProtocolError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.config.registries_d import RegistriesD, RegistryNamespace, reference_namespaces
from cocoguest.registry.signature_store import (
    LookasideSignatureSource,
    lookaside_signature_url,
    write_lookaside_signature,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "image-rs" / "signature" / "sigstore_config"
DIGEST = Digest.parse("sha256:" + "cd" * 32)


def _ref(text: str) -> ImageReference:
    return ImageReference.parse(text)


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", [1, 2, 3])
def test_image_rs_merge_vectors(case: int, tmp_path: Path) -> None:
    shutil.copytree(VECTORS / f"test_case_{case}", tmp_path / "d")
    merged = RegistriesD.load(tmp_path / "d")
    expected = RegistriesD.from_documents([("res", (VECTORS / "merged_result" / f"res{case}.yaml").read_bytes())])
    assert merged == expected
    assert merged.docker  # the vectors are not trivially empty


def test_image_rs_get_base_url_vector() -> None:
    config = RegistriesD.from_documents([("res", (VECTORS / "get_base_url" / "res.yaml").read_bytes())])
    assert config.lookaside_for(_ref("example1.com/app:v1")) == "file:///var/lib/containers/sigstore"
    assert config.lookaside_for(_ref("example2.com/ns/app@" + str(DIGEST))) == "file:///var/lib/containers/sigstore"
    assert config.lookaside_for(_ref("example3.com/app")) == "file:///default/sigstore"
    assert config.lookaside_for(_ref("busybox")) == "file:///default/sigstore"


def test_conflicting_definitions_name_both_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "docker:\n  example.com:\n    lookaside: https://a.example\n")
    _write(tmp_path, "b.yaml", "docker:\n  example.com:\n    lookaside: https://b.example\n")
    with pytest.raises(ConfigError, match=r"'example.com' defined differently in .*a\.yaml and .*b\.yaml"):
        RegistriesD.load(tmp_path)
    (tmp_path / "b.yaml").write_text("default-docker:\n  lookaside: https://b.example\n")
    _write(tmp_path, "c.yaml", "default-docker:\n  sigstore: https://b.example\n")
    with pytest.raises(ConfigError, match='"default-docker" defined differently'):
        RegistriesD.load(tmp_path)


def test_only_yaml_files_are_read_and_missing_dir_is_empty(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", "docker:\n  example.com:\n    lookaside: https://a.example\n")
    _write(tmp_path, "b.yaml.bak", "not: [valid")
    _write(tmp_path, "empty.yaml", "")
    assert RegistriesD.load(tmp_path) == RegistriesD()
    assert RegistriesD.load(tmp_path / "missing") == RegistriesD()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("docker: [unclosed", "invalid YAML"),
        ("- a\n- b\n", "YAML mapping expected"),
        ("docker: [a, b]\n", "mapping of scopes"),
        ("docker:\n  example.com:\n    lookaside: 5\n", "lookaside must be a URL string"),
        ("docker:\n  example.com:\n    lookaside: /no/scheme\n", "is not a URL"),
        ("docker:\n  example.com:\n    use-sigstore-attachments: yes-please\n", "true or false"),
        ("docker:\n  example.com: [1]\n", "a mapping expected"),
        ("default-docker: 7\n", "a mapping expected"),
    ],
)
def test_invalid_files(text: str, message: str, tmp_path: Path) -> None:
    _write(tmp_path, "x.yaml", text)
    with pytest.raises(ConfigError, match=message):
        RegistriesD.load(tmp_path)


def test_lookup_order_and_fallthrough() -> None:
    config = RegistriesD(
        default_docker=RegistryNamespace(lookaside="https://default.example", use_sigstore_attachments=True),
        docker={
            "registry.example.com": RegistryNamespace(lookaside="https://host.example"),
            "registry.example.com/team": RegistryNamespace(
                sigstore="https://team-legacy.example", sigstore_staging="file:///staging-legacy"
            ),
            "registry.example.com/team/app:dev": RegistryNamespace(
                lookaside="https://dev.example", lookaside_staging="file:///staging-dev"
            ),
            "registry.example.com/other": RegistryNamespace(use_sigstore_attachments=False),
            "*.example.org": RegistryNamespace(lookaside="https://wild.example"),
            "localhost:5000": RegistryNamespace(lookaside="file:///port"),
        },
    )
    assert config.lookaside_for(_ref("registry.example.com/team/app:dev")) == "https://dev.example"
    assert config.staging_for(_ref("registry.example.com/team/app:dev")) == "file:///staging-dev"
    assert config.lookaside_for(_ref("registry.example.com/team/app:prod")) == "https://team-legacy.example"
    assert config.staging_for(_ref("registry.example.com/team/app:prod")) == "file:///staging-legacy"
    assert config.lookaside_for(_ref("registry.example.com/team/sub/app")) == "https://team-legacy.example"
    # a matching scope without the key falls through to the next (containers/image behaviour)
    assert config.lookaside_for(_ref("registry.example.com/other/app")) == "https://host.example"
    assert config.staging_for(_ref("registry.example.com/app")) == "https://host.example"
    assert config.lookaside_for(_ref("a.b.example.org:443/x")) == "https://wild.example"
    assert config.lookaside_for(_ref("localhost:5000/x")) == "file:///port"
    assert config.lookaside_for(_ref("localhost/x")) == "https://default.example"
    assert config.use_sigstore_attachments(_ref("registry.example.com/other/app")) is False
    assert config.use_sigstore_attachments(_ref("registry.example.com/team/app")) is True
    assert RegistriesD().use_sigstore_attachments(_ref("x.example/app")) is False
    assert RegistriesD().lookaside_for(_ref("x.example/app")) is None


def test_lookaside_key_wins_over_legacy_sigstore(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "docker:\n  e.example:\n    sigstore: file:///old\n    lookaside: file:///new\n")
    assert RegistriesD.load(tmp_path).lookaside_for(_ref("e.example/app")) == "file:///new"


def test_reference_namespaces() -> None:
    assert reference_namespaces(_ref("a.b.example.com:5000/ns/app:tag")) == [
        "a.b.example.com:5000/ns/app",
        "a.b.example.com:5000/ns",
        "a.b.example.com:5000",
        "*.b.example.com",
        "*.example.com",
        "*.com",
    ]
    assert reference_namespaces(_ref("busybox")) == [
        "docker.io/library/busybox",
        "docker.io/library",
        "docker.io",
        "*.io",
    ]


_COMPONENT = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@given(host=st.lists(_COMPONENT, min_size=2, max_size=4), path=st.lists(_COMPONENT, min_size=1, max_size=4),
       configured=st.sets(st.integers(min_value=0, max_value=20)))  # fmt: skip
def test_lookup_picks_the_most_specific_configured_scope(
    host: list[str], path: list[str], configured: set[int]
) -> None:
    reference = _ref(".".join(host) + "/" + "/".join(path) + ":t")
    scopes = [f"{reference.name}:t", *reference_namespaces(reference)]
    chosen = [scopes[i] for i in sorted(configured) if i < len(scopes)]
    config = RegistriesD(docker={s: RegistryNamespace(lookaside=f"file:///{i}") for i, s in enumerate(chosen)})
    # tiny reference implementation: the first scope, in specificity order, that is configured
    expected = next((f"file:///{chosen.index(s)}" for s in scopes if s in chosen), None)
    assert config.lookaside_for(reference) == expected


# --- the file:// lookaside -------------------------------------------------------------------------


def test_file_lookaside_reads_until_missing(tmp_path: Path) -> None:
    base = f"file://{tmp_path / 'sigs'}"
    reference = _ref("registry.example.com/ns/app:v1")
    written = [write_lookaside_signature(base, reference, DIGEST, f"sig{i}".encode()) for i in range(3)]
    assert [p.name for p in written] == ["signature-1", "signature-2", "signature-3"]
    assert written[0].parent == tmp_path / "sigs" / "ns" / f"app@sha256={DIGEST.hex}"
    assert not [p for p in written[0].parent.iterdir() if p.name.startswith(".")]  # no temp files left
    config = RegistriesD(docker={"registry.example.com/ns": RegistryNamespace(lookaside=base)})
    source = LookasideSignatureSource(reference, config, default_lookaside=None)
    assert source.simple_signatures(DIGEST) == [b"sig0", b"sig1", b"sig2"]
    assert source.simple_signatures(Digest.parse("sha256:" + "00" * 32)) == []
    (written[1]).unlink()  # a gap ends the list, as containers/image
    assert source.simple_signatures(DIGEST) == [b"sig0"]


def test_no_lookaside_configured(tmp_path: Path) -> None:
    reference = _ref("registry.example.com/ns/app:v1")
    assert LookasideSignatureSource(reference, RegistriesD(), default_lookaside=None).simple_signatures(DIGEST) == []
    default = f"file://{tmp_path}"
    write_lookaside_signature(default, reference, DIGEST, b"s")
    source = LookasideSignatureSource(reference, RegistriesD(), default_lookaside=default)
    assert source.simple_signatures(DIGEST) == [b"s"]


def test_file_lookaside_limits(tmp_path: Path) -> None:
    reference = _ref("registry.example.com/app:v1")
    base = f"file://{tmp_path}"
    config = RegistriesD(default_docker=RegistryNamespace(lookaside=base))
    write_lookaside_signature(base, reference, DIGEST, b"x" * 100)
    with pytest.raises(ProtocolError, match="larger than 50 bytes"):
        LookasideSignatureSource(reference, config, max_signature_bytes=50).simple_signatures(DIGEST)
    write_lookaside_signature(base, reference, DIGEST, b"y")
    write_lookaside_signature(base, reference, DIGEST, b"z")
    with pytest.raises(ProtocolError, match="more than 2 signatures"):
        LookasideSignatureSource(reference, config, max_signatures=2).simple_signatures(DIGEST)
    assert DEFAULT_LIMITS.max_lookaside_signatures == 128


def test_unsupported_lookaside_scheme_and_writer_scheme(tmp_path: Path) -> None:
    reference = _ref("registry.example.com/app:v1")
    config = RegistriesD(default_docker=RegistryNamespace(lookaside="ftp://x.example/sigs"))
    with pytest.raises(ConfigError, match="unsupported lookaside URL scheme"):
        LookasideSignatureSource(reference, config).simple_signatures(DIGEST)
    with pytest.raises(ConfigError, match="file:// lookaside"):
        write_lookaside_signature("https://x.example", reference, DIGEST, b"s")
    with pytest.raises(ConfigError, match="names a host"):
        write_lookaside_signature("file://otherhost/x", reference, DIGEST, b"s")
    assert not list(tmp_path.iterdir())


def test_lookaside_signature_url() -> None:
    assert lookaside_signature_url("https://s.example/base", "ns/app", DIGEST, 2) == (
        f"https://s.example/base/ns/app@sha256={DIGEST.hex}/signature-2"
    )


# --- X-Registry-Supports-Signatures, with a fake registry client ------------------------------------


class _FakeExtensionRegistry:
    """A registry client that may advertise X-R-S-S and serves one signature list."""

    def __init__(self, supported: bool, body: bytes) -> None:
        self.supported = supported
        self.body = body
        self.paths: list[str] = []
        self.repository = "mirror/app"

    def supports_signatures_extension(self) -> bool:
        return self.supported

    def get_registry_path(self, path: str, *, max_bytes: int, what: str) -> bytes:
        self.paths.append(path)
        assert max_bytes > 0
        assert what
        return self.body


def _signature_list(*entries: dict[str, object]) -> bytes:
    return json.dumps({"signatures": list(entries)}).encode()


def test_extension_is_used_when_advertised(tmp_path: Path) -> None:
    reference = _ref("registry.example.com/app:v1")
    base = f"file://{tmp_path}"
    write_lookaside_signature(base, reference, DIGEST, b"from lookaside")
    config = RegistriesD(default_docker=RegistryNamespace(lookaside=base))
    body = _signature_list(
        {"schemaVersion": 2, "name": f"{DIGEST}@a", "type": "atomic", "content": base64.b64encode(b"one").decode()},
        {"schemaVersion": 1, "name": f"{DIGEST}@b", "type": "atomic", "content": base64.b64encode(b"v1").decode()},
        {"schemaVersion": 2, "name": f"{DIGEST}@c", "type": "other", "content": base64.b64encode(b"x").decode()},
        {"schemaVersion": 2, "name": f"{DIGEST}@d", "type": "atomic", "content": base64.b64encode(b"two").decode()},
    )
    registry = _FakeExtensionRegistry(True, body)
    source = LookasideSignatureSource(reference, config, registry_source=registry)
    assert source.simple_signatures(DIGEST) == [b"one", b"two"]
    assert registry.paths == [f"/extensions/v2/mirror/app/signatures/{DIGEST}"]
    # not advertised: the lookaside
    registry.supported = False
    assert source.simple_signatures(DIGEST) == [b"from lookaside"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"signatures": {}}', b'{"signatures": [1]}',
     _signature_list({"schemaVersion": 2, "type": "atomic", "content": "!!!"}),
     _signature_list({"schemaVersion": 2, "type": "atomic", "content": 5})],
)  # fmt: skip
def test_malformed_extension_answers(body: bytes) -> None:
    source = LookasideSignatureSource(
        _ref("registry.example.com/app:v1"), RegistriesD(), registry_source=_FakeExtensionRegistry(True, body)
    )
    with pytest.raises(ProtocolError):
        source.simple_signatures(DIGEST)
