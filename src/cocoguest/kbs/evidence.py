"""What the KBS client needs from an attester: a TEE name and evidence for report data.

The attestation package's ``Attester`` satisfies this structurally; the KBS client depends only on this
Protocol, so ``kbs`` never imports ``attestation`` (and tests use a tiny test-only source).

Invariants:
    * ``get_evidence`` must bind ``report_data`` (48 bytes of SHA-384 for every TEE but ``se``) into the
      evidence exactly as the TEE's verifier expects; for ``sample`` that is
      ``{"svn":"1","report_data":"<base64 std>"}`` (kbs-protocol.md §9.1). For ``se`` ``report_data`` is the
      JSON ``SeAttestationRequest`` with the SHA-512 ``runtime_data_digest`` injected, which the SE attester
      binds as Ultravisor user data (:func:`cocoguest.kbs.protocol.se_attester_input`).
"""

from __future__ import annotations

from typing import Protocol


class EvidenceSource(Protocol):
    """Produces TEE evidence for the RCAR handshake."""

    @property
    def tee(self) -> str:
        """The TEE name on the wire (``sample``, ``tdx``, ``snp``, ...)."""
        ...

    def get_evidence(self, report_data: bytes) -> bytes:
        """Evidence (JSON text, UTF-8) that binds ``report_data``.

        Raises:
            AttestationError: the TEE could not produce evidence.
        """
        ...
