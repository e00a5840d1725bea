"""What a pull asks the remote for: patient IDs, accession numbers, study UIDs, modality, dates, description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bridge.errors import ConfigError


@dataclass(frozen=True)
class PullFilters:
    patient_ids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    modality: str | None = None
    date_from: str | None = None  # YYYYMMDD
    date_to: str | None = None
    description: str | None = None

    def queries(self) -> list[dict[str, str]]:
        """QIDO-RS study queries: one per listed identifier, each with the common filters."""
        common: dict[str, str] = {}
        if self.modality:
            common["ModalitiesInStudy"] = self.modality
        if self.date_from or self.date_to:
            common["StudyDate"] = f"{self.date_from or ''}-{self.date_to or ''}"
        if self.description:
            common["StudyDescription"] = self.description
        keyed = (
            [("PatientID", v) for v in self.patient_ids]
            + [("AccessionNumber", v) for v in self.accession_numbers]
            + [("StudyInstanceUID", v) for v in self.study_uids]
        )
        return [{**common, key: value} for key, value in keyed] or [common]


def patient_ids_from_csv(path: Path) -> list[str]:
    """Patient IDs from a CSV file's first column (a header row named like one is skipped)."""
    import csv

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as stream:
        rows = [row[0].strip() for row in csv.reader(stream) if row and row[0].strip()]
    return [value for value in rows if value.lower() not in ("patientid", "patient_id", "patient id")]
