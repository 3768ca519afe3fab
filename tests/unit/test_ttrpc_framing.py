"""ttrpc framing (sans-IO): the spec's byte vector, round trips, split feeds, hostile byte streams."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoguest.errors import FrameTooLargeError, FramingError, TruncatedFrameError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.rpc.ttrpc.framing import HEADER_SIZE, Frame, FrameDecoder, MessageType, encode_frame
from cocoguest.rpc.ttrpc.messages import Request, decode_request, encode_request

MAX = DEFAULT_LIMITS.ttrpc_max_message_bytes

# specs/ttrpc.md §9: GetToken{TokenType: "kbs"} on stream 1 with a 50 s timeout.
GET_TOKEN_FRAME = bytes.fromhex(
    "000000430000000101000a296174746573746174696f6e5f6167656e742e4174746573746174696f6e4167656e7453657276696365"
    "1208476574546f6b656e1a050a036b62732080e8eda1ba01"
)


def decode_all(chunks: list[bytes], max_data_length: int = MAX) -> list[Frame]:
    decoder = FrameDecoder(max_data_length=max_data_length)
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    decoder.end()
    return frames


def test_spec_get_token_vector_decodes() -> None:
    [frame] = decode_all([GET_TOKEN_FRAME])
    assert (frame.stream_id, frame.message_type, frame.flags) == (1, MessageType.REQUEST, 0)
    request = decode_request(frame.payload)
    assert request == Request(
        service="attestation_agent.AttestationAgentService",
        method="GetToken",
        payload=bytes.fromhex("0a036b6273"),
        timeout_nano=50_000_000_000,
    )


def test_spec_get_token_vector_encodes_byte_for_byte() -> None:
    request = Request("attestation_agent.AttestationAgentService", "GetToken", b"\x0a\x03kbs", 50_000_000_000)
    frame = Frame(1, MessageType.REQUEST, 0, encode_request(request))
    assert encode_frame(frame, max_data_length=MAX) == GET_TOKEN_FRAME


frames_strategy = st.lists(
    st.builds(
        Frame,
        stream_id=st.integers(0, 0xFFFF_FFFF),
        message_type=st.integers(0, 255),
        flags=st.integers(0, 255),
        payload=st.binary(max_size=300),
    ),
    max_size=8,
)


@given(frames_strategy)
def test_round_trip(frames: list[Frame]) -> None:
    data = b"".join(encode_frame(f, max_data_length=MAX) for f in frames)
    assert decode_all([data]) == frames


@given(frames_strategy.filter(bool), st.data())
def test_round_trip_with_any_split(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f, max_data_length=MAX) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert decode_all(chunks) == frames


def test_split_at_every_boundary_and_byte_by_byte() -> None:
    frames = [Frame(1, 1, 0, b"abc"), Frame(3, 1, 0, b""), Frame(5, 2, 0, GET_TOKEN_FRAME)]
    stream = b"".join(encode_frame(f, max_data_length=MAX) for f in frames)
    for cut in range(len(stream) + 1):
        assert decode_all([stream[:cut], stream[cut:]]) == frames
    assert decode_all([stream[i : i + 1] for i in range(len(stream))]) == frames


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=6), st.integers(0, 64))
def test_random_byte_streams_raise_only_framing_errors(chunks: list[bytes], max_data_length: int) -> None:
    try:
        frames = decode_all(chunks, max_data_length=max_data_length)
    except FramingError:
        return
    assert all(len(f.payload) <= max_data_length for f in frames)
    assert sum(HEADER_SIZE + len(f.payload) for f in frames) == sum(map(len, chunks))


def test_oversized_header_is_rejected_before_the_body() -> None:
    decoder = FrameDecoder(max_data_length=MAX)
    decoder.feed(struct.pack(">IIBB", MAX + 1, 7, 1, 0))  # the header alone: no body has been sent
    with pytest.raises(FrameTooLargeError) as info:
        decoder.next_frame()
    assert (info.value.stream_id, info.value.length) == (7, MAX + 1)
    assert str(info.value) == f"message length {MAX + 1} exceed maximum message size of 4194304"
    assert decoder.buffered == 0
    # Poisoned: a byte stream cannot be resynchronised after a bad header.
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\0" * 10)


def test_exactly_max_is_accepted() -> None:
    frame = Frame(1, 1, 0, b"x" * 1000)
    assert decode_all([encode_frame(frame, max_data_length=1000)], max_data_length=1000) == [frame]
    with pytest.raises(FrameTooLargeError):
        encode_frame(Frame(1, 1, 0, b"x" * 1001), max_data_length=1000)


@pytest.mark.parametrize("cut", [1, 9, 10, len(GET_TOKEN_FRAME) - 1])
def test_truncated_stream(cut: int) -> None:
    with pytest.raises(TruncatedFrameError):
        decode_all([GET_TOKEN_FRAME[:cut]])


def test_frame_fields_are_range_checked() -> None:
    with pytest.raises(ValueError, match="u32"):
        Frame(1 << 32, 1, 0, b"")
    with pytest.raises(ValueError, match="u8"):
        Frame(1, 256, 0, b"")


def test_sans_io_modules_import_no_io() -> None:
    # DESIGN.md §1 boundaries: ttrpc framing (and the message and address codecs) do no IO.
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    package = Path(__file__).resolve().parents[2] / "src" / "cocoguest" / "rpc" / "ttrpc"
    forbidden = {"asyncio", "socket", "os", "io", "selectors", "subprocess", "pathlib", "cocoguest.rpc.ttrpc.transport"}
    for name in ("framing.py", "messages.py", "address.py", "codes.py"):
        tree = ast.parse((package / name).read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & forbidden, (name, imported & forbidden)
