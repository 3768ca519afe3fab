"""Encrypt and decrypt one image layer: descriptor rewrite plus the streaming cipher (ocicrypt.md §2, §3, §6).

Invariants:
    * Encryption rewrites the descriptor as containers/image does: ``+encrypted`` media type, digest and size
      of the ciphertext, existing annotations kept, ``pubopts`` and ``keys.*`` added.
    * Decryption restores the plain media type, the plaintext digest and size, and strips every
      ``org.opencontainers.image.enc.*`` annotation. It returns only after the ciphertext digest, size and
      HMAC have verified; the destination stream is unauthenticated until then (callers stage it).
    * Unwrapping tries every comma entry of every scheme with every key the caller gave; the private options
      must carry a 32-byte key and a 16-byte nonce. A key annotation or value over the size limit is refused.
    * SECURITY: the work is bounded: a layer with more than ``Limits.max_wrapped_keys_per_layer`` entries
      (all ``keys.*`` annotations together) is refused before any key is tried, and every entry tried is
      taken from an :class:`UnwrapBudget` of ``Limits.max_wrapped_key_attempts_per_image`` shared by all
      layers of one pull or copy. Error messages list a few failures and count the rest.
    * The private options' ``digest`` is never trusted: integrity comes from the manifest digest of the blob,
      the HMAC and, after decompression, the config's ``diff_ids``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final

from cocoguest.crypto import layer_cipher
from cocoguest.errors import KeyUnwrapError, MissingKeyError, ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor
from cocoguest.ocicrypt import annotations as enc
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper
from cocoguest.ocicrypt.options import PrivateOptions, PublicOptions
from cocoguest.ocicrypt.stream import decrypt_stream, encrypt_stream

Progress = Callable[[int], None]

_FAILURES_LISTED: Final = 3
"""Unwrap failures quoted in a "none of the keys" message; the others are counted."""


class UnwrapBudget:
    """Wrapped-key entries that may still be tried for one image; shared by all its layers (thread-safe).

    One attempt is one entry handed to one unwrapper (which tries each of its keys on it).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        """A full budget of ``limits.max_wrapped_key_attempts_per_image`` attempts."""
        self._total = limits.max_wrapped_key_attempts_per_image
        self._left = self._total
        self._lock = threading.Lock()

    def take(self, what: str) -> None:
        """Use one attempt for ``what`` (a layer).

        Raises:
            ProtocolError: the image has used up its budget.
        """
        with self._lock:
            if self._left <= 0:
                msg = (
                    f"{what}: the image's layers hold more wrapped keys than the {self._total} "
                    "tried per image (max_wrapped_key_attempts_per_image)"
                )
                raise ProtocolError(msg)
            self._left -= 1


@dataclass(frozen=True, slots=True)
class UnwrappedKey:
    """The private options of one layer, as unwrapped (raw bytes kept for re-wrapping) and parsed."""

    raw: bytes
    options: PrivateOptions
    scheme: str


def describe(desc: Descriptor) -> str:
    """How error messages name a layer."""
    return f"layer {desc.digest}"


def _check_annotation_sizes(desc: Descriptor, limits: Limits) -> None:
    for key, value in desc.annotations.items():
        if key.startswith(enc.ENC_PREFIX) and len(value) > limits.max_annotation_bytes:
            limit = limits.max_annotation_bytes
            msg = f"{describe(desc)}: annotation {key} is {len(value)} bytes, over the {limit}-byte limit"
            raise ProtocolError(msg)


def public_options(desc: Descriptor) -> PublicOptions:
    """Parse the ``pubopts`` annotation of an encrypted layer.

    Raises:
        ProtocolError: absent or malformed (Go: "no cipher type provided").
        UnsupportedError: an unknown cipher.
    """
    what = f"{describe(desc)}: {enc.PUBOPTS}"
    raw = desc.annotations.get(enc.PUBOPTS)
    if raw is None:
        msg = f"{what}: missing, no cipher type provided"
        raise ProtocolError(msg)
    return PublicOptions.from_json(enc.b64decode(raw, what), what)


def unwrap_layer_key(
    desc: Descriptor,
    unwrappers: Sequence[KeyUnwrapper],
    *,
    limits: Limits = DEFAULT_LIMITS,
    budget: UnwrapBudget | None = None,
) -> UnwrappedKey:
    """Recover a layer's private options with the given keys (also the "check authorization" operation).

    ``budget`` is the image's shared :class:`UnwrapBudget`; without one the layer gets a fresh budget.

    Raises:
        MissingKeyError: no key of any scheme present on the layer was given.
        KeyUnwrapError: keys were given but none unwraps any entry.
        ProtocolError: the layer has no key annotations, the unwrapped options are malformed, or the layer
            has more entries than ``Limits.max_wrapped_keys_per_layer`` or the budget is used up.
    """
    what = describe(desc)
    _check_annotation_sizes(desc, limits)
    entries = enc.wrapped_key_entries(desc.annotations)
    if not entries:
        msg = f"{what}: encrypted, but carries no {enc.KEYS_PREFIX}* annotation"
        raise ProtocolError(msg)
    _check_entry_count(entries, what, limits)
    if budget is None:
        budget = UnwrapBudget(limits)
    pub = public_options(desc) if enc.PUBOPTS in desc.annotations else None
    failures: list[KeyUnwrapError] = []
    tried_schemes: list[str] = []
    for annotation_key, encoded_entries in sorted(entries.items()):
        for unwrapper in unwrappers:
            if not unwrapper.handles(annotation_key):
                continue
            tried_schemes.append(unwrapper.scheme)
            for index, encoded in enumerate(encoded_entries):
                raw_entry = enc.b64decode(encoded, f"{what}: {annotation_key} entry {index}")
                budget.take(what)
                try:
                    raw = unwrapper.unwrap(annotation_key, raw_entry)
                except KeyUnwrapError as e:
                    failures.append(e)
                    continue
                options = PrivateOptions.from_json(raw, f"{what}: private options from {unwrapper.scheme}", pub)
                return UnwrappedKey(raw, options, unwrapper.scheme)
    present = ", ".join(key.removeprefix(enc.KEYS_PREFIX) for key in sorted(entries))
    if not tried_schemes:
        msg = f"{what}: missing private key needed for decryption (layer is encrypted for: {present})"
        raise MissingKeyError(msg)
    reasons = _summarize([str(f) for f in failures]) or "no entry could be tried"
    msg = f"{what}: none of the given keys can unwrap the layer key ({reasons})"
    raise KeyUnwrapError(msg) from (failures[-1] if failures else None)


def _check_entry_count(entries: Mapping[str, Sequence[str]], what: str, limits: Limits) -> None:
    count = sum(len(values) for values in entries.values())
    # SECURITY: every entry costs private-key operations (67 s of RSA for 1,529 JWE entries); refuse the
    # layer before trying any.
    if count > limits.max_wrapped_keys_per_layer:
        schemes = [f"{key.removeprefix(enc.KEYS_PREFIX)}: {len(v)}" for key, v in sorted(entries.items())]
        msg = (
            f"{what}: {count} wrapped-key entries ({_summarize(schemes)}), more than the "
            f"{limits.max_wrapped_keys_per_layer} accepted per layer (max_wrapped_keys_per_layer)"
        )
        raise ProtocolError(msg)


def _summarize(items: Sequence[str]) -> str:
    """The first few ``items`` joined by "; ", then how many more there are."""
    shown = "; ".join(item[:200] for item in items[:_FAILURES_LISTED])
    rest = len(items) - _FAILURES_LISTED
    return f"{shown}; and {rest} more" if rest > 0 else shown


def _wrap_all(raw_options: bytes, wrappers: Sequence[KeyWrapper]) -> dict[str, str]:
    """One new base64 entry per wrapper, keyed by annotation."""
    out: dict[str, str] = {}
    for wrapper in wrappers:
        entry = enc.b64encode(wrapper.wrap(raw_options))
        key = wrapper.annotation_key
        out[key] = f"{out[key]},{entry}" if key in out else entry
    return out


def _merge_entries(existing: Mapping[str, str], new_entries: Mapping[str, str]) -> dict[str, str]:
    merged = dict(existing)
    for key, value in new_entries.items():
        merged[key] = f"{merged[key]},{value}" if merged.get(key) else value
    return merged


def encrypt_layer(
    src: BinaryIO,
    dst: BinaryIO,
    desc: Descriptor,
    wrappers: Sequence[KeyWrapper],
    *,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> Descriptor:
    """Encrypt a plain layer blob from ``src`` into ``dst``; return the encrypted descriptor.

    ``src`` is verified against ``desc`` (digest and size) while it streams.

    Raises:
        ValueError: ``wrappers`` is empty or the layer is already encrypted (use :func:`add_recipients`).
        VerificationError: the source blob does not match its descriptor.
        ConfigError, TransportError, ProtocolError: a key wrapper failed.
    """
    if not wrappers:
        msg = "encrypt_layer needs at least one key wrapper"
        raise ValueError(msg)
    new_type = media_types.encrypted_type(desc.media_type)
    options = PrivateOptions.generate(str(desc.digest))
    raw_options = options.to_json()
    # Wrap first: a failing recipient must fail before any ciphertext is produced.
    key_annotations = _wrap_all(raw_options, wrappers)
    result = encrypt_stream(
        src,
        dst,
        options.symkey,
        options.nonce,
        source_digest=desc.digest,
        source_size=desc.size,
        what=describe(desc),
        limits=limits,
        progress=progress,
    )
    pub = PublicOptions(layer_cipher.CIPHER_NAME, result.hmac, {})
    annotations = _merge_entries(desc.annotations, key_annotations)
    annotations[enc.PUBOPTS] = enc.b64encode(pub.to_json())
    return desc.with_changes(
        media_type=new_type, digest=result.ciphertext_digest, size=result.size, annotations=annotations
    )


def add_recipients(
    desc: Descriptor,
    wrappers: Sequence[KeyWrapper],
    unwrappers: Sequence[KeyUnwrapper],
    *,
    limits: Limits = DEFAULT_LIMITS,
    budget: UnwrapBudget | None = None,
) -> Descriptor:
    """Give more recipients access to an already encrypted layer; the blob is unchanged (skopeo cannot).

    The existing private options are unwrapped with ``unwrappers`` and wrapped again for ``wrappers``; new
    entries are appended to the comma lists, as ocicrypt's ``EncryptLayer`` does on an encrypted descriptor.

    Raises:
        MissingKeyError, KeyUnwrapError: the existing layer key cannot be unwrapped.
    """
    unwrapped = unwrap_layer_key(desc, unwrappers, limits=limits, budget=budget)
    annotations = _merge_entries(desc.annotations, _wrap_all(unwrapped.raw, wrappers))
    return desc.with_changes(annotations=annotations)


def decrypt_layer(
    src: BinaryIO,
    dst: BinaryIO,
    desc: Descriptor,
    unwrappers: Sequence[KeyUnwrapper],
    *,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    budget: UnwrapBudget | None = None,
) -> Descriptor:
    """Decrypt an encrypted layer blob from ``src`` into ``dst``; return the plain descriptor.

    SECURITY: ``dst`` holds unauthenticated plaintext until this function returns; on any exception the
    caller must discard it.

    Raises:
        MissingKeyError, KeyUnwrapError: no usable key.
        ProtocolError, UnsupportedError: malformed or unknown options.
        VerificationError: digest, size or HMAC mismatch.
    """
    plain_type = media_types.decrypted_type(desc.media_type)
    pub = public_options(desc)
    unwrapped = unwrap_layer_key(desc, unwrappers, limits=limits, budget=budget)
    result = decrypt_stream(
        src,
        dst,
        unwrapped.options.symkey,
        unwrapped.options.nonce,
        pub.hmac,
        source_digest=desc.digest,
        source_size=desc.size,
        what=describe(desc),
        limits=limits,
        progress=progress,
    )
    return desc.with_changes(
        media_type=plain_type,
        digest=result.plaintext_digest,
        size=result.size,
        annotations=enc.strip_encryption_annotations(desc.annotations),
    )


def check_authorization(
    layers: Sequence[Descriptor], unwrappers: Sequence[KeyUnwrapper], *, limits: Limits = DEFAULT_LIMITS
) -> int:
    """Check, without reading any layer data, that ``unwrappers`` can unwrap EVERY encrypted layer's key.

    containerd/imgcrypt's ``CheckAuthorization`` returns after the first encrypted layer; we check all.
    Returns the number of encrypted layers checked.

    Raises:
        MissingKeyError, KeyUnwrapError, ProtocolError: for the first layer that cannot be unwrapped.
    """
    checked = 0
    budget = UnwrapBudget(limits)
    for desc in layers:
        if media_types.is_encrypted(desc.media_type):
            unwrap_layer_key(desc, unwrappers, limits=limits, budget=budget)
            checked += 1
    return checked
