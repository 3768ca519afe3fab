"""The error tree of cocoguest.

Invariants:
    * Every error raised by cocoguest derives from :class:`CocoError`; children are grouped by who is at
      fault (configuration, peer, data/policy).
    * ``str(error)`` is one line that names the image, layer, file, URI or field at fault.
    * :class:`VerificationError` and its children are SECURITY decisions: they are never retried.
    * Causes are chained with ``raise ... from e``, never flattened into the message.
"""

from __future__ import annotations


class CocoError(Exception):
    """Root of all cocoguest errors. Not raised directly."""

    def diagnostics(self) -> str:
        """Return the message followed by the chain of causes, one per line."""
        lines = [str(self)]
        cause = self.__cause__
        while cause is not None:
            lines.append(f"  caused by: {type(cause).__name__}: {cause}")
            cause = cause.__cause__
        return "\n".join(lines)


class ConfigError(CocoError):
    """Invalid or missing configuration, key file or command-line argument."""


class UnsupportedError(CocoError):
    """A feature, media type, algorithm or plugin is not available."""


class TransportError(CocoError):
    """A network, socket, subprocess or file IO failure."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class HttpStatusError(TransportError):
    """A registry, token server or KBS answered with an unexpected HTTP status."""

    def __init__(
        self, message: str, status: int, *, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.retry_after_s = retry_after_s
        """The server's ``Retry-After``, in seconds, if it sent one."""


class ProtocolError(CocoError):
    """A peer (registry, key provider, KBS, ttrpc) sent malformed or unexpected data."""


class ResourceNotFoundError(CocoError):
    """A named image, blob, key or resource does not exist."""


class VerificationError(CocoError):
    """A SECURITY decision: the data or the policy said no. Never retried."""


class DigestMismatchError(VerificationError):
    """Content does not hash to the digest that names it."""


class SizeMismatchError(VerificationError):
    """Content is longer or shorter than its descriptor says."""


class DecryptionIntegrityError(VerificationError):
    """An HMAC or AEAD tag failed: the ciphertext or its metadata was changed."""


class KeyUnwrapError(VerificationError):
    """None of the given private keys can unwrap a layer key (wrong key, or tampered key annotation)."""


class MissingKeyError(KeyUnwrapError):
    """No private key of any scheme present on the layer was given."""


class EncryptionRequiredError(VerificationError):
    """A layer that must be encrypted is not."""


class UnsafeArchiveError(VerificationError):
    """An archive entry tried to escape or corrupt the unpack root."""


class PolicyRejectedError(VerificationError):
    """The signature policy rejected the image; the message says which requirement failed and why."""


class SignatureError(VerificationError):
    """A signature is malformed, made by an untrusted key, or does not cover what it claims."""


class AttestationError(CocoError):
    """Evidence or a report could not be produced (the attester failed or returned unusable evidence)."""


class KbsProtocolError(ProtocolError):
    """A Key Broker Service sent a malformed or unexpected answer; ``step`` names the RCAR step or request."""

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step
        """``auth``, ``attest`` or ``resource``."""


class KbsStatusError(KbsProtocolError):
    """A KBS answered with an unexpected HTTP status; carries the KBS's ``{type, detail}`` when it sent one."""

    def __init__(self, message: str, *, step: str, status: int, error_type: str | None, detail: str | None) -> None:
        super().__init__(message, step=step)
        self.status = status
        self.error_type = error_type
        """The last path segment of the KBS's error ``type`` URI (e.g. ``PolicyDeny``), if any."""
        self.detail = detail


class KbsDeniedError(VerificationError):
    """A SECURITY decision of the KBS: attestation failed, or the resource policy refused the release."""

    def __init__(self, message: str, *, step: str, status: int, error_type: str | None, detail: str | None) -> None:
        super().__init__(message)
        self.step = step
        self.status = status
        self.error_type = error_type
        self.detail = detail


class FramingError(ProtocolError):
    """A ttrpc peer sent bytes that are not a valid frame stream (specs/ttrpc.md §2); the connection is unusable."""


class FrameTooLargeError(FramingError):
    """A ttrpc frame header announced more payload than the 4 MiB cap; rejected before the body is read."""

    def __init__(self, message: str, *, stream_id: int, length: int) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.length = length


class TruncatedFrameError(FramingError):
    """A ttrpc byte stream ended inside a frame."""


class RpcStatusError(CocoError):
    """A ttrpc call ended with a non-OK status (google.rpc.Code ``code`` and the peer's ``status_message``).

    Raised by the ttrpc client for the peer's answer (and for its own deadline, as DEADLINE_EXCEEDED), and by
    ttrpc handlers to choose the status the server sends.
    """

    def __init__(self, code: int, status_message: str, *, where: str = "", code_name: str = "") -> None:
        status = f"{code_name} ({code})" if code_name else f"status {code}"
        super().__init__(f"{where}: {status}: {status_message}" if where else f"{status}: {status_message}")
        self.code = code
        self.status_message = status_message


class TeeNotFoundError(ConfigError):
    """No TEE was detected and the sample attester was not explicitly allowed; names every probe tried."""


class TeeDeviceError(TransportError):
    """Talking to a TEE device (configfs-tsm entry, ioctl device, sysfs register, vTPM) failed."""


class TeeReportError(ProtocolError):
    """A TEE device returned data of the wrong shape (report size, provider, certificate table)."""


class AttestationRequestError(CocoError):
    """A caller asked for something the TEE cannot express (report data too long, malformed event text)."""


class RuntimeMeasurementUnsupportedError(UnsupportedError):
    """The attester has no runtime-measurement register (e.g. sample), or the event log is not enabled."""


class EventLogError(CocoError):
    """The AA event log (AAEL) on disk is malformed beyond a torn last entry, or cannot be written."""


class InitDataError(ConfigError):
    """An init-data TOML document is malformed (shape, version, algorithm or data table)."""


class InitDataMismatchError(VerificationError):
    """The init-data digest does not match the value the TEE measured (MRCONFIGID, HOST_DATA)."""


class KbsApiError(CocoError):
    """The dev KBS refuses a request: ``variant`` is Trustee's error name (``PolicyDeny``, ``TokenNotFound``, ...),
    sent as ``{"type": ".../<variant>", "detail": str(error)}`` with ``status`` (401, or 404 for a path or plugin)."""

    def __init__(self, variant: str, detail: str, *, status: int = 401) -> None:
        super().__init__(detail)
        self.variant = variant
        self.status = status


class SealedSecretError(VerificationError):
    """A sealed secret is malformed, unsigned where a signature is required, or its signature does not verify."""


class SecureMountError(CocoError):
    """A secure mount (CDH SecureMount) could not be set up; names the device, option or command at fault."""


class SecureMountOptionError(SecureMountError, ConfigError):
    """A SecureMount request's volume type, options or flags are invalid; names the option."""


class HttpRequestError(ProtocolError):
    """An HTTP client sent a request api-server-rest will not read; ``status`` is the answer (400, 413, 431, 501)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class KeyProviderParamsError(ConfigError):
    """coco-keyprovider parameters (``keyid=...::keypath=...::algorithm=...::sample=...``) are malformed."""


class QuoteServiceError(TeeDeviceError):
    """A TEE quote service (Intel's TDX QGS, the host behind TDVMCALL GetQuote) answered with an error; ``code``
    is its numeric error or status code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class TeeFirmwareError(TeeDeviceError):
    """A TEE device call reached the firmware (Hygon PSP, IBM Ultravisor), which refused it; the message names
    the device and the firmware's codes: ``fw_error_code`` for CSV, ``rc``/``rrc`` for the Ultravisor."""

    def __init__(self, message: str, *, code: int, reason: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class HclReportBindingError(VerificationError):
    """The Azure vTPM's HCL report was not made for the report data just written (stale or torn); never sent."""


class ImdsError(TransportError):
    """The Azure Instance Metadata Service call (VCEK, TD quote) failed, timed out or answered unusably."""
