"""Init-data: TOML parsing, digest and binding (guest-components.md §6.6, kbs-protocol.md §8.2).

Document shape::

    version = "0.1.0"
    algorithm = "sha384"      # sha256 | sha384 | sha512 (guest-components also accepts sm3)
    [data]
    "aa.toml" = '''...'''

Invariants:
    * The digest is ``algorithm(raw TOML bytes)``: the bytes exactly as given, never re-serialised.
    * The document must be UTF-8 TOML of at most ``Limits.max_initdata_bytes`` with exactly the keys ``version``
      (string), ``algorithm`` (one of the above) and ``data`` (a table of strings); anything else is an
      :class:`InitDataError` naming the key (stricter than upstream, which ignores unknown keys: an unmeasured
      reader could otherwise see fields the verifier's parser skips).
    * :func:`bind_init_data` succeeds only when the attester checked or extended the digest; a mismatch raises.
"""

from __future__ import annotations

import base64
import binascii
import logging
import tomllib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from cocoguest.attestation.attester import Attester, BindResult, HashAlgorithm
from cocoguest.errors import InitDataError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

ALGORITHMS: Final = ("sha256", "sha384", "sha512", "sm3")
_KEYS: Final = frozenset({"version", "algorithm", "data"})


@dataclass(frozen=True, slots=True)
class InitData:
    """A parsed init-data document and its digest."""

    raw: bytes
    version: str
    algorithm: HashAlgorithm
    data: MappingProxyType[str, str]

    @property
    def digest(self) -> bytes:
        """``algorithm(raw)``."""
        return self.algorithm.digest(self.raw)

    def text(self) -> str:
        """The TOML text, as sent to the KBS in ``init-data {"format": "toml", "body": ...}``."""
        return self.raw.decode("utf-8")


def parse_initdata(untrusted: bytes, *, limits: Limits = DEFAULT_LIMITS) -> InitData:
    """Parse an init-data TOML document (see the module docstring).

    Raises:
        InitDataError: too large, not UTF-8 TOML, or not the documented shape.
    """
    if len(untrusted) > limits.max_initdata_bytes:
        msg = f"init-data of {len(untrusted)} bytes is larger than {limits.max_initdata_bytes}"
        raise InitDataError(msg)
    try:
        document = tomllib.loads(untrusted.decode("utf-8"))
    except UnicodeDecodeError as e:
        msg = "init-data is not UTF-8"
        raise InitDataError(msg) from e
    except tomllib.TOMLDecodeError as e:
        msg = f"init-data is not valid TOML ({e})"
        raise InitDataError(msg) from e
    unknown = sorted(set(document) - _KEYS)
    if unknown:
        msg = f"init-data has unknown key(s): {', '.join(repr(k[:64]) for k in unknown[:5])}"
        raise InitDataError(msg)
    version = document.get("version")
    if not isinstance(version, str):
        msg = "init-data 'version' must be a string"
        raise InitDataError(msg)
    name = document.get("algorithm")
    if name not in ALGORITHMS or not isinstance(name, str):
        msg = f"init-data 'algorithm' must be one of {', '.join(ALGORITHMS)}, got {str(name)[:32]!r}"
        raise InitDataError(msg)
    data = document.get("data", {})
    if not isinstance(data, dict):
        msg = "init-data 'data' must be a table"
        raise InitDataError(msg)
    if len(data) > limits.max_initdata_entries:
        msg = f"init-data 'data' has {len(data)} entries (at most {limits.max_initdata_entries})"
        raise InitDataError(msg)
    for key, value in data.items():
        if not isinstance(value, str):
            msg = f"init-data data entry {key[:64]!r} must be a string"
            raise InitDataError(msg)
    return InitData(untrusted, version, HashAlgorithm.from_name(name), MappingProxyType(dict(data)))


def decode_digest(text: str) -> bytes:
    """An ``--initdata-digest`` argument (base64 standard) as bytes.

    Raises:
        InitDataError: not canonical base64, or not the size of a supported digest.
    """
    try:
        digest = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = "init-data digest is not valid base64"
        raise InitDataError(msg) from e
    if len(digest) not in {a.digest_size for a in HashAlgorithm}:
        msg = f"init-data digest of {len(digest)} bytes is not a sha256/sha384/sha512/sm3 digest"
        raise InitDataError(msg)
    return digest


def bind_init_data(attester: Attester, digest: bytes) -> BindResult:
    """Bind ``digest`` to the TEE through ``attester`` (AA start-up; the AA refuses to start if this raises).

    Raises:
        InitDataMismatchError: the TEE measured another value.
        AttestationRequestError: the digest cannot fit the TEE's field.
        TeeDeviceError: the device failed.
    """
    result = attester.bind_init_data(digest)
    if result is BindResult.UNSUPPORTED:
        _logger.warning("%s cannot bind init-data: its digest is NOT checked against the TEE", attester.tee)
    return result
