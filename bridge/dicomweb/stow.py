"""STOW-RS (PS3.18 10.5): instances sent to `/dicomweb/projects/NAME/studies[/{study}]` go into the same
ingest as C-STORE: each part is written to the spool as it arrives, admitted (durable) or refused (into
quarantine), and only then answered.

The answer names each instance by the UIDs it is stored under once de-identified (the ones the bridge's
own DICOMweb serves), never by those it came with: 200 when every instance was taken, 202 when some were
refused, 409 when none was.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bridge.access.roles import Permission
from bridge.access.users import Principal
from bridge.api.auth import allowed
from bridge.dicom import status
from bridge.dicom.multipart import MultipartError, Splitter, boundary_of
from bridge.dicomweb.context import base_url
from bridge.dicomweb.dicomjson import element
from bridge.dicomweb.media import DICOM
from bridge.ingest.admission import check_study
from bridge.ingest.intake import Admitted, admit
from bridge.wiring import Runtime
from storage.spool import IncomingFile, Spool

router = APIRouter(tags=["dicomweb"])
Contributor = Annotated[Principal, Depends(allowed(Permission.CONTRIBUTE))]
PREAMBLE_AND_MAGIC = 132
_RUNTIME_LOCK = threading.Lock()
(_REFERENCED, _FAILED, _CLASS, _INSTANCE, _REASON, _URL) = (
    0x00081199,
    0x00081198,
    0x00081150,
    0x00081155,
    0x00081197,
    0x00081190,
)


class _Part:
    """One part of the request on its way into the spool, as a Part 10 file. A part that starts with the
    file meta group but no preamble (dicomweb-client sends them so) gets the preamble and "DICM" here;
    one without file meta is not written at all (refused when admitted)."""

    def __init__(self, spool: Spool, headers: Mapping[str, str]) -> None:
        self.spool = spool
        self.media_type = headers.get("content-type", DICOM).split(";")[0].strip().lower()
        self.head = b""
        self.file: IncomingFile | None = None
        self.refused = self.media_type != DICOM  # nothing of it is kept

    def write(self, data: bytes) -> None:
        if self.refused:
            return
        if self.file is not None:
            self.file.write(memoryview(data))
            return
        self.head += data
        if len(self.head) >= PREAMBLE_AND_MAGIC:
            self._open()

    def _open(self) -> None:
        """The spool file, once the start of the part shows what it is (the spool's CRC starts after the
        preamble, so the preamble must be in the header written first)."""
        if self.head[128:132] == b"DICM":
            header = self.head
        elif self.head[:2] == b"\x02\x00":  # (0002,xxxx): file meta without the preamble
            header = bytes(128) + b"DICM" + self.head
        else:
            self.refused, self.head = True, b""
            return
        self.file, self.head = self.spool.receive(header), b""

    def finish(self) -> None:
        if self.file is None and self.head and not self.refused:
            self._open()
        if self.file is not None:
            self.file.close()

    def abort(self) -> None:
        self.discard()

    def discard(self) -> None:
        if self.file is not None:
            self.file.discard()
            self.file = None


def _runtime(request: Request) -> Runtime:
    """The ingest side of this process (keys, projects, quarantine), built on the first STOW-RS request."""
    state = request.app.state
    with _RUNTIME_LOCK:
        if getattr(state, "runtime", None) is None:
            state.runtime = Runtime(state.settings, state.database)
    return state.runtime  # type: ignore[no-any-return]


@router.post("/studies")
async def store(request: Request, caller: Contributor) -> JSONResponse:
    return await _store(request, caller, None)


@router.post("/studies/{study}")
async def store_in_study(study: str, request: Request, caller: Contributor) -> JSONResponse:
    return await _store(request, caller, study)


async def _store(request: Request, caller: Principal, study: str | None) -> JSONResponse:
    project = request.path_params.get("project")
    if project is None:
        raise HTTPException(400, "STOW-RS stores into one project: POST to /dicomweb/projects/NAME/studies")
    if project not in request.app.state.settings.projects:
        raise HTTPException(404, "no such project")
    content_type = request.headers.get("content-type", "")
    try:
        boundary = boundary_of(content_type)
    except MultipartError:
        raise HTTPException(415, f'STOW-RS takes multipart/related; type="{DICOM}"') from None
    if f'type="{DICOM}"' not in content_type.replace("'", '"') and f"type={DICOM}" not in content_type:
        raise HTTPException(415, f'only type="{DICOM}" parts (Part 10 files) are taken, not metadata and bulk data')
    spool: Spool = request.app.state.spool
    parts: list[_Part] = []

    def open_part(headers: Mapping[str, str]) -> _Part:
        parts.append(_Part(spool, headers))
        return parts[-1]

    splitter = Splitter(boundary, open_part)
    try:
        async for chunk in request.stream():
            splitter.feed(chunk)
        splitter.end()
    except MultipartError as error:
        _discard(parts)
        raise HTTPException(400, f"the request body is not a complete multipart/related body: {error}") from None
    except BaseException:  # the client went away, or the body was over the limit: nothing was acknowledged
        _discard(parts)
        raise
    if not parts:
        raise HTTPException(400, "the request holds no instance")
    runtime = await run_in_threadpool(_runtime, request)
    ingest = runtime.ingest(f"api:{caller.name}")
    check = partial(check_study, study_uid=study) if study is not None else None
    outcomes: list[Admitted] = []
    for part in parts:
        if part.file is None:
            outcomes.append(Admitted(status.CANNOT_UNDERSTAND))  # not a Part 10 file, or not DICOM at all
            continue
        source = f"stow-rs:{caller.name}"
        intake = partial(admit, spool=spool, ingest=ingest, project=project, source=source, intake="stow-rs")
        outcomes.append(await run_in_threadpool(intake, part.file, check=check))
    return _answer(request, runtime, project, study, outcomes)


def _discard(parts: list[_Part]) -> None:
    for part in parts:
        part.discard()


def _answer(
    request: Request, runtime: Runtime, project: str, study: str | None, outcomes: list[Admitted]
) -> JSONResponse:
    context = runtime.projects[project]
    base = base_url(request)
    referenced, failed = [], []
    for outcome in outcomes:
        item: dict[str, Any] = {}
        if outcome.sop_class_uid:
            item[f"{_CLASS:08X}"] = element(_CLASS, "UI", [outcome.sop_class_uid])
        if outcome.sop_instance_uid:
            item[f"{_INSTANCE:08X}"] = element(_INSTANCE, "UI", [context.stored_uid(outcome.sop_instance_uid)])
        if outcome.status == status.SUCCESS:
            uids = [outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid]
            if all(uids):
                study_uid, series_uid, instance_uid = (context.stored_uid(uid) for uid in uids if uid)
                url = f"{base}/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}"
                item[f"{_URL:08X}"] = element(_URL, "UR", [url])
            referenced.append(item)
        else:
            failed.append({**item, f"{_REASON:08X}": element(_REASON, "US", [outcome.status])})
    body: dict[str, Any] = {}
    if study is not None:
        body[f"{_URL:08X}"] = element(_URL, "UR", [f"{base}/studies/{context.stored_uid(study)}"])
    if referenced:
        body[f"{_REFERENCED:08X}"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body[f"{_FAILED:08X}"] = {"vr": "SQ", "Value": failed}
    code = 200 if not failed else 409 if not referenced else 202
    return JSONResponse(body, status_code=code, media_type="application/dicom+json")
