"""The attestation agent (AA) core, usable in-process: the API behind the AA's ttrpc and gRPC services.

Semantics follow guest-components.md §4.1:
    * ``get_evidence(runtime_data)``: the runtime data goes unchanged to the primary attester as report data (the
      attester zero-pads it to its field and refuses data that does not fit); the answer is the compact JSON of
      the evidence.
    * ``get_additional_evidence(runtime_data)``: ``{"<tee>": evidence, ...}`` over the additional devices, or
      empty bytes when there is none.
    * ``get_token("kbs")``: ``{"token": JWT, "tee_keypair": PEM}`` from an RCAR handshake with
      ``[token_configs.kbs]`` (the init-data TOML is sent when the AA was started with one). Beyond upstream,
      the token is cached (:mod:`cocoguest.kbs.token_cache`): one attestation per token lifetime, and the TEE
      key pair is the one that token was issued for. ``get_token("coco_as")`` posts the evidence for empty
      runtime data to ``[token_configs.coco_as]`` and returns the attestation service's answer verbatim.
    * ``extend_runtime_measurement``: ``NOT_ENABLED`` unless ``eventlog_config.enable_eventlog``;
      ``NOT_SUPPORTED`` when the attester has no runtime register; else the event is logged (AAEL, crash-safe,
      :mod:`cocoguest.attestation.eventlog`) and the register extended: ``OK``.
    * ``bind_init_data(digest)``: through the attester (TDX MRCONFIGID, SNP HOST_DATA, vTPM PCR 8).

Invariants:
    * SECURITY: the agent never chooses the sample attester by itself: :func:`start_agent` calls
      ``select_attester``, which refuses when no TEE is found unless ``allow_sample_attester`` was set.
    * SECURITY: start-up fails (nothing is served) when init-data does not bind: a guest whose measured
      init-data differs from the given one must not attest.
    * Methods are blocking (device IO, HTTP) and thread-safe: services call them from worker threads. Token
      fetches are serialised by the token cache; event-log extends by the event log's lock.
    * No IO at construction of :class:`AttestationAgent`; :func:`start_agent` does the start-up IO.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from cocoguest.attestation.attester import (
    Attester,
    BindResult,
    RuntimeMeasurer,
    additional_evidence,
    encode_evidence,
)
from cocoguest.attestation.ccel import DEFAULT_AAEL_PATH
from cocoguest.attestation.coco_as import request_token
from cocoguest.attestation.config import MAX_PCR, AaConfig
from cocoguest.attestation.detect import Probes
from cocoguest.attestation.eventlog import DEFAULT_WAL_PATH, AaelEvent, EventLog
from cocoguest.attestation.factory import DeviceBackends, select_additional_devices, select_attester
from cocoguest.attestation.initdata import InitData, bind_init_data, decode_digest, parse_initdata
from cocoguest.errors import AttestationRequestError, ConfigError
from cocoguest.kbs.client import KbsClient, credentials_to_aa_json
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

TOKEN_TYPE_KBS = "kbs"  # noqa: S105  (a token type name, not a secret)
TOKEN_TYPE_COCO_AS = "coco_as"  # noqa: S105  (a token type name, not a secret)
_DEFAULT_CONFIG = AaConfig()
_NO_BACKENDS = DeviceBackends()


class RuntimeMeasurementResult(enum.IntEnum):
    """The answer of ExtendRuntimeMeasurement (values as the proto enum ``RuntimeMeasurementResult``)."""

    OK = 0
    NOT_SUPPORTED = 1
    NOT_ENABLED = 2


class AttesterEvidence:
    """An :class:`Attester` seen as the KBS client's ``EvidenceSource`` (TEE name, evidence JSON bytes)."""

    def __init__(self, attester: Attester) -> None:
        """Wrap ``attester``."""
        self._attester = attester

    @property
    def tee(self) -> str:
        """The attester's TEE name."""
        return str(self._attester.tee)

    def get_evidence(self, report_data: bytes) -> bytes:
        """The compact JSON evidence for ``report_data`` (the RCAR report data)."""
        return encode_evidence(self._attester.evidence(report_data))


@dataclass(frozen=True, slots=True)
class InitDataInput:
    """The init-data given at start-up: a TOML document (wins, as upstream) or a digest (base64 standard)."""

    toml: bytes | None = None
    digest_b64: str | None = None


class AttestationAgent:
    """The AA API (see the module docstring); build it with :func:`start_agent` or directly in tests."""

    def __init__(
        self,
        attester: Attester,
        *,
        additional: Sequence[Attester] = (),
        config: AaConfig = _DEFAULT_CONFIG,
        event_log: EventLog | None = None,
        init_data: InitData | None = None,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
        kbs_transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Assemble an agent from parts (no IO).

        Args:
            attester: the primary attester.
            additional: attesters of additional devices.
            config: the AA configuration.
            event_log: an opened event log (required for ExtendRuntimeMeasurement to return OK).
            init_data: the init-data document sent to the KBS with ``/attest``, if started with one.
            limits: caps and timeouts.
            clock: seconds since the epoch, for token expiry (tests pass a fake clock).
            kbs_transport: httpx transport of the CoCo-AS token request (tests); the KBS client has its own.
        """
        self._attester = attester
        self._additional = tuple(additional)
        self._config = config
        self._event_log = event_log
        self._init_data = init_data
        self._limits = limits
        self._clock = clock
        self._kbs_transport = kbs_transport
        self._kbs_lock = threading.Lock()
        self._kbs: KbsClient | None = None

    @property
    def config(self) -> AaConfig:
        """The configuration this agent runs with."""
        return self._config

    @property
    def kbs_attestations(self) -> int:
        """RCAR handshakes started by ``get_token("kbs")`` so far (0 before the first call)."""
        return self._kbs.fetches if self._kbs is not None else 0

    def get_evidence(self, runtime_data: bytes) -> bytes:
        """GetEvidence: the primary attester's evidence for ``runtime_data``, as compact JSON bytes.

        Raises:
            AttestationRequestError: ``runtime_data`` does not fit the TEE's report-data field.
            TeeDeviceError, TeeReportError: the device failed or answered malformed data.
        """
        return encode_evidence(self._attester.evidence(runtime_data))

    def get_additional_evidence(self, runtime_data: bytes) -> bytes:
        """GetAdditionalEvidence: ``{"<tee>": evidence, ...}`` bytes, or ``b""`` without additional devices.

        Raises:
            Same as :meth:`get_evidence`.
        """
        return additional_evidence(self._additional, runtime_data)

    def get_token(self, token_type: str) -> bytes:
        """GetToken: ``kbs`` answers ``{"token","tee_keypair"}`` JSON bytes (see the module docstring).

        Raises:
            ConfigError: no ``[token_configs.kbs]``, or an unknown token type.
            AttestationError: the attestation service refused (``coco_as``).
            KbsDeniedError, KbsProtocolError, TransportError, AttestationError: the attestation failed.
        """
        if token_type == TOKEN_TYPE_KBS:
            return credentials_to_aa_json(self._kbs_client().get_token())
        if token_type == TOKEN_TYPE_COCO_AS:
            coco_as = self._config.coco_as
            if coco_as is None:
                msg = f"GetToken(coco_as): no [token_configs.coco_as] in the AA configuration ({self._config.source})"
                raise ConfigError(msg)
            evidence = encode_evidence(self._attester.evidence(b""))  # upstream: EMPTY runtime data
            return request_token(
                coco_as.url, str(self._attester.tee), evidence, limits=self._limits, transport=self._kbs_transport
            )
        msg = f"GetToken: unknown token type {token_type[:64]!r} (known: {TOKEN_TYPE_KBS}, {TOKEN_TYPE_COCO_AS})"
        raise ConfigError(msg)

    def _kbs_client(self) -> KbsClient:
        with self._kbs_lock:
            if self._kbs is None:
                kbs = self._config.kbs
                if kbs is None:
                    msg = f"GetToken(kbs): no [token_configs.kbs] in the AA configuration ({self._config.source})"
                    raise ConfigError(msg)
                self._kbs = KbsClient(
                    kbs.url,
                    AttesterEvidence(self._attester),
                    tee_key_algorithm=kbs.tee_key_algorithm,
                    ca_cert_pem=kbs.cert_pem,
                    init_data_toml=self._init_data.text() if self._init_data is not None else None,
                    limits=self._limits,
                    clock=self._clock,
                )
            return self._kbs

    def extend_runtime_measurement(
        self, domain: str, operation: str, content: str, register_index: int | None = None
    ) -> RuntimeMeasurementResult:
        """ExtendRuntimeMeasurement (see the module docstring); ``register_index`` defaults to ``init_pcr``.

        Raises:
            AttestationRequestError: a malformed event, or a register index that is not a PCR number.
            TeeDeviceError: the register could not be extended.
            EventLogError: the log could not be written.
        """
        if not self._config.eventlog.enable_eventlog:
            return RuntimeMeasurementResult.NOT_ENABLED
        if self._event_log is None:
            return RuntimeMeasurementResult.NOT_SUPPORTED
        if register_index is not None and not 0 <= register_index <= MAX_PCR:
            msg = f"register index {register_index} is not a PCR number (0-{MAX_PCR})"
            raise AttestationRequestError(msg)
        self._event_log.extend(AaelEvent(domain, operation, content), register_index)
        return RuntimeMeasurementResult.OK

    def bind_init_data(self, digest: bytes) -> BindResult:
        """BindInitData: check (TDX, SNP) or extend (vTPM) ``digest``; ``UNSUPPORTED`` elsewhere.

        Raises:
            InitDataMismatchError: the TEE measured a different value.
            AttestationRequestError: ``digest`` cannot fit the TEE's field.
            TeeDeviceError: the device failed.
        """
        return bind_init_data(self._attester, digest)

    def get_tee_type(self) -> str:
        """GetTeeType: the primary TEE's wire name (``sample``, ``tdx``, ...)."""
        return str(self._attester.tee)

    def get_additional_tees(self) -> list[str]:
        """GetAdditionalTees: the wire names of the additional devices."""
        return [str(device.tee) for device in self._additional]

    def close(self) -> None:
        """Release the event log and the KBS connections."""
        if self._event_log is not None:
            self._event_log.close()
        with self._kbs_lock:
            if self._kbs is not None:
                self._kbs.close()
                self._kbs = None


def start_agent(
    config: AaConfig,
    *,
    allow_sample_attester: bool = False,
    init_data: InitDataInput = InitDataInput(),
    probes: Probes | None = None,
    backends: DeviceBackends = _NO_BACKENDS,
    aael_path: Path = DEFAULT_AAEL_PATH,
    wal_path: Path = DEFAULT_WAL_PATH,
    limits: Limits = DEFAULT_LIMITS,
    attester: Attester | None = None,
) -> AttestationAgent:
    """AA start-up: choose the attester, open the event log if enabled, bind init-data.

    Args:
        config: the AA configuration.
        allow_sample_attester: ``--allow-sample-attester`` (either this or ``config.allow_sample_attester``
            permits the sample attester when no TEE is found).
        init_data: ``--initdata-toml`` contents and/or ``--initdata-digest``.
        probes: where TEE detection looks (default: the real device paths).
        backends: device backends without built-in drivers.
        aael_path: the AA event log (upstream ``AAEL_PATH``).
        wal_path: its write-ahead record.
        limits: caps and timeouts.
        attester: use this primary attester instead of detecting one (tests with synthetic devices).

    Raises:
        TeeNotFoundError: no TEE and the sample attester is not allowed (names every probe).
        UnsupportedError: a detected TEE without a usable driver.
        InitDataError: malformed init-data TOML or digest.
        InitDataMismatchError: the TEE measured other init-data.
        EventLogError: the event log cannot be opened or recovered.
    """
    probes = probes if probes is not None else Probes()
    allow = allow_sample_attester or config.allow_sample_attester
    primary = (
        attester
        if attester is not None
        else select_attester(allow, probes, backends, aael_path=aael_path, limits=limits)
    )
    additional = select_additional_devices(probes)
    _logger.info("attestation agent: primary TEE %s, additional %s", primary.tee, [str(a.tee) for a in additional])
    event_log: EventLog | None = None
    if config.eventlog.enable_eventlog:
        if isinstance(primary, RuntimeMeasurer):
            event_log = EventLog(
                primary, path=aael_path, wal_path=wal_path, init_pcr=config.eventlog.init_pcr, limits=limits
            )
            event_log.open()
        else:
            _logger.warning("event log enabled, but %s has no runtime-measurement register", primary.tee)
    try:
        document: InitData | None = None
        digest: bytes | None = None
        if init_data.toml is not None:
            # --initdata-toml wins over --initdata-digest (as upstream).
            document = parse_initdata(init_data.toml, limits=limits)
            digest = document.digest
        elif init_data.digest_b64 is not None:
            digest = decode_digest(init_data.digest_b64)
        if digest is not None:
            # SECURITY: a mismatch raises here and the agent never starts serving.
            result = bind_init_data(primary, digest)
            _logger.info("init-data digest %s: %s", digest.hex(), result.value)
    except BaseException:
        if event_log is not None:
            event_log.close()
        raise
    return AttestationAgent(
        primary,
        additional=additional,
        config=config,
        event_log=event_log,
        init_data=document,
        limits=limits,
    )
