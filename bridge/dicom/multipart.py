"""multipart/related bodies (PS3.18 8.6.1), read and written as streams: each part goes to a sink as it
arrives, or out as it is read from disk.

dicomweb-client parses every part into a Dataset, which costs more than the network; here a study or a
series streams unparsed, with memory bounded by the chunk size, whatever the size of the parts. The
reader takes a WADO-RS response (pull) or a STOW-RS request (push, chunk by chunk).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


class PartSink(Protocol):
    """Where one part goes: `finish` when it is complete, `abort` when the stream broke inside it."""

    def write(self, data: bytes) -> object: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class MultipartError(ValueError):
    """The body is not the multipart/related stream its Content-Type announced."""


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not match or not content_type.lower().startswith("multipart/"):
        raise MultipartError(f"not a multipart body (Content-Type: {content_type[:100]})")
    return match.group(1)


def new_boundary() -> str:
    return f"pacs-bridge-{secrets.token_hex(12)}"


def part_header(boundary: str, content_type: str, *, first: bool = False) -> bytes:
    """The delimiter and headers that open a part of a body being written."""
    return (b"" if first else b"\r\n") + f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


class Splitter:
    """Feed it the body's chunks: each part's body goes to a new sink from `open_part(headers)` (header
    names in lower case). The first delimiter may come without the leading CRLF."""

    def __init__(self, boundary: str, open_part: Callable[[Mapping[str, str]], PartSink]) -> None:
        self.delimiter = b"\r\n--" + boundary.encode("ascii")
        self.open_part = open_part
        self.buffer = b"\r\n"  # so that a delimiter at the very start is found like any other
        self.sink: PartSink | None = None
        self.in_headers = False
        self.parts = 0  # finished
        self.finished = False  # the closing delimiter was seen

    def feed(self, chunk: bytes) -> None:
        if self.finished:
            return
        self.buffer += chunk
        while True:
            if self.in_headers:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > 16384:
                        raise MultipartError("a part's headers are longer than 16 KiB")
                    return
                headers, self.buffer = _headers(self.buffer[:end]), self.buffer[end + 4 :]
                self.in_headers = False
                self.sink = self.open_part(headers)
                continue
            position = self.buffer.find(self.delimiter)
            if position < 0:
                keep = len(self.delimiter) + 2  # a delimiter may straddle two chunks
                if len(self.buffer) > keep:
                    if self.sink is not None:
                        self.sink.write(self.buffer[:-keep])
                    self.buffer = self.buffer[-keep:]
                return
            if self.sink is not None:
                self.sink.write(self.buffer[:position])
                self.sink.finish()
                self.sink = None
                self.parts += 1
            rest = self.buffer[position + len(self.delimiter) :]
            if len(rest) < 2:
                self.buffer = self.buffer[position:]
                return
            if rest.startswith(b"--"):
                self.finished = True
                self.buffer = b""
                return
            self.buffer = rest
            self.in_headers = True

    def end(self) -> int:
        """How many parts were finished; MultipartError if the body ended early (the open part is aborted)."""
        if self.sink is not None:
            self.sink.abort()
            self.sink = None
            raise MultipartError("the body ended inside a part (connection cut?)")
        if not self.finished:
            raise MultipartError("the body ended before its closing boundary")
        return self.parts


def split_parts(chunks: Iterable[bytes], boundary: str, open_part: Callable[[], PartSink]) -> int:
    """Write each part's body of a streamed response to a new sink; returns how many parts were finished."""
    splitter = Splitter(boundary, lambda _headers: open_part())
    for chunk in chunks:
        splitter.feed(chunk)
        if splitter.finished:
            break
    return splitter.end()
