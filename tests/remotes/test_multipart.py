"""The streaming multipart reader splits any chunking of a body into the exact parts."""

from __future__ import annotations

import io
import random

import pytest

from bridge.dicom.multipart import MultipartError, boundary_of, split_parts


def body(parts: list[bytes], boundary: str) -> bytes:
    out = b""
    for part in parts:
        out += b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


class Sink(io.BytesIO):
    def __init__(self, store: list[bytes]) -> None:
        super().__init__()
        self.store = store

    def finish(self) -> None:
        self.store.append(self.getvalue())

    def abort(self) -> None:
        self.store.append(b"ABORTED")


@pytest.mark.parametrize("seed", range(20))
def test_parts_survive_any_chunking(seed: int) -> None:
    rng = random.Random(seed)
    boundary = "b0undary-xyz"
    parts = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000))) + b"\r\n--b0und" for _ in range(4)]
    data = body(parts, boundary)
    chunks, position = [], 0
    while position < len(data):
        size = rng.randint(1, 700)
        chunks.append(data[position : position + size])
        position += size
    received: list[bytes] = []
    assert split_parts(chunks, boundary, lambda: Sink(received)) == 4
    assert received == parts


def test_a_cut_stream_is_an_error() -> None:
    data = body([b"x" * 100, b"y" * 100], "b")
    received: list[bytes] = []
    with pytest.raises(MultipartError):
        split_parts([data[:220]], "b", lambda: Sink(received))  # cut inside the second body
    assert received == [b"x" * 100, b"ABORTED"]  # the broken part is never handed on as complete


def test_boundary_from_content_type() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary="abc-123"') == "abc-123"
    assert boundary_of("multipart/related; type=application/dicom; boundary=xyz") == "xyz"
    with pytest.raises(MultipartError):
        boundary_of("application/json")
