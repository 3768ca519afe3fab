"""The key provider key wrapper: ``org.opencontainers.image.enc.keys.provider.<name>`` (ocicrypt.md §5.5).

The provider does the cryptography; this module only builds the protocol request, hands it to an injected
:class:`~cocoguest.ocicrypt.keyprovider.protocol.KeyProviderTransport` (``cmd`` or gRPC) and parses the
answer.

Invariants:
    * The provider's own parameter is ``Parameters[<name>] = [<params>]``, or ``[b"Enabled"]`` on wrap when
      no params were given (as Go). On unwrap, ``Parameters`` is empty when no params were given.
    * SECURITY: Go sends the whole EncryptConfig/DecryptConfig, i.e. also the public and *private* keys and
      passwords of other schemes, to every provider. We send only the provider's own entry: a provider has
      no business seeing other schemes' key material.
    * ``wrap`` returns the raw annotation bytes (the caller base64s them into the manifest, so the manifest
      entry equals the base64 string a Go-form provider returned). ``unwrap`` receives those raw bytes and
      sends them base64'd as ``annotation``, which is what Go sends.
    * A provider that runs but fails to unwrap raises :class:`~cocoguest.errors.KeyUnwrapError` (the next key
      is tried); unreachable providers raise :class:`~cocoguest.errors.TransportError` and malformed answers
      :class:`~cocoguest.errors.ProtocolError`.
"""

from __future__ import annotations

from typing import Final

from cocoguest.errors import KeyUnwrapError
from cocoguest.ocicrypt.annotations import keys_annotation
from cocoguest.ocicrypt.keyprovider import protocol
from cocoguest.ocicrypt.keyprovider.protocol import KeyProviderTransport, ProviderFailedError

SCHEME_PREFIX: Final = "provider."
DEFAULT_WRAP_PARAMS: Final = b"Enabled"
"""Go's value for ``provider:<name>`` without params."""


class KeyProviderWrapper:
    """Wraps private options by asking provider ``name``."""

    def __init__(self, name: str, params: bytes | None, transport: KeyProviderTransport) -> None:
        """Create a wrapper for ``provider:<name>[:<params>]``.

        Args:
            name: the configured provider name.
            params: the opaque ``<params>`` of the key spec, if any.
            transport: how to reach the provider.
        """
        self._name = name
        self._params = params
        self._transport = transport

    @property
    def annotation_key(self) -> str:
        """``org.opencontainers.image.enc.keys.provider.<name>``."""
        return keys_annotation(SCHEME_PREFIX + self._name)

    def wrap(self, private_options: bytes) -> bytes:
        """Ask the provider to wrap ``private_options``; return its annotation bytes.

        Raises:
            ConfigError: the provider program cannot be executed.
            TransportError: the provider is unreachable or failed.
            ProtocolError: the answer is malformed or has no annotation.
        """
        # SECURITY: only this provider's own parameter, never other schemes' keys (see module docstring).
        parameters = {self._name: [self._params or DEFAULT_WRAP_PARAMS]}
        answer = self._transport.call("wrap", protocol.build_wrap_request(parameters, private_options))
        return protocol.parse_wrap_response(answer, self._name)


class KeyProviderUnwrapper:
    """Unwraps ``keys.provider.<name>`` entries by asking provider ``name``."""

    def __init__(self, name: str, params: bytes | None, transport: KeyProviderTransport) -> None:
        """Create an unwrapper for provider ``name``.

        Args:
            name: the configured provider name.
            params: the ``<params>`` of a ``provider:<name>:<params>`` decryption key, if one was given.
            transport: how to reach the provider.
        """
        self._name = name
        self._params = params
        self._transport = transport
        self._annotation_key = keys_annotation(SCHEME_PREFIX + name)

    @property
    def scheme(self) -> str:
        """``provider.<name>``."""
        return SCHEME_PREFIX + self._name

    def handles(self, annotation_key: str) -> bool:
        """True only for ``org.opencontainers.image.enc.keys.provider.<name>``."""
        return annotation_key == self._annotation_key

    def unwrap(self, annotation_key: str, entry: bytes) -> bytes:
        """Ask the provider to unwrap one entry; return the private options.

        Raises:
            ValueError: ``annotation_key`` is not this provider's (a programming error).
            KeyUnwrapError: the provider ran but could not unwrap the entry.
            ConfigError: the provider program cannot be executed.
            TransportError: the provider is unreachable or timed out.
            ProtocolError: the answer is malformed or has no private options.
        """
        if not self.handles(annotation_key):
            msg = f"key provider {self._name!r} cannot unwrap {annotation_key}"
            raise ValueError(msg)
        # SECURITY: only this provider's own parameter, never other schemes' keys (see module docstring).
        parameters = {self._name: [self._params]} if self._params else {}
        request = protocol.build_unwrap_request(parameters, entry)
        try:
            answer = self._transport.call("unwrap", request)
        except ProviderFailedError as e:
            msg = f"key provider {self._name!r} could not unwrap the key in {annotation_key}"
            raise KeyUnwrapError(msg) from e
        return protocol.parse_unwrap_response(answer, self._name)
