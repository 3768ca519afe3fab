"""coco-keyprovider's WrapKey: private layer-key options in, AnnotationPacket v1 out (guest-components.md §7.4).

For one ``keywrap`` request of the key provider protocol (ocicrypt.md §5.5):

1. The parameters are ``ec.Parameters["attestation-agent"][0]`` (or the only entry, whatever the provider is
   called in the caller's ocicrypt config), parsed by :func:`~cocoguest.keyprovider.params.parse_wrap_params`.
2. The KEK: ``sample=true`` -> the public sample_kbc key, an all-zero IV and kid ``kbs:///default/test-key/1``
   (as upstream; for tests only); ``keypath=F`` -> the 32 bytes of ``F``; otherwise a fresh random KEK.
3. The kid: ``keyid`` or ``kbs:///default/image-kek/<uuid4>``.
4. Unless in sample mode, the KEK is stored in the KBS (:class:`~cocoguest.keyprovider.kek_store.KekStore`)
   BEFORE the packet is returned, so an image is never encrypted to a key the KBS does not hold.
5. A random KEK is remembered per kid: ocicrypt calls WrapKey once per LAYER with the same parameters, and a
   new KEK per call would overwrite the KBS resource so that only the last layer could be decrypted. The
   first call for a kid makes and registers the KEK; later calls reuse it (at most
   ``Limits.keyprovider_max_remembered_keks`` kids, oldest forgotten first).
6. The answer is ``{"keywrapresults":{"annotation":[...bytes...]}}`` (the byte-array form upstream's Rust sends).

Invariants:
    * SECURITY: a random KEK with no KBS configured is refused (it would exist nowhere once this call returns,
      and the image could never be decrypted).
    * SECURITY: the KEK never appears in a log line or an error message.
    * Only ``keywrap`` is served; ``keyunwrap`` is refused (upstream's coco_keyprovider implements WrapKey only).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Final

from cocoguest.crypto import kek_wrap
from cocoguest.errors import ConfigError, KeyProviderParamsError
from cocoguest.kbs.annotation_wrap import wrap_to_packet
from cocoguest.kbs.kbc.sample_kbc import SAMPLE_KEY
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.keyprovider.kek_store import KekStore
from cocoguest.keyprovider.params import WrapParams, parse_wrap_params
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.keyprovider.protocol import build_wrap_response, parse_request

_logger = logging.getLogger(__name__)

PROVIDER_NAME: Final = "attestation-agent"
SAMPLE_KID: Final = ResourceUri.parse("kbs:///default/test-key/1")
DEFAULT_KEK_REPOSITORY: Final = "default/image-kek"


def _params_bytes(parameters: dict[str, list[bytes]]) -> bytes:
    values = parameters.get(PROVIDER_NAME)
    if values is None and len(parameters) == 1:
        values = next(iter(parameters.values()))
    if values is None:
        names = ", ".join(sorted(parameters)[:5]) or "none"
        msg = f"coco-keyprovider: no {PROVIDER_NAME!r} entry in ec.Parameters (got: {names})"
        raise KeyProviderParamsError(msg)
    return values[0] if values else b""


def _read_kek(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            kek = f.read(kek_wrap.KEK_BYTES + 1)
    except OSError as e:
        msg = f"coco-keyprovider keypath {path}: {e.strerror}"
        raise ConfigError(msg) from e
    if len(kek) != kek_wrap.KEK_BYTES:
        shown = f"more than {kek_wrap.KEK_BYTES}" if len(kek) > kek_wrap.KEK_BYTES else str(len(kek))
        msg = f"coco-keyprovider keypath {path}: a KEK is exactly {kek_wrap.KEK_BYTES} bytes, the file has {shown}"
        raise ConfigError(msg)
    return kek


class KeyWrapper:
    """Answers ``keywrap`` requests; thread-safe when its :class:`KekStore` is."""

    def __init__(self, store: KekStore | None, limits: Limits = DEFAULT_LIMITS) -> None:
        """Register KEKs in ``store``; with ``None`` only ``sample=true`` and ``keypath=`` wraps work."""
        self._store = store
        self._limits = limits
        self._random_keks: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _random_kek(self, kid: ResourceUri, store: KekStore) -> bytes:
        key = str(kid)
        with self._lock:  # one KEK per kid even when layers are wrapped concurrently
            kek = self._random_keks.get(key)
            if kek is None:
                kek = kek_wrap.random_kek()
                store.store(kid, kek)
                self._random_keks[key] = kek
                while len(self._random_keks) > self._limits.keyprovider_max_remembered_keks:
                    self._random_keks.popitem(last=False)
            return kek

    def wrap_params(self, params: WrapParams, private_options: bytes) -> bytes:
        """The AnnotationPacket v1 JSON for ``private_options`` under ``params``.

        Raises:
            ConfigError: a random KEK with no KBS; an unreadable or wrong-sized KEK file.
            KbsStatusError, TransportError: the KBS did not take the KEK.
        """
        if params.sample:
            # SECURITY: the sample key is public; this mode exists for upstream's sample_kbc tests only.
            _logger.warning("coco-keyprovider: sample=true wraps with the PUBLIC sample_kbc key")
            return wrap_to_packet(SAMPLE_KID, SAMPLE_KEY, private_options, "A256GCM", bytes(12))
        kid = params.keyid or ResourceUri.parse(f"kbs:///{DEFAULT_KEK_REPOSITORY}/{uuid.uuid4()}")
        if params.keypath is not None:
            kek = _read_kek(params.keypath)
            if self._store is not None:
                self._store.store(kid, kek)
        elif self._store is None:
            msg = f"coco-keyprovider: no keypath for {kid} and no --kbs to register a random KEK in"
            raise ConfigError(msg)
        else:
            kek = self._random_kek(kid, self._store)
        _logger.info("coco-keyprovider: wrapped layer key options under %s (%s)", kid, params.algorithm)
        return wrap_to_packet(kid, kek, private_options, params.algorithm)

    def handle(self, untrusted_request: bytes) -> bytes:
        """Answer one ``keywrap`` request (protocol JSON in, protocol JSON out).

        Raises:
            ProtocolError: not a valid key provider request.
            KeyProviderParamsError: not ``keywrap``, no options, or bad parameters.
            ConfigError, KbsStatusError, TransportError: as :meth:`wrap_params`.
        """
        request = parse_request(untrusted_request)
        if request.op != "wrap":
            msg = "coco-keyprovider: only keywrap is supported (UnWrapKey happens in the guest)"
            raise KeyProviderParamsError(msg)
        if not request.optsdata:
            msg = "coco-keyprovider: keywrap request without optsdata"
            raise KeyProviderParamsError(msg)
        untrusted_params = _params_bytes(request.parameters).decode("utf-8", errors="replace")
        packet = self.wrap_params(parse_wrap_params(untrusted_params), request.optsdata)
        return build_wrap_response(packet, number_array=True)
