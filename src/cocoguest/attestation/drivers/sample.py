"""The ``sample`` and ``sampledevice`` attesters (kbs-protocol.md §9.1, guest-components.md §6.3).

Evidence, byte-exact with upstream (compact JSON, this member order)::

    sample:        {"svn":"1","report_data":"<base64 standard, padded, of the raw report data>"}
    sampledevice:  {"svn":"2","report_data":"<...>"}

Invariants:
    * The report data is neither hashed, padded nor truncated.
    * SECURITY: sample evidence proves nothing. Every evidence call logs a WARNING, so a deployment that ended up
      on the sample attester can never look like a real TEE in the logs. No runtime measurement; init-data
      binding is unsupported.
"""

from __future__ import annotations

import base64
import logging

from cocoguest.attestation.attester import BindResult, JsonObject, Tee

_logger = logging.getLogger(__name__)


class SampleAttester:
    """The ``sample`` TEE: no hardware, no security (development and tests only)."""

    _svn = "1"

    @property
    def tee(self) -> Tee:
        """``sample``."""
        return Tee.SAMPLE

    def evidence(self, report_data: bytes) -> JsonObject:
        """``{"svn": ..., "report_data": b64(report_data)}``; logs a WARNING (see the module docstring)."""
        # SECURITY: warn on every use; sample evidence is accepted only by a KBS that trusts anyone.
        _logger.warning("%s attester in use: this evidence is NOT backed by a TEE", self.tee)
        return {"svn": self._svn, "report_data": base64.b64encode(report_data).decode("ascii")}

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Always :attr:`BindResult.UNSUPPORTED`."""
        return BindResult.UNSUPPORTED


class SampleDeviceAttester(SampleAttester):
    """The ``sampledevice`` additional device (upstream: enabled by ``ENABLE_SAMPLE_DEVICE``)."""

    _svn = "2"

    @property
    def tee(self) -> Tee:
        """``sampledevice``."""
        return Tee.SAMPLE_DEVICE
