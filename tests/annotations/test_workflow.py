"""Annotations end to end in one process, on SQLite and PostgreSQL: a mask imported onto an indexed series
(and refused on the wrong one, naming the right one), reviewed through the project's stages with the role
rules, delivered by the outbox worker into the bridge's own store as a SEG that dciodvfy accepts and reads
back voxel-identical; SEGs arriving by intake become annotations, or are refused when they point elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from sqlmodel import select

from bridge.access.roles import Role
from bridge.access.users import Principal, create, find_principal
from bridge.annotations.geometry import Grid, series_geometry
from bridge.annotations.review import review
from bridge.annotations.service import AnnotationService
from bridge.delivery.worker import DeliveryWorker
from bridge.errors import AnnotationError, Forbidden
from bridge.ingest.service import Outcome
from bridge.settings import Settings
from bridge.wiring import Runtime
from storage.models.annotations import Annotation, Delivery
from storage.models.research import AuditEvent, Instance, QuarantineItem, Series
from tests import factory
from tests.annotations.drawn import nifti_on_grid, viewer_seg
from tests.conftest import dciodvfy_errors, make_settings

STAGES = ["annotate", "review", "final"]


@dataclass
class World:
    settings: Settings
    runtime: Runtime
    service: AnnotationService
    ct: str  # pseudo series UIDs
    mr: str
    users: dict[str, Principal]
    tmp: Path


def _write(tmp: Path, datasets: list[pydicom.Dataset], name: str) -> list[Path]:
    folder = tmp / name
    folder.mkdir()
    paths = []
    for number, ds in enumerate(datasets):
        path = folder / f"{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    project = {
        "subject_prefix": "LUNG",
        "review": {"stages": STAGES},
        "labels": [{"label": "Tumor", "colour": [255, 0, 0]}],
    }
    settings = make_settings(tmp_path, database_url, lung=project)
    runtime = Runtime.start(settings)
    patient = factory.make_patient(1)
    ct = factory.make_series(patient, "CT", 6, rows=32, columns=24, series_description="CT chest")
    mr = factory.make_series(patient, "MR", 4, study_uid=ct[0].StudyInstanceUID, rows=16, columns=16, series_number=2)
    ingest = runtime.ingest("test")
    for path in _write(tmp_path, ct, "ct") + _write(tmp_path, mr, "mr"):
        assert ingest.ingest(path, project="lung", source="import").outcome is Outcome.STORED
    users = {}
    with runtime.database.session() as session:
        for name, role in (("alice", Role.ANNOTATOR), ("rita", Role.REVIEWER), ("rob", Role.REVIEWER)):
            create(session, name, role, None, actor="test")
        for name in ("alice", "rita", "rob"):
            found = find_principal(session, name)
            assert found is not None
            users[name] = found
        uids = {s.modality: s.series_uid for s in session.exec(select(Series))}
    try:
        yield World(settings, runtime, runtime.annotations(), uids["CT"], uids["MR"], users, tmp_path)
    finally:
        runtime.close()


def _geometry(world: World, series_uid: str) -> tuple[Grid, list[pydicom.Dataset]]:
    with world.runtime.database.reading() as session:
        series = session.exec(select(Series).where(Series.series_uid == series_uid)).one()
        paths = session.exec(select(Instance.path).where(Instance.series_id == series.id)).all()
    datasets = [pydicom.dcmread(world.settings.storage.store_dir / p) for p in paths]
    return series_geometry(datasets).grid, datasets


def _blob(grid: Grid) -> np.ndarray:
    """A label volume (z, y, x) on the grid: value 1 on slices 1-3, nothing elsewhere."""
    x, y, z = grid.size
    labels = np.zeros((z, y, x), dtype=np.uint8)
    labels[1:4, y // 4 : y // 2, x // 4 : x // 2] = 1
    return labels


def test_a_mask_is_imported_reviewed_through_the_stages_and_delivered_as_a_seg(world: World) -> None:
    grid, _ = _geometry(world, world.ct)
    labels = _blob(grid)
    mask = nifti_on_grid(grid, labels, world.tmp / "tumor.nii.gz")
    view = world.service.import_mask(series_uid=world.ct, path=mask, labels=["Tumor"], annotator="alice", actor="t")
    assert (view.state, view.stage, view.version, view.labels) == ("in-review", "review", 1, ["Tumor"])
    assert view.subject == "LUNG-0001" and view.series_instance_uid == world.ct

    database, projects = world.runtime.database, dict(world.settings.projects)
    with pytest.raises(Forbidden, match="annotators cannot approve"):
        review(database, projects, annotation_id=view.id, approve=True, reviewer=world.users["alice"], comment=None)
    with pytest.raises(AnnotationError, match="needs a comment"):
        review(database, projects, annotation_id=view.id, approve=False, reviewer=world.users["rita"], comment="")
    rejected = review(
        database, projects, annotation_id=view.id, approve=False, reviewer=world.users["rita"], comment="too small"
    )
    assert (rejected.state, rejected.stage) == ("rejected", "annotate")
    labels[4, 2:6, 2:6] = 1  # the correction: one more slice
    corrected = nifti_on_grid(grid, labels, world.tmp / "tumor-v2.nii.gz")
    again = world.service.import_mask(
        series_uid=world.ct, path=corrected, labels=["Tumor"], annotator="alice", actor="t", revise=view.id
    )
    assert (again.version, again.state, again.stage) == (2, "in-review", "review")
    moved = review(database, projects, annotation_id=view.id, approve=True, reviewer=world.users["rita"], comment=None)
    assert (moved.stage, moved.state) == ("final", "in-review")
    final = review(database, projects, annotation_id=view.id, approve=True, reviewer=world.users["rob"], comment="ok")
    assert final.state == "approved"
    assert [(d.stage, d.decision, d.reviewer, d.version) for d in final.decisions] == [
        ("review", "reject", "rita", 1),
        ("review", "approve", "rita", 2),
        ("final", "approve", "rob", 2),
    ]
    assert [(d.destination, d.state) for d in final.deliveries] == [("research", "pending")]

    worker = DeliveryWorker(world.settings, world.runtime)
    assert worker.run_once() is True
    assert worker.run_once() is False  # nothing else due
    with database.reading() as session:
        delivery = session.exec(select(Delivery)).one()
        assert delivery.state == "delivered" and delivery.seg_series_uid
        seg_series = session.exec(select(Series).where(Series.series_uid == delivery.seg_series_uid)).one()
        assert seg_series.modality == "SEG"
        seg_path = session.exec(select(Instance.path).where(Instance.series_id == seg_series.id)).one()
        assert len(session.exec(select(Annotation)).all()) == 1  # the bridge's own SEG is not an annotation again
    stored = world.settings.storage.store_dir / seg_path
    assert dciodvfy_errors(stored) == []
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(stored))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == world.ct
    assert str(seg.SeriesDescription).startswith("Tumor by alice v2")
    _, sources = _geometry(world, world.ct)
    order = [str(ds.SOPInstanceUID) for ds in sorted(sources, key=lambda ds: float(ds.ImagePositionPatient[2]))]
    read = seg.get_pixels_by_source_instance(order, segment_numbers=[1], assert_missing_frames_are_empty=True)
    assert np.array_equal(read[..., 0].astype(bool), labels.astype(bool))


def test_a_mask_of_another_series_is_refused_naming_the_series_it_fits(world: World) -> None:
    mr_grid, _ = _geometry(world, world.mr)
    mask = nifti_on_grid(mr_grid, _blob(mr_grid)[:, :, :], world.tmp / "mr-mask.nii.gz")
    with pytest.raises(AnnotationError) as refused:
        world.service.import_mask(series_uid=world.ct, path=mask, labels=["Tumor"], annotator="alice", actor="t")
    message = str(refused.value)
    assert f"it fits series {world.mr}" in message and "size" in message
    bare = world.tmp / "wrong.npy"
    np.save(bare, np.zeros((3, 3, 3), dtype=np.uint8))
    with pytest.raises(AnnotationError, match="must be 6x32x24"):
        world.service.import_mask(series_uid=world.ct, path=bare, labels=["Tumor"], annotator="alice", actor="t")
    with world.runtime.database.reading() as session:
        assert session.exec(select(Annotation)).all() == []


def test_a_seg_sent_back_by_a_viewer_becomes_an_annotation_and_one_pointing_elsewhere_is_refused(
    world: World,
) -> None:
    grid, sources = _geometry(world, world.ct)
    sources.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    labels = _blob(grid).astype(bool)
    seg = viewer_seg(sources, labels, label="Tumor", series_number=77, model="cornerstone")
    path = world.tmp / "from-ohif.dcm"
    seg.save_as(path, enforce_file_format=True)
    ingest = world.runtime.ingest("test")
    assert ingest.ingest(path, project="lung", source="stow-rs:alice").outcome is Outcome.STORED
    with world.runtime.database.reading() as session:
        annotation = session.exec(select(Annotation)).one()
        assert (annotation.annotator, annotation.state) == ("alice", "in-review")
        ct_series = session.exec(select(Series).where(Series.series_uid == world.ct)).one()
        assert annotation.series_id == ct_series.id  # its references were kept: the same series, not a new one
        assert len(session.exec(select(Series)).all()) == 3  # CT, MR and the SEG, in the same study
    with world.runtime.database.reading() as session:
        masks, segments = world.service.masks_of(session, annotation.id or 0)
    assert np.array_equal(masks[0], labels) and segments[0].label == "Tumor"
    # sent again: still one annotation
    assert ingest.ingest(path, project="lung", source="stow-rs:alice").outcome is Outcome.DUPLICATE

    # a SEG that names the MR series but references the CT's instances
    _, mr_sources = _geometry(world, world.mr)
    wrong = viewer_seg(sources, labels, label="Tumor", series_number=77, model="cornerstone")
    wrong.ReferencedSeriesSequence[0].SeriesInstanceUID = mr_sources[0].SeriesInstanceUID
    bad = world.tmp / "wrong.dcm"
    wrong.save_as(bad, enforce_file_format=True)
    result = ingest.ingest(bad, project="lung", source="c-store:SLICER")
    assert result.outcome is Outcome.QUARANTINED
    assert f"names series {world.mr}" in (result.reason or "") and world.ct in (result.reason or "")
    with world.runtime.database.reading() as session:
        assert len(session.exec(select(Annotation)).all()) == 1
        assert len(session.exec(select(QuarantineItem)).all()) == 1
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "instance.quarantined")).first()


def _approve(world: World, view_id: int) -> None:
    database, projects = world.runtime.database, dict(world.settings.projects)
    for reviewer in ("rita", "rob"):
        review(database, projects, annotation_id=view_id, approve=True, reviewer=world.users[reviewer], comment=None)
    assert DeliveryWorker(world.settings, world.runtime).run_once() is True


def test_an_export_carries_the_approved_segs_and_their_masks_as_label_volumes(world: World) -> None:
    from bridge.cohorts import saved
    from bridge.cohorts.filters import CohortFilters
    from bridge.export import selection
    from bridge.export.folder import export
    from bridge.export.formats import Format

    grid, _ = _geometry(world, world.ct)
    labels = _blob(grid)
    mask = nifti_on_grid(grid, labels, world.tmp / "tumor.nii.gz")
    view = world.service.import_mask(series_uid=world.ct, path=mask, labels=["Tumor"], annotator="alice", actor="t")
    _approve(world, view.id)
    with world.runtime.database.session() as session:
        saved.save(session, "ct", CohortFilters(project="lung", modality=["CT"]), actor="t")
    storage = world.settings.storage
    with world.runtime.database.reading() as session:
        chosen = selection.of_cohort(
            session, CohortFilters(project="lung", modality=["CT"]), storage.store_dir, storage.annotations_dir
        )
    dicom = export(chosen, world.tmp / "out-dicom")
    segs = [e for e in dicom.entries if e.modality == "SEG"]
    assert len(segs) == 1 and segs[0].path.startswith("LUNG-0001/") and "/9001_SEG/" in segs[0].path
    assert dciodvfy_errors(world.tmp / "out-dicom" / segs[0].path) == []
    assert len([e for e in dicom.entries if e.modality == "CT"]) == 6
    nifti = export(chosen, world.tmp / "out-nifti", Format.NIFTI)
    volumes = [e for e in nifti.entries if e.path.endswith(f".seg-{view.id}-v1.nii.gz")]
    assert len(volumes) == 1, [e.path for e in nifti.entries]
    written = sitk.ReadImage(str(world.tmp / "out-nifti" / volumes[0].path))
    assert np.array_equal(sitk.GetArrayFromImage(written), labels)
    ct_volume = sitk.ReadImage(str(world.tmp / "out-nifti" / next(e.path for e in nifti.entries if e.modality == "CT")))
    assert np.allclose(written.GetOrigin(), ct_volume.GetOrigin()) and np.allclose(
        written.GetSpacing(), ct_volume.GetSpacing()
    )
    again = export(chosen, world.tmp / "out-nifti", Format.NIFTI)
    assert again.written == 0  # resumable: nothing differs


def test_the_cohort_query_takes_approved_segmentations(world: World) -> None:
    from bridge.cohorts import query
    from bridge.cohorts.filters import CohortFilters

    def series(**filters: object) -> list[str]:
        with world.runtime.database.reading() as session:
            result = query.run(session, CohortFilters(project="lung", **filters))  # type: ignore[arg-type]
        return [row.series_instance_uid for row in result.rows]  # type: ignore[union-attr]

    grid, _ = _geometry(world, world.ct)
    mask = nifti_on_grid(grid, _blob(grid), world.tmp / "tumor.nii.gz")
    view = world.service.import_mask(series_uid=world.ct, path=mask, labels=["Tumor"], annotator="alice", actor="t")
    assert series(segmented=["tumor"]) == [] and series(segmented=["Tumor"], segmented_stage="review") == []
    database, projects = world.runtime.database, dict(world.settings.projects)
    review(database, projects, annotation_id=view.id, approve=True, reviewer=world.users["rita"], comment=None)
    assert series(segmented=["Tumor"], segmented_stage="review") == [world.ct]
    assert series(segmented=["Tumor"]) == []  # not final yet
    review(database, projects, annotation_id=view.id, approve=True, reviewer=world.users["rob"], comment=None)
    assert series(segmented=["TUMOR"]) == [world.ct]
    assert series(segmented=["Node"]) == [] and series(segmented=["Tum"]) == []
    assert series(segmented=["Tumor"], modality=["MR"]) == []
