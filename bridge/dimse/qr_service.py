"""The index and store side of the Query/Retrieve SCP: matches for a C-FIND, the instances a C-MOVE or C-GET
sends and where their files are, the configured move destinations. Everything comes from the index of the
association's project; no file is opened to answer a C-FIND.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from bridge.dimse.identifier import FindQuery, RetrieveQuery
from bridge.search.attributes import Attribute, Level
from bridge.search.locate import Located, locate
from bridge.search.query import Search, search
from bridge.settings import MoveDestinationSettings, Settings
from storage.db import Database
from storage.filestore import FileStore

_PAGE = 500  # rows of a C-FIND read per statement (each its own short transaction)
_UIDS_PER_STATEMENT = 500


@dataclass(frozen=True)
class Page:
    attributes: tuple[Attribute, ...]
    rows: list[tuple[Any, ...]]


class QueryRetrieveService:
    def __init__(self, *, settings: Settings, database: Database, store: FileStore) -> None:
        self.settings = settings
        self.database = database
        self.store = store

    def find(self, project: str, query: FindQuery) -> Iterator[Page]:
        """The matching rows of the project, a page at a time; MatchError for a key its attribute cannot
        match."""
        offset = 0
        while True:
            request = Search(level=query.level, keys=query.keys, projects=[project], limit=_PAGE, offset=offset)
            with self.database.reading() as session:
                found = search(session, request)
            if found.rows:
                yield Page(found.attributes, found.rows)
            if not found.truncated:
                return
            offset += _PAGE

    def instances(self, project: str, query: RetrieveQuery) -> list[Located]:
        """The instances a retrieve names, within the project, in a viewer's order (each once)."""
        found: list[Located] = []
        study = query.study_uids[0] if len(query.study_uids) == 1 else None
        series = query.series_uids[0] if len(query.series_uids) == 1 else None
        with self.database.reading() as session:
            if query.level is Level.PATIENT:
                for uid in self._studies_of(session, project, query.patient_id or ""):
                    found += locate(session, projects=[project], study_uid=uid)
            elif query.level is Level.STUDY:
                for uid in query.study_uids:
                    found += locate(session, projects=[project], study_uid=uid)
            elif query.level is Level.SERIES:
                for uid in query.series_uids:
                    found += locate(session, projects=[project], study_uid=study, series_uid=uid)
            else:
                uids = list(query.sop_instance_uids)
                for start in range(0, len(uids), _UIDS_PER_STATEMENT):
                    chunk = uids[start : start + _UIDS_PER_STATEMENT]
                    found += locate(
                        session, projects=[project], study_uid=study, series_uid=series, sop_instance_uids=chunk
                    )
        unique = {located.sop_instance_uid: located for located in found}
        return list(unique.values())

    @staticmethod
    def _studies_of(session: Session, project: str, patient_id: str) -> list[str]:
        studies: list[str] = []
        offset = 0
        while True:
            request = Search(
                level=Level.STUDY, keys={"PatientID": patient_id}, projects=[project], limit=_PAGE, offset=offset
            )
            found = search(session, request)
            column = [attribute.keyword for attribute in found.attributes].index("StudyInstanceUID")
            studies += [row[column] for row in found.rows]
            if not found.truncated:
                return studies
            offset += _PAGE

    def path(self, located: Located) -> Path:
        return self.store.path(located.path)

    def destination(self, project: str, ae_title: str) -> MoveDestinationSettings | None:
        """The project's move destination of that AE title; None when the project has none by that title."""
        destinations = self.settings.projects[project].dimse.move_destinations
        return next((d for d in destinations if d.ae_title == ae_title.strip()), None)
