"""WADO-RS (PS3.18 10.4): studies, series and instances streamed from the file store as multipart/related;
metadata as DICOM JSON; frames and bulk data of one instance.

The files are sent as stored, read in chunks: a study never sits in memory. The transfer syntax of every
part is decided before the first byte goes out, so a request that cannot be served is a 406, never a cut
stream. Frames and bulk data read the one instance they come from.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian

from bridge.dicom.multipart import closing, new_boundary, part_header
from bridge.dicomweb.context import Db, Scope, base_url
from bridge.dicomweb.dicomjson import PIXEL_DATA, metadata
from bridge.dicomweb.media import DICOM, OCTETS, UNCOMPRESSED, NotAcceptable, frame_type, instance_syntax, ranges
from bridge.search.locate import Located, locate
from storage.filestore import FileStore

logger = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])
CHUNK = 4 * 1024 * 1024  # bytes a retrieve reads and writes at a time


def _located(
    db: Db, projects: Scope, study: str, series: str | None = None, instance: str | None = None
) -> list[Located]:
    with db.reading() as session:
        found = locate(
            session,
            projects=projects,
            study_uid=study,
            series_uid=series,
            sop_instance_uids=[instance] if instance else [],
        )
    if not found:
        raise HTTPException(404, "no such study, series or instance in the projects this token reads")
    return found


def _file(request: Request, located: Located) -> Path:
    store = FileStore(request.app.state.settings.storage.store_dir)
    return store.path(located.path)


def _instances(request: Request, found: list[Located], *, single: bool = False) -> Response:
    accepted = ranges(request.headers.get("accept"), DICOM)
    multipart = not (single and any(entry.media_type == DICOM and not entry.multipart for entry in accepted[:1]))
    try:
        syntaxes = [instance_syntax(accepted, f.transfer_syntax_uid, multipart=multipart) for f in found]
    except NotAcceptable as error:
        raise HTTPException(406, str(error)) from None
    paths = [_file(request, f) for f in found]
    if not multipart:
        parts, end = [_part(b"", paths[0], found[0].transfer_syntax_uid, syntaxes[0])], b""
        media_type = f"{DICOM}; transfer-syntax={syntaxes[0]}"
    else:
        boundary = new_boundary()
        parts, end = [], closing(boundary)
        for number, (path, located, syntax) in enumerate(zip(paths, found, syntaxes, strict=True)):
            header = part_header(boundary, f"{DICOM}; transfer-syntax={syntax}", first=number == 0)
            parts.append(_part(header, path, located.transfer_syntax_uid, syntax))
        media_type = f'multipart/related; type="{DICOM}"; boundary={boundary}'
    sizes = [part.size for part in parts]
    # known when every file goes out as stored: a Content-Length spares the chunked framing (and its copy)
    length = None if None in sizes else sum(len(part.header) + (part.size or 0) for part in parts) + len(end)
    headers = {"Content-Length": str(length)} if length is not None else None
    return StreamingResponse(_blocks(parts, end), media_type=media_type, headers=headers)


@dataclass(frozen=True)
class _Part:
    """One part of a retrieve: the delimiter and headers before it, the file, its transfer syntax as stored
    and as sent, and (sent as stored) its size when the answer began."""

    header: bytes
    path: Path
    stored: str
    syntax: str
    size: int | None


def _part(header: bytes, path: Path, stored: str, syntax: str) -> _Part:
    return _Part(header, path, stored, syntax, path.stat().st_size if syntax == stored else None)


def _blocks(parts: list[_Part], end: bytes) -> Iterator[memoryview]:
    """The body in blocks of about CHUNK bytes, each read straight into its own buffer: the parts of many
    small files share a block (the server's per-write costs are paid per block, not per file), a large
    file spans several; memory stays bounded by the block, whatever the size of the series."""
    block, used = bytearray(CHUNK), 0
    for part in parts:
        for piece in _pieces(part):
            if isinstance(piece, bytes):
                if used + len(piece) > CHUNK and used:
                    yield memoryview(block)[:used]
                    block, used = bytearray(CHUNK), 0
                if len(piece) > CHUNK:
                    yield memoryview(piece)
                    continue
                block[used : used + len(piece)] = piece
                used += len(piece)
                continue
            with piece:  # a file sent as stored
                while True:
                    if used == CHUNK:
                        yield memoryview(block)
                        block, used = bytearray(CHUNK), 0
                    read = piece.readinto(memoryview(block)[used:])
                    if not read:
                        break
                    used += read
    block[used : used + len(end)] = end
    yield memoryview(block)[: used + len(end)]


def _pieces(part: _Part) -> Iterator[bytes | io.RawIOBase]:
    """The part's header, then its file opened (sent as stored) or its bytes re-encoded in another
    uncompressed syntax."""
    yield part.header
    if part.size is not None:
        file = part.path.open("rb", buffering=0)
        if os.fstat(file.fileno()).st_size != part.size:  # replaced since: the Content-Length would lie
            file.close()
            raise OSError(f"{part.path.name} changed while it was being sent")
        yield file
        return
    ds = pydicom.dcmread(part.path)
    ds.file_meta.TransferSyntaxUID = UID(part.syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    yield out.getvalue()


@router.get("/studies/{study}")
def study(study: str, request: Request, db: Db, projects: Scope) -> Response:
    return _instances(request, _located(db, projects, study))


@router.get("/studies/{study}/series/{series}")
def series(study: str, series: str, request: Request, db: Db, projects: Scope) -> Response:
    return _instances(request, _located(db, projects, study, series))


@router.get("/studies/{study}/series/{series}/instances/{instance}")
def instance(study: str, series: str, instance: str, request: Request, db: Db, projects: Scope) -> Response:
    return _instances(request, _located(db, projects, study, series, instance), single=True)


def _path_of(located: Located) -> str:
    return f"studies/{located.study_uid}/series/{located.series_uid}/instances/{located.sop_instance_uid}"


def _metadata(request: Request, found: list[Located]) -> StreamingResponse:
    base = base_url(request)
    paths = [_file(request, f) for f in found]

    def stream() -> Iterator[bytes]:
        yield b"["
        for number, (path, located) in enumerate(zip(paths, found, strict=True)):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            bulk = f"{base}/{_path_of(located)}/bulkdata"
            yield (b"," if number else b"") + json.dumps(metadata(ds, bulk), separators=(",", ":")).encode()
        yield b"]"

    return StreamingResponse(stream(), media_type="application/dicom+json")


@router.get("/studies/{study}/metadata")
def study_metadata(study: str, request: Request, db: Db, projects: Scope) -> Response:
    return _metadata(request, _located(db, projects, study))


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(study: str, series: str, request: Request, db: Db, projects: Scope) -> Response:
    return _metadata(request, _located(db, projects, study, series))


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
def instance_metadata(study: str, series: str, instance: str, request: Request, db: Db, projects: Scope) -> Response:
    return _metadata(request, _located(db, projects, study, series, instance))


def frames_of(ds: Dataset, syntax: str) -> list[bytes]:
    """Every frame of the pixel data, as PS3.18 sends them: uncompressed frames cut from the native pixel
    data (1-bit frames unpacked and packed again on their own, from bit 0), compressed ones as encoded."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if syntax not in UNCOMPRESSED:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    data = ds.PixelData
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    if bits == 1:
        unpacked = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        return [np.packbits(unpacked[n * pixels : (n + 1) * pixels], bitorder="little").tobytes() for n in range(count)]
    size = pixels * bits // 8
    return [bytes(data[n * size : (n + 1) * size]) for n in range(count)]


def _frame_numbers(text: str, count: int) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HTTPException(400, "frame numbers: a comma-separated list of whole numbers from 1") from None
    if not numbers or any(n < 1 for n in numbers):
        raise HTTPException(400, "frame numbers: a comma-separated list of whole numbers from 1")
    if any(n > count for n in numbers):
        raise HTTPException(404, f"the instance has {count} frame(s)")
    return numbers


def _parts(media: str, syntax: str, values: list[bytes]) -> Response:
    boundary = new_boundary()
    content_type = f"{media}; transfer-syntax={syntax}"
    body = b"".join(part_header(boundary, content_type, first=n == 0) + value for n, value in enumerate(values))
    return Response(body + closing(boundary), media_type=f'multipart/related; type="{media}"; boundary={boundary}')


def _pixel_frames(request: Request, located: Located, ds: Dataset, wanted: str | None) -> Response:
    """The frames named in `wanted` ("1,3"; None: all of them) in the type the client accepts."""
    try:
        media, syntax = frame_type(ranges(request.headers.get("accept"), OCTETS), located.transfer_syntax_uid)
    except NotAcceptable as error:
        raise HTTPException(406, str(error)) from None
    every = frames_of(ds, located.transfer_syntax_uid)
    numbers = _frame_numbers(wanted, len(every)) if wanted is not None else range(1, len(every) + 1)
    return _parts(media, syntax, [every[n - 1] for n in numbers])


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
def frames(study: str, series: str, instance: str, frames: str, request: Request, db: Db, projects: Scope) -> Response:
    located = _located(db, projects, study, series, instance)[0]
    ds = pydicom.dcmread(_file(request, located))
    if PIXEL_DATA not in ds:
        raise HTTPException(404, "the instance has no pixel data")
    return _pixel_frames(request, located, ds, frames)


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}")
def bulkdata(study: str, series: str, instance: str, tag: str, request: Request, db: Db, projects: Scope) -> Response:
    located = _located(db, projects, study, series, instance)[0]
    try:
        number = int(tag, 16)
    except ValueError:
        raise HTTPException(400, "bulk data: the tag as 8 hex digits") from None
    ds = pydicom.dcmread(_file(request, located))
    if number == PIXEL_DATA and PIXEL_DATA in ds:
        return _pixel_frames(request, located, ds, None)
    found = _first(ds, number)
    if found is None:
        raise HTTPException(404, "the instance has no such value")
    value = found.value if isinstance(found.value, bytes) else str(found.value).encode()
    return _parts(OCTETS, str(ExplicitVRLittleEndian), [value])


def _first(ds: Dataset, tag: int) -> DataElement | None:
    """The element with `tag`, at the top level or else the first one depth first."""
    if tag in ds:
        return ds[tag]
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                found = _first(item, tag)
                if found is not None:
                    return found
    return None
