"""Content negotiation of WADO-RS: which media type and transfer syntax a client accepts (PS3.18 8.7.3).

The bridge sends files as stored. Between little endian uncompressed syntaxes it transcodes (a client that
names none gets Explicit VR Little Endian, the default of PS3.18); it never decompresses: compressed data
goes out in its own syntax when the client accepts that (`transfer-syntax=*` or the syntax named), else 406.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

DICOM = "application/dicom"
OCTETS = "application/octet-stream"
UNCOMPRESSED = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
)
# re-encoded one into another without touching pixel values (big endian would need its words swapped)
TRANSCODABLE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
# frames of a compressed syntax also go out under the image media type PS3.18 Table 8.7.4-1 gives it
IMAGE_TYPES = {
    JPEGBaseline8Bit: "image/jpeg",
    JPEGExtended12Bit: "image/jpeg",
    JPEGLossless: "image/jpeg",
    JPEGLosslessSV1: "image/jpeg",
    JPEGLSLossless: "image/jls",
    JPEGLSNearLossless: "image/jls",
    JPEG2000Lossless: "image/jp2",
    JPEG2000: "image/jp2",
}
_SPLIT = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')  # commas outside quotes


@dataclass(frozen=True)
class Range:
    """One entry of an Accept header: a media type (the `type` of a multipart/related one) and the
    transfer syntax asked for (None: not named, "*": any)."""

    media_type: str
    multipart: bool
    transfer_syntax: str | None


class NotAcceptable(Exception):
    """Nothing the client accepts can be sent; the message says what is available."""


def ranges(accept: str | None, default: str) -> list[Range]:
    """The ranges of an Accept header, best first (by q), `default` standing for */* or no header."""
    found: list[tuple[float, int, Range]] = []
    for position, entry in enumerate(_SPLIT.split(accept or "*/*")):
        main, *parameters = [part.strip() for part in entry.split(";")]
        params = {}
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        main = main.lower()
        multipart = main == "multipart/related"
        media = params.get("type", default).lower() if multipart else main
        if media in ("*/*", "*", ""):
            media, multipart = default, multipart or main in ("*/*", "*")
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        found.append((-q, position, Range(media, multipart, params.get("transfer-syntax"))))
    return [entry for _, _, entry in sorted(found, key=lambda item: (item[0], item[1]))]


def instance_syntax(accepted: list[Range], stored: str, *, multipart: bool) -> str:
    """The transfer syntax to send a stored instance in (application/dicom)."""
    for entry in accepted:
        if entry.media_type not in (DICOM, "application/*") or entry.multipart != multipart:
            continue
        wanted = entry.transfer_syntax
        if wanted in ("*", stored) or (wanted is None and stored not in TRANSCODABLE):
            return stored
        if stored in TRANSCODABLE and wanted in (None, *TRANSCODABLE):
            return str(wanted or ExplicitVRLittleEndian)
    raise NotAcceptable(_available(stored))


def frame_type(accepted: list[Range], stored: str) -> tuple[str, str]:
    """(media type, transfer syntax) to send frames of a stored instance in."""
    compressed = stored not in UNCOMPRESSED
    if stored == ExplicitVRBigEndian:  # retired; its frames would need swapping
        raise NotAcceptable(f"frames are not served from big endian data ({stored}): retrieve the instance")
    for entry in accepted:
        media, wanted = entry.media_type, entry.transfer_syntax
        if not compressed and media in (OCTETS, "application/*") and wanted in (None, "*", ExplicitVRLittleEndian):
            return OCTETS, str(ExplicitVRLittleEndian)
        if compressed and wanted in ("*", stored) and media in (OCTETS, "application/*"):
            return OCTETS, stored
        if compressed and media in (IMAGE_TYPES.get(UID(stored)), "image/*") and wanted in (None, "*", stored):
            return IMAGE_TYPES[UID(stored)], stored
    raise NotAcceptable(_available(stored))


def _available(stored: str) -> str:
    if stored in UNCOMPRESSED:
        return f"stored uncompressed ({stored}): ask for {DICOM} or {OCTETS} without a transfer syntax, or *"
    return f"stored compressed ({stored}) and never decompressed here: ask for transfer-syntax=* or {stored}"
