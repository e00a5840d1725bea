"""The OHIF viewer at `/viewer`: the prebuilt dist/ that `scripts/fetch-viewer.sh` unpacks into
`http.viewer_dir`, served with its index rewritten for the `/viewer` base and a configuration generated
here, so that it reads this bridge's own DICOMweb (`/dicomweb`, every project the token reads).

The user signs in on `/viewer/sign-in` with an API token; the tab keeps it in sessionStorage (gone with the
tab) and the viewer sends it as a bearer token. `/viewer/subject?project=P&subject=S` opens every timepoint
of a subject side by side in the viewer's study browser.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

router = APIRouter(include_in_schema=False)
BASE = "/viewer"
_HERE = Path(__file__).parent / "viewer_assets"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
# the viewer runs WebAssembly codecs and workers from blob: URLs, and its SEG loader evaluates generated
# code ('unsafe-eval'); it talks only to this origin and runs no inline script but the index's own
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval' {hashes}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
_OWN_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'"
_HASHED = re.compile(r"\.[0-9a-f]{16}\.|\.wasm$|\.woff2?$")  # content-addressed names: cached for a day


def _dist(request: Request) -> Path:
    folder: Path = request.app.state.settings.http.viewer_dir
    if not (folder / "index.html").is_file():
        raise HTTPException(404, "the viewer is not installed: run scripts/fetch-viewer.sh")
    return folder


@cache
def _index(folder: Path, mtime: float) -> tuple[bytes, str]:
    """index.html for the /viewer base, and the CSP that admits exactly its inline scripts."""
    html = (folder / "index.html").read_bytes()
    html = html.replace(b'window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{BASE}/"'.encode())
    html = re.sub(rb'(href|src)="/(?!/)', rb'\1="' + BASE.encode() + b"/", html)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return html, _CSP.format(hashes=hashes)


def _index_response(folder: Path) -> Response:
    html, csp = _index(folder, (folder / "index.html").stat().st_mtime)
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


@router.get(BASE)
def viewer_root() -> RedirectResponse:
    return RedirectResponse(f"{BASE}/")


@router.get(f"{BASE}/app-config.js")
def app_config(request: Request) -> Response:
    _dist(request)
    return Response((_HERE / "app-config.js").read_bytes(), media_type="text/javascript")


@router.get(f"{BASE}/sign-in")
def sign_in(request: Request) -> Response:
    return _own(request, "sign-in.html", "text/html")


@router.get(f"{BASE}/subject")
def subject(request: Request) -> Response:
    return _own(request, "subject.html", "text/html")


@router.get(f"{BASE}/pacs-bridge/{{name}}")
def own_script(name: str, request: Request) -> Response:
    if name not in ("sign-in.js", "subject.js", "pacs-bridge.css"):
        raise HTTPException(404, "no such file")
    return _own(request, name, mimetypes.guess_type(name)[0] or "text/plain")


def _own(request: Request, name: str, media_type: str) -> Response:
    _dist(request)
    return Response((_HERE / name).read_bytes(), media_type=media_type, headers={"Content-Security-Policy": _OWN_CSP})


@router.get(f"{BASE}/{{path:path}}")
def asset(path: str, request: Request) -> Response:
    """A file of the dist, or the index for the viewer's own routes (/viewer/viewer?..., study list)."""
    folder = _dist(request)
    target = (folder / path).resolve()
    if path and target.is_file() and target.is_relative_to(folder.resolve()) and target.name != "index.html":
        cache_control = "public, max-age=86400, immutable" if _HASHED.search(target.name) else "no-cache"
        headers = {"Cache-Control": cache_control, "Content-Security-Policy": _CSP.format(hashes="")}
        return FileResponse(target, headers=headers)
    return _index_response(folder)
