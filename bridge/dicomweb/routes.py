"""The DICOMweb routes, mounted twice: over every project the token reads, and per project."""

from __future__ import annotations

from fastapi import FastAPI

from bridge.dicomweb import qido, stow, wado
from bridge.dicomweb.context import PREFIX, PROJECT_PREFIX


def include(app: FastAPI) -> None:
    for prefix in (PREFIX, PROJECT_PREFIX):
        for module in (qido, wado, stow):
            app.include_router(module.router, prefix=prefix)
