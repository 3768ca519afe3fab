"""TDX without configfs-tsm: TDREPORT ioctl -> QGS (TCP fake) or GetQuote ioctl (emulated) -> TdxAttester evidence.

Only the peers are synthetic: the fake QGS (tests/fixtures/fake_qgs.py) and the emulated ``/dev/tdx_guest``
(tests/fixtures/emulated_ioctl.py). The recorded quote is Trustee's ``deps/verifier/test_data/tdx_quote_4.dat``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cocoguest.attestation.attester import Tee
from cocoguest.attestation.configfs_tsm import ConfigfsTsm
from cocoguest.attestation.detect import Probes
from cocoguest.attestation.drivers.tdx import TdxAttester, TdxGuestDevice
from cocoguest.attestation.drivers.tdx_quote import (
    TDX_CMD_GET_QUOTE,
    QgsClient,
    QgsEndpoint,
    TdxAttestQuoteGenerator,
    TdxGetQuoteIoctl,
    read_qgs_port,
)
from cocoguest.attestation.drivers.tdx_structs import parse_td_quote, parse_td_report
from cocoguest.attestation.factory import build_attester
from cocoguest.errors import (
    AttestationRequestError,
    QuoteServiceError,
    TeeDeviceError,
    TeeReportError,
)
from cocoguest.limits import DEFAULT_LIMITS, Limits
from tests.fixtures.emulated_ioctl import GET_QUOTE_SERVICE_UNAVAILABLE, EmulatedTdxGuest
from tests.fixtures.fake_qgs import (
    QGS_MSG_ERROR_INVALID_PARAMETER,
    QGS_MSG_ERROR_UNEXPECTED,
    FakeQgs,
    QgsRequest,
    QgsServer,
    framed,
    get_quote_response,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "attester"
RECORDED_REPORT = (VECTORS / "tdx_report_1.bin").read_bytes()
RECORDED_QUOTE = (VECTORS / "trustee_tdx_quote_4.dat").read_bytes()


def td_report_for(report_data: bytes) -> bytes:
    """The recorded TDREPORT with ``report_data`` in its REPORTDATA field (what the TDX module would return)."""
    report = bytearray(RECORDED_REPORT)
    report[128:192] = report_data
    return bytes(report)


@pytest.fixture
def qgs() -> FakeQgs:
    return FakeQgs()


@pytest.fixture
def server(qgs: FakeQgs) -> Iterator[QgsServer]:
    srv = QgsServer(qgs)
    yield srv
    srv.close()


def _conf(tmp_path: Path, port: int) -> Path:
    conf = tmp_path / "tdx-attest.conf"
    conf.write_text(f"# libtdx_attest\nport = {port}\n")
    return conf


def _attester(tmp_path: Path, conf: Path, kernel: EmulatedTdxGuest, limits: Limits = DEFAULT_LIMITS) -> TdxAttester:
    generator = TdxAttestQuoteGenerator(
        device=kernel.path,
        conf_path=conf,
        endpoint_for_port=lambda port: QgsEndpoint.tcp("127.0.0.1", port),
        ioctl=kernel,
        limits=limits,
    )
    return TdxAttester(
        tsm=ConfigfsTsm(tmp_path / "no-tsm"),
        report_source=TdxGuestDevice(kernel.path, ioctl=kernel),
        quote_generator=generator,
        ccel_path=tmp_path / "CCEL",
        aael_path=tmp_path / "eventlog",
        measurements_dir=tmp_path / "measurements",
        limits=limits,
    )


def _device(tmp_path: Path) -> Path:
    device = tmp_path / "tdx_guest"
    device.write_bytes(b"")
    return device


# --- /etc/tdx-attest.conf, as libtdx_attest's get_vsock_port reads it ------------------------------------------


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("port=4050\n", 4050),
        ("  port \t=  4050  \n", 4050),
        ("port = 4050", 4050),  # no final newline
        ("# port = 1\n   #port=2\nport = 7\n", 7),
        ("foo = 1\nport=5\nport=6\n", 5),  # the first port line wins
        ("port = 4050 # comment\n", None),  # trailing text: the line is ignored
        ("port = 4050 # comment\nport = 9\n", 9),
        ("port = 12345678901\nport = 5\n", 5),  # 11 digits: %10[0-9] leaves a digit, the line is ignored
        ("port = 4294967295\n", 4294967295),
        ("port = 4294967296\nport = 5\n", None),  # above UINT_MAX: port 0 and stop, as upstream
        ("port = 0\nport = 5\n", None),
        ("port = -1\n", None),
        ("ports = 1\nxport = 2\n", None),
        ("", None),
    ],
)
def test_qgs_port_parsed_as_libtdx_attest(tmp_path: Path, text: str, port: int | None) -> None:
    conf = tmp_path / "tdx-attest.conf"
    conf.write_text(text)
    assert read_qgs_port(conf) == port


def test_qgs_port_absent_config_and_size_cap(tmp_path: Path) -> None:
    assert read_qgs_port(tmp_path / "absent") is None
    conf = tmp_path / "big.conf"
    conf.write_bytes(b"#" * 100 + b"\nport = 1\n")
    with pytest.raises(TeeReportError, match="TDX attest config"):
        read_qgs_port(conf, limits=Limits(max_aa_config_bytes=64))


def test_default_endpoint_is_host_vsock() -> None:
    endpoint = QgsEndpoint.vsock(4050)
    assert endpoint.address == (2, 4050)
    assert str(endpoint) == "vsock:2:4050"
    assert str(QgsEndpoint.unix(Path("/run/qgs.sock"))) == "unix:/run/qgs.sock"


# --- TDREPORT ioctl packing -----------------------------------------------------------------------------------


def test_report0_ioctl_packing_with_emulated_kernel(tmp_path: Path) -> None:
    kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)
    report = TdxGuestDevice(kernel.path, ioctl=kernel).td_report(b"nonce")
    assert kernel.report_data == [b"nonce" + bytes(59)]
    assert parse_td_report(report).report_data == b"nonce" + bytes(59)
    assert report[:128] == RECORDED_REPORT[:128]
    with pytest.raises(AttestationRequestError):
        TdxGuestDevice(kernel.path, ioctl=kernel).td_report(bytes(65))
    assert len(kernel.report_data) == 1


# --- end to end through the QGS -------------------------------------------------------------------------------


def test_evidence_through_qgs_binds_report_data(tmp_path: Path, qgs: FakeQgs, server: QgsServer) -> None:
    kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)
    attester = _attester(tmp_path, _conf(tmp_path, server.port), kernel)
    report_data = hashlib.sha384(b"nonce" + b"tee-pubkey").digest()
    padded = report_data + bytes(16)
    evidence = attester.evidence(report_data)
    assert kernel.report_data == [padded]
    [request] = qgs.requests
    assert (request.major, request.minor, request.id_list) == (1, 1, b"")
    assert request.report == td_report_for(padded)
    assert qgs.malformed == []
    quote = parse_td_quote(base64.b64decode(str(evidence["quote"])))
    assert quote.report_data == padded
    assert quote.mrtd == parse_td_report(RECORDED_REPORT).mrtd
    assert evidence["cc_eventlog"] is None


def test_recorded_quote_through_qgs(tmp_path: Path) -> None:
    recorded_report_data = parse_td_quote(RECORDED_QUOTE).report_data
    qgs = FakeQgs(lambda _request: get_quote_response(RECORDED_QUOTE))
    server = QgsServer(qgs)
    try:
        kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)
        attester = _attester(tmp_path, _conf(tmp_path, server.port), kernel)
        evidence = attester.evidence(recorded_report_data)
        assert base64.b64decode(str(evidence["quote"])) == RECORDED_QUOTE
        assert qgs.requests[0].report[128:192] == recorded_report_data
        # SECURITY: the same recorded quote for any other nonce is refused.
        with pytest.raises(TeeReportError, match="requested report data"):
            attester.evidence(b"another nonce")
    finally:
        server.close()


def test_selected_id_is_skipped(tmp_path: Path) -> None:
    def answer(request: QgsRequest) -> bytes:
        return get_quote_response(RECORDED_QUOTE, selected_id=b"\xe8\x6c\x04\x6e" + bytes(12))

    server = QgsServer(FakeQgs(answer))
    try:
        assert QgsClient(QgsEndpoint.tcp("127.0.0.1", server.port)).quote(RECORDED_REPORT) == RECORDED_QUOTE
    finally:
        server.close()


@pytest.mark.parametrize(
    ("code", "name"),
    [(QGS_MSG_ERROR_UNEXPECTED, "QGS_MSG_ERROR_UNEXPECTED"), (QGS_MSG_ERROR_INVALID_PARAMETER, "INVALID_PARAMETER")],
)
def test_qgs_error_code(tmp_path: Path, code: int, name: str) -> None:
    server = QgsServer(FakeQgs(lambda _r: get_quote_response(b"", error_code=code)))
    try:
        kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)
        with pytest.raises(QuoteServiceError, match=f"TDX QGS .*0x{code:x} .*{name}") as caught:
            _attester(tmp_path, _conf(tmp_path, server.port), kernel).evidence(b"n")
        assert caught.value.code == code
    finally:
        server.close()


def _bad_version(_r: QgsRequest) -> bytes:
    return get_quote_response(RECORDED_QUOTE, major=2)


MALFORMED: dict[str, tuple[Callable[[QgsRequest], bytes] | None, Callable[[bytes], bytes] | None, str]] = {
    "truncated": (None, lambda f: f[:-10], "truncated"),
    "oversized prefix": (None, lambda f: struct.pack(">I", 1 << 20) + f[4:], "announces a 1048576-byte"),
    "zero prefix": (None, lambda f: bytes(4) + f[4:], "announces a 0-byte"),
    "garbage": (None, lambda f: framed(b"\xde\xad\xbe\xef" * 64), "version"),
    "short message": (None, lambda f: framed(b"\x01\x00"), "shorter than a GET_QUOTE_RESP"),
    "version 2": (_bad_version, None, "version 2.1"),
    "request type": (lambda _r: get_quote_response(RECORDED_QUOTE, kind=0), None, "type 0"),
    "size field": (lambda _r: get_quote_response(RECORDED_QUOTE, size_delta=-1), None, "do not add up"),
    "error with quote": (
        lambda _r: get_quote_response(RECORDED_QUOTE, error_code=QGS_MSG_ERROR_UNEXPECTED),
        None,
        "invalid error code",
    ),
    "unknown error code": (lambda _r: get_quote_response(b"", error_code=0x13000), None, "invalid error code"),
    "empty quote": (lambda _r: get_quote_response(b""), None, "empty quote"),
    "trailing quote bytes": (None, lambda f: framed(f[4:] + b"x"), "do not add up"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_qgs_answers_refused(tmp_path: Path, case: str) -> None:
    answer, tamper, message = MALFORMED[case]
    server = QgsServer(FakeQgs(answer, tamper=tamper))
    try:
        kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)
        with pytest.raises(TeeReportError, match=message):
            _attester(tmp_path, _conf(tmp_path, server.port), kernel).evidence(b"n")
    finally:
        server.close()


def test_qgs_answer_cap_from_limits() -> None:
    server = QgsServer(FakeQgs(lambda _r: get_quote_response(RECORDED_QUOTE)))  # a 4960-byte answer
    try:
        endpoint = QgsEndpoint.tcp("127.0.0.1", server.port)
        assert QgsClient(endpoint, limits=Limits(tdx_quote_buffer_bytes=4988)).quote(RECORDED_REPORT) == RECORDED_QUOTE
        with pytest.raises(TeeReportError, match=r"announces a 4960-byte answer \(allowed: 1 to 4959\)"):
            QgsClient(endpoint, limits=Limits(tdx_quote_buffer_bytes=4987)).quote(RECORDED_REPORT)
    finally:
        server.close()


def test_qgs_closes_without_answer(tmp_path: Path) -> None:
    server = QgsServer(FakeQgs(tamper=lambda _f: b""))
    try:
        kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)
        with pytest.raises(TeeDeviceError, match="closed the connection without answering"):
            _attester(tmp_path, _conf(tmp_path, server.port), kernel).evidence(b"n")
    finally:
        server.close()


def test_qgs_deadline(tmp_path: Path) -> None:
    server = QgsServer(FakeQgs(), silent=True)
    try:
        kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)
        attester = _attester(tmp_path, _conf(tmp_path, server.port), kernel, Limits(tdx_qgs_timeout_s=0.3))
        with pytest.raises(TeeDeviceError, match=r"tcp:127\.0\.0\.1:\d+ did not answer within 0\.3 s"):
            attester.evidence(b"n")
        assert server.qgs.requests != []  # the request arrived; the answer never came
    finally:
        server.close()


def test_qgs_unreachable_names_endpoint(tmp_path: Path) -> None:
    server = QgsServer(FakeQgs())
    port = server.port
    server.close()
    with pytest.raises(TeeDeviceError, match=f"TDX QGS at tcp:127.0.0.1:{port}"):
        QgsClient(QgsEndpoint.tcp("127.0.0.1", port)).quote(RECORDED_REPORT)
    # No QGS on the host's vsock here (or no vsock at all): the error names the vsock address.
    with pytest.raises(TeeDeviceError, match="vsock:2:4050"):
        QgsClient(QgsEndpoint.vsock(4050), limits=Limits(tdx_qgs_timeout_s=2)).quote(RECORDED_REPORT)


# --- GetQuote ioctl (no port configured) ----------------------------------------------------------------------


def test_evidence_through_get_quote_ioctl(tmp_path: Path, qgs: FakeQgs) -> None:
    kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for, qgs)
    attester = _attester(tmp_path, tmp_path / "no-conf", kernel)
    evidence = attester.evidence(b"\x07" * 64)
    assert parse_td_quote(base64.b64decode(str(evidence["quote"]))).report_data == b"\x07" * 64
    assert TDX_CMD_GET_QUOTE == 0x80105404
    assert kernel.requests == [0xC4405401, 0x80105404]
    assert kernel.quote_headers == [(1, 0, 4 + 24 + 1024, 0)]
    assert qgs.requests[0].report == td_report_for(b"\x07" * 64)


def test_get_quote_ioctl_vmm_status(tmp_path: Path, qgs: FakeQgs) -> None:
    kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for, qgs, vmm_status=GET_QUOTE_SERVICE_UNAVAILABLE)
    with pytest.raises(QuoteServiceError, match=r"0x8000000000000001 \(GET_QUOTE_SERVICE_UNAVAILABLE\)") as caught:
        TdxGetQuoteIoctl(kernel.path, ioctl=kernel).quote(RECORDED_REPORT)
    assert caught.value.code == GET_QUOTE_SERVICE_UNAVAILABLE


def test_get_quote_ioctl_relays_qgs_error_and_checks_lengths(tmp_path: Path) -> None:
    failing = FakeQgs(lambda _r: get_quote_response(b"", error_code=QGS_MSG_ERROR_UNEXPECTED))
    kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for, failing)
    with pytest.raises(QuoteServiceError, match="QGS_MSG_ERROR_UNEXPECTED"):
        TdxGetQuoteIoctl(kernel.path, ioctl=kernel).quote(RECORDED_REPORT)
    lying = EmulatedTdxGuest(kernel.path, td_report_for, FakeQgs(), out_len_delta=1)
    with pytest.raises(TeeReportError, match="out_len"):
        TdxGetQuoteIoctl(lying.path, ioctl=lying).quote(RECORDED_REPORT)


def test_get_quote_ioctl_absent_on_mainline(tmp_path: Path) -> None:
    kernel = EmulatedTdxGuest(_device(tmp_path), td_report_for)  # no GetQuote support: ENOTTY
    with pytest.raises(TeeDeviceError, match=r"TDX_CMD_GET_QUOTE on .*tdx_guest failed"):
        TdxGetQuoteIoctl(kernel.path, ioctl=kernel).quote(RECORDED_REPORT)
    # The real fcntl.ioctl with the real ctypes argument, on a file that is not the device.
    with pytest.raises(TeeDeviceError, match=r"TDX_CMD_GET_QUOTE on .*tdx_guest failed"):
        TdxGetQuoteIoctl(kernel.path).quote(RECORDED_REPORT)


# --- the factory wires the built-in generator -----------------------------------------------------------------


def test_factory_wires_legacy_quote_path(tmp_path: Path) -> None:
    device = _device(tmp_path)
    probes = Probes(tsm_report_root=tmp_path / "no-tsm", tdx_guest_device=device, tdx_attest_conf=tmp_path / "c")
    attester = build_attester(Tee.TDX, probes, aael_path=tmp_path / "eventlog")
    # With a quote generator wired, the attester goes on to the (real) TDREPORT ioctl instead of stopping at
    # "no TDX quote source"; the file is no TDX device, so that ioctl fails.
    with pytest.raises(TeeDeviceError, match="TDX_CMD_GET_REPORT0 on"):
        attester.evidence(b"n")
