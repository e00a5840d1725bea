"""Streaming reader of a multipart/related body (WADO-RS): each part goes to a file as it arrives.

dicomweb-client parses every part into a Dataset, which costs more than the network; here a study or a
series streams to disk unparsed, with memory bounded by the chunk size, whatever the size of the parts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
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
        raise MultipartError(f"not a multipart response (Content-Type: {content_type[:100]})")
    return match.group(1)


def split_parts(chunks: Iterable[bytes], boundary: str, open_part: Callable[[], PartSink]) -> int:
    """Write each part's body to a new sink from `open_part()`; returns how many parts were finished.

    The first delimiter may come without the leading CRLF; part headers are skipped.
    """
    delimiter = b"\r\n--" + boundary.encode("ascii")
    buffer = b"\r\n"  # so that a delimiter at the very start is found like any other
    sink: PartSink | None = None
    in_headers = False
    parts = 0
    finished = False
    for chunk in chunks:
        if finished:
            break
        buffer += chunk
        while True:
            if in_headers:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                buffer = buffer[end + 4 :]
                in_headers = False
                sink = open_part()
                continue
            position = buffer.find(delimiter)
            if position < 0:
                keep = len(delimiter) + 2  # a delimiter may straddle two chunks
                if sink is not None and len(buffer) > keep:
                    sink.write(buffer[:-keep])
                    buffer = buffer[-keep:]
                break
            if sink is not None:
                sink.write(buffer[:position])
                sink.finish()
                sink = None
                parts += 1
            rest = buffer[position + len(delimiter) :]
            if len(rest) < 2:
                buffer = buffer[position:]
                break
            if rest.startswith(b"--"):
                finished = True
                buffer = b""
                break
            buffer = rest
            in_headers = True
    if sink is not None:
        sink.abort()
        raise MultipartError("the response ended inside a part (connection cut?)")
    if not finished:
        raise MultipartError("the response ended before its closing boundary")
    return parts
