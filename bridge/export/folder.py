"""A cohort or snapshot exported to a folder: the de-identified files laid out by subject, timepoint and
series, with a manifest (CSV and JSON), or one NIfTI volume per series.

Layout: `SUBJECT/LABEL_DAYS/NUMBER_MODALITY/SOP_INSTANCE_UID.dcm` (or `NUMBER_MODALITY.nii.gz`). Each file
gets its timepoint's label in Clinical Trial Time Point ID (the rules' labels change as data arrives, so
the store keeps the label received). Every file is written durably (temporary, fsync, rename); a second
run writes only what is missing or differs by SHA-256, so an interrupted export is resumed by running it
again. Nothing here holds an identifier: the store is de-identified.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydicom.dataset import FileDataset

from bridge.cohorts.query import SeriesRow
from bridge.deid.identity import encoding_of
from bridge.dicom.elements import put_value, tag_of, text_of
from bridge.dicom.files import read_instance, write_instance
from bridge.export.formats import Format
from bridge.export.segmentations import ApprovedSeg, seg_row, write_label_volume
from storage.durable import HashingWriter, copy_durably, sha256_of, write_durably

MANIFEST = "manifest"
_LABEL = tag_of("ClinicalTrialTimePointID")
Progress = Callable[[int], None]  # told how many instances were done since the last call


@dataclass(frozen=True)
class Source:
    """One stored instance of a series to export."""

    sop_instance_uid: str
    path: Path  # in the store
    sha256: str  # of the stored file


@dataclass(frozen=True)
class Selection:
    """What to export: each series with its instances, and what a snapshot names that is gone."""

    series: list[tuple[SeriesRow, list[Source]]]
    missing: list[str] = field(default_factory=list)  # SOP Instance UIDs (a snapshot's, no longer stored)
    # approved segmentations of those series: (the source series' row, the SEG)
    segmentations: list[tuple[SeriesRow, ApprovedSeg]] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return sum(len(sources) for _, sources in self.series) + sum(len(s.seg_files) for _, s in self.segmentations)

    def sources_of(self, series_uid: str) -> list[Source]:
        return next((sources for row, sources in self.series if row.series_instance_uid == series_uid), [])


@dataclass(frozen=True)
class Entry:
    """One line of the manifest."""

    subject: str
    timepoint_label: str
    days_from_baseline: int | None
    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    modality: str | None
    body_part: str | None
    description: str | None
    slice_thickness: float | None
    sop_instance_uid: str  # empty for a NIfTI volume
    path: str  # relative to the export folder
    sha256: str  # of the exported file
    source_sha256: str  # of the stored file(s) it was made from


@dataclass
class Report:
    written: int = 0
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)  # relative paths, with the reason
    missing: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def _part(text: str | None, fallback: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", text or "").strip("._")
    return cleaned or fallback


def label_of(row: SeriesRow) -> str:
    return row.timepoint_label or "unlabelled"


def series_folder(row: SeriesRow) -> str:
    days = "undated" if row.days_from_baseline is None else str(row.days_from_baseline)
    timepoint = f"{_part(label_of(row), 'unlabelled')}_{days}"
    series = f"{row.series_number if row.series_number is not None else 0}_{_part(row.modality, 'OT')}"
    return f"{_part(row.subject, 'subject')}/{timepoint}/{series}"


def _entry(row: SeriesRow, sop_uid: str, path: str, sha256: str, source_sha256: str) -> Entry:
    return Entry(
        subject=row.subject,
        timepoint_label=label_of(row),
        days_from_baseline=row.days_from_baseline,
        study_instance_uid=row.study_instance_uid,
        series_instance_uid=row.series_instance_uid,
        series_number=row.series_number,
        modality=row.modality,
        body_part=row.body_part,
        description=row.description,
        slice_thickness=row.slice_thickness,
        sop_instance_uid=sop_uid,
        path=path,
        sha256=sha256,
        source_sha256=source_sha256,
    )


def seg_sources(seg: ApprovedSeg) -> list[Source]:
    return [Source(uid, path, sha) for uid, path, sha in seg.seg_files]


def label_volume_path(source: SeriesRow, seg: ApprovedSeg) -> str:
    return f"{series_folder(source)}.seg-{seg.annotation_id}-v{seg.version}.nii.gz"


def plan(selection: Selection, form: Format = Format.DICOM) -> list[Entry]:
    """The manifest the export would write, without the hashes of the files it would make."""
    return _plan_series(selection, form) + _plan_segmentations(selection, form)


def _plan_segmentations(selection: Selection, form: Format) -> list[Entry]:
    entries = []
    for source, seg in selection.segmentations:
        row = seg_row(source, seg)
        if form is Format.NIFTI:
            entries.append(_entry(row, "", label_volume_path(source, seg), "", _combined(seg_sources(seg))))
        else:
            folder = series_folder(row)
            entries += [
                _entry(row, s.sop_instance_uid, f"{folder}/{s.sop_instance_uid}.dcm", "", s.sha256)
                for s in seg_sources(seg)
            ]
    return entries


def _plan_series(selection: Selection, form: Format) -> list[Entry]:
    entries = []
    for row, sources in selection.series:
        folder = series_folder(row)
        if form is Format.NIFTI:
            entries.append(_entry(row, "", f"{folder}.nii.gz", "", _combined(sources)))
        else:
            entries += [
                _entry(row, s.sop_instance_uid, f"{folder}/{s.sop_instance_uid}.dcm", "", s.sha256) for s in sources
            ]
    return entries


def _combined(sources: Sequence[Source]) -> str:
    """One hash over the stored files a volume is made from."""
    return hashlib.sha256("".join(sorted(s.sha256 for s in sources)).encode()).hexdigest()


def _previous(target: Path) -> dict[str, Entry]:
    """The manifest of an earlier run into `target`, by path (empty when there is none or it is unreadable)."""
    try:
        data = json.loads((target / f"{MANIFEST}.json").read_text(encoding="utf-8"))
        return {item["path"]: Entry(**item) for item in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _unchanged(target: Path, entry: Entry, prior: Entry | None, label_kept: bool) -> str | None:
    """The SHA-256 of the file already at `entry.path` if it is what this run would write, else None."""
    path = target / entry.path
    if not path.is_file():
        return None
    if label_kept:  # a plain copy: it must equal the stored file
        expected = entry.source_sha256
    elif prior is not None and (prior.source_sha256, prior.timepoint_label) == (
        entry.source_sha256,
        entry.timepoint_label,
    ):
        expected = prior.sha256
    else:
        return None
    return expected if sha256_of(path) == expected else None


def _write_labelled(target: Path, relative: str, ds: FileDataset, source: Path, label: str) -> str:
    """The stored instance with `label` in Clinical Trial Time Point ID (deferred values streamed)."""
    put_value(ds, "ClinicalTrialTimePointID", label, encoding_of(ds))

    def produce(writer: HashingWriter) -> None:
        write_instance(writer, ds, source)  # type: ignore[arg-type]

    return write_durably(target, relative, produce).sha256


def export(selection: Selection, target: Path, form: Format = Format.DICOM, progress: Progress | None = None) -> Report:
    """Write the selection into `target` (created), then its manifest; see the module's docstring."""
    target.mkdir(parents=True, exist_ok=True)
    previous = _previous(target)
    report = Report(missing=list(selection.missing))
    tell = progress or (lambda _n: None)
    for row, sources in selection.series:
        planned = plan(Selection([(row, sources)]), form)
        if form is Format.NIFTI:
            _export_volume(target, planned[0], sources, previous, report)
            tell(len(sources))
            continue
        for source, entry in zip(sources, planned, strict=True):
            _export_instance(target, entry, source, previous, report)
            tell(1)
    for source_row, seg in selection.segmentations:
        planned = _plan_segmentations(Selection([], segmentations=[(source_row, seg)]), form)
        if form is Format.NIFTI:
            _export_label_volume(target, planned[0], seg, selection.sources_of(seg.source_series_uid), previous, report)
        else:
            for source, entry in zip(seg_sources(seg), planned, strict=True):
                _export_instance(target, entry, source, previous, report)
        tell(len(seg.seg_files))
    write_manifest(target, report.entries, missing=report.missing)
    return report


def _export_label_volume(
    target: Path, entry: Entry, seg: ApprovedSeg, sources: Sequence[Source], previous: dict[str, Entry], report: Report
) -> None:
    prior = _made_before(target, entry, previous)
    if prior is not None:
        report.unchanged += 1
        report.entries.append(prior)
        return
    path = target / entry.path
    try:
        sha = write_label_volume(seg, [s.path for s in sources], path)
    except (OSError, ValueError) as error:
        report.failed.append(f"{entry.path}: {error}")
        return
    report.written += 1
    report.entries.append(Entry(**{**asdict(entry), "sha256": sha}))


def _export_instance(target: Path, entry: Entry, source: Source, previous: dict[str, Entry], report: Report) -> None:
    try:
        ds = read_instance(source.path)  # large values are read when written, from the file
        kept = text_of(ds, _LABEL).strip() == entry.timepoint_label
        if (sha := _unchanged(target, entry, previous.get(entry.path), kept)) is not None:
            report.unchanged += 1
        elif kept:
            sha = copy_durably(target, entry.path, source.path).sha256
            report.written += 1
        else:
            sha = _write_labelled(target, entry.path, ds, source.path, entry.timepoint_label)
            report.written += 1
    except (OSError, ValueError) as error:
        report.failed.append(f"{entry.path}: {type(error).__name__}")
        return
    report.entries.append(Entry(**{**asdict(entry), "sha256": sha}))


def _export_volume(
    target: Path, entry: Entry, sources: Sequence[Source], previous: dict[str, Entry], report: Report
) -> None:
    prior = _made_before(target, entry, previous)
    if prior is not None:
        report.unchanged += 1
        report.entries.append(prior)
        return
    path = target / entry.path
    from bridge.export.nifti import NotAVolume, write_series_volume  # SimpleITK: only when asked for

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        volume = write_series_volume([s.path for s in sources], path)
    except (NotAVolume, OSError) as error:
        report.failed.append(f"{entry.path}: {error}")
        return
    report.written += 1
    report.entries.append(Entry(**{**asdict(entry), "sha256": volume.sha256}))


def _made_before(target: Path, entry: Entry, previous: dict[str, Entry]) -> Entry | None:
    """The earlier run's entry of a volume made from the same stored files, if its file is still intact."""
    prior = previous.get(entry.path)
    path = target / entry.path
    if prior is None or prior.source_sha256 != entry.source_sha256 or not path.is_file():
        return None
    return prior if sha256_of(path) == prior.sha256 else None


def write_manifest(target: Path, entries: Sequence[Entry], *, missing: Sequence[str] = ()) -> None:
    """manifest.json (the files and what is missing) and manifest.csv (the files), each written durably."""
    body = json.dumps({"files": [asdict(e) for e in entries], "missing": list(missing)}, indent=1)
    write_durably(target, f"{MANIFEST}.json", lambda out: out.write(body.encode()))
    text = io.StringIO()
    columns = list(Entry.__dataclass_fields__)
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in asdict(e).values()] for e in entries])
    write_durably(target, f"{MANIFEST}.csv", lambda out: out.write(text.getvalue().encode()))
