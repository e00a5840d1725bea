"""DICOMweb remote: QIDO-RS searches (dicomweb-client) and WADO-RS retrieval streamed to files.

Retries happen here and only here: timeouts, refused connections, 5xx and 429 are retried with backoff
(`RetriableError`); anything else, and the last failure, is reported with the remote's own message.
Retrieval asks for `Accept-Encoding: identity` (a PACS asked for gzip may compress every instance, which
costs more than it saves on a hospital network) and writes each part to disk as it arrives.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from dicomweb_client.api import DICOMwebClient

from bridge.dicom.multipart import MultipartError, boundary_of, split_parts
from bridge.errors import RemoteError, RetriableError, TruncatedSearch, redact, with_retries
from bridge.remotes.base import Delivery, FilePart, RemoteInstance, RemoteSeries, first_value
from bridge.settings import RemoteSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")
_CHUNK = 1 << 20
_ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_ERRNO = re.compile(r"\[Errno \d+\] ([^\"')]+)")


def _number(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


class DicomwebRemote:
    def __init__(self, settings: RemoteSettings) -> None:
        if settings.dicomweb_url is None:
            raise RemoteError(f"remote {settings.name}: no dicomweb_url configured")
        self.settings = settings
        self.name = settings.name
        self.parallel = settings.parallel
        self.timeout = settings.timeout
        self.via_listener = False
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment between the bridge and its PACS
        if settings.auth == "basic":
            assert settings.username is not None and settings.password is not None
            self.session.auth = (settings.username, settings.password.get_secret_value())
        elif settings.auth == "bearer":
            assert settings.token is not None
            self.session.headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self.base_url = settings.dicomweb_url.rstrip("/")
        self.client = DICOMwebClient(self.base_url, session=self.session, timeout=settings.timeout)
        self.client.set_http_retry_params(retry=False)  # retries are this adapter's job, and only its job

    # -- retries, in this one layer --------------------------------------------------------------------
    def _call(self, what: str, action: Callable[[], T]) -> T:
        return with_retries(self.settings.retries, lambda: self._translate(what, action))

    def _translate(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            text = redact(response.text[:300].strip() if response is not None else "") or "no message"
            error = f"remote {self.name}: {what} answered HTTP {status}: {text}"
            if status >= 500 or status == 429:
                raise RetriableError(error) from None
            raise RemoteError(error) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = _ERRNO.search(str(exc))
            detail = f"{type(exc).__name__} ({reason.group(1).strip()})" if reason else type(exc).__name__
            raise RetriableError(f"remote {self.name}: {what} failed: {detail}") from None
        except MultipartError as exc:
            raise RetriableError(f"remote {self.name}: {what}: {exc}") from None

    # -- QIDO-RS ----------------------------------------------------------------------------------------
    def _pages(self, what: str, search: Callable[[int, int], list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
        """All results of a search, page by page. Some servers ignore `offset` for some filters (Orthanc 1.10
        with ModalitiesInStudy) and would loop dicomweb-client's `get_remaining` forever: a page that brings
        nothing new ends the search."""
        page = self.settings.page_size
        results: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            items = self._call(what, lambda start=offset: search(page, start))  # type: ignore[misc]
            new = {str(first_value(item, key)): item for item in items if str(first_value(item, key)) not in results}
            results.update(new)
            if len(items) < page or not new:
                return list(results.values())
            offset += len(items)

    def search_studies(self, filters: dict[str, str]) -> list[str]:
        """Studies matching `filters` (QIDO-RS keywords); `TruncatedSearch` when the remote's cap was hit
        (Orthanc 1.10 truncates silently: `result_limit` in the remote's settings is how we know)."""
        found = self._pages(
            "study search",
            lambda limit, offset: self.client.search_for_studies(search_filters=filters, limit=limit, offset=offset),
            "0020000D",
        )
        limit = self.settings.result_limit
        if limit is not None and len(found) >= limit:
            raise TruncatedSearch(f"remote {self.name}: study search reached result_limit ({limit})")
        return [uid for item in found if (uid := first_value(item, "0020000D"))]

    def search_series(self, study_uid: str) -> list[RemoteSeries]:
        found = self._pages(
            "series search",
            lambda limit, offset: self.client.search_for_series(
                study_instance_uid=study_uid, fields=["00201209"], limit=limit, offset=offset
            ),
            "0020000E",
        )
        listed = []
        for item in found:
            uid, count = first_value(item, "0020000E"), first_value(item, "00201209")
            if uid:
                listed.append(RemoteSeries(uid, _number(count)))
        return listed

    def search_instances(self, study_uid: str, series_uid: str | None = None) -> list[RemoteInstance]:
        found = self._pages(
            "instance search",
            lambda limit, offset: self.client.search_for_instances(
                study_instance_uid=study_uid, series_instance_uid=series_uid, limit=limit, offset=offset
            ),
            "00080018",
        )
        instances = []
        for item in found:
            series, sop = first_value(item, "0020000E") or series_uid, first_value(item, "00080018")
            if series and sop:
                instances.append(RemoteInstance(study_uid, series, sop, first_value(item, "00080016")))
        return instances

    def probe(self) -> str:
        """A one-study search: proves address, authentication and QIDO support."""
        found = self._call("QIDO-RS probe", lambda: self.client.search_for_studies(limit=1))
        return f"QIDO-RS answers ({len(found)} study returned for limit=1)"

    # -- WADO-RS ----------------------------------------------------------------------------------------
    def retrieve(
        self,
        delivery: Delivery,
        study_uid: str,
        series_uid: str,
        sop_uid: str | None = None,
        sop_classes: frozenset[str] = frozenset(),
    ) -> int:
        """Stream a series (or one instance), part by part, to files of `delivery`; how many parts arrived."""
        path = f"{self.base_url}/studies/{study_uid}/series/{series_uid}"
        if sop_uid:
            path += f"/instances/{sop_uid}"

        def fetch() -> int:
            headers = {"Accept": _ACCEPT_DICOM, "Accept-Encoding": "identity"}
            with self.session.get(path, headers=headers, stream=True, timeout=self.settings.timeout) as response:
                response.raise_for_status()
                boundary = boundary_of(response.headers.get("Content-Type", ""))
                return split_parts(response.iter_content(_CHUNK), boundary, lambda: FilePart(delivery))

        return self._call("WADO-RS retrieval", fetch)

    # -- STOW-RS ----------------------------------------------------------------------------------------
    def store(self, dataset: Any) -> None:
        """One STOW-RS request, once (the outbox retries); returns only when the remote stored the instance
        (200 with no failed item)."""
        answer = self._translate("STOW-RS", lambda: self.client.store_instances([dataset]))
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "")
            raise RemoteError(f"remote {self.name}: STOW-RS refused the instance (failure reason {reason})")

    def close(self) -> None:
        self.session.close()
