"""A subject's timeline: one row per timepoint (label, days from baseline, modalities), its series with a
thumbnail and a link to the viewer, its annotations with their review state, and a plot of the annotated
volume per timepoint (days on the x axis) once there are segmentations."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from bridge.annotations.listing import listing
from bridge.annotations.records import AnnotationView
from bridge.api.auth import database
from bridge.cohorts.filters import CohortFilters, Level, Page
from bridge.cohorts.query import SeriesRow, TimepointRow, run
from bridge.console.pages import render
from bridge.console.session import Reader
from bridge.console.thumbnails import NoThumbnail, thumbnail
from bridge.search.locate import locate

router = APIRouter(include_in_schema=False)
PLOT_WIDTH, PLOT_HEIGHT, MARGIN = 640, 220, 40


@dataclass
class Point:
    days: int
    millilitres: float
    x: float = 0
    y: float = 0


def voxel_millilitres(series: SeriesRow) -> float | None:
    """One voxel's volume, from the index (pixel spacing x slice thickness); None when it lacks them."""
    sizes = (series.pixel_spacing_row, series.pixel_spacing_col, series.slice_thickness)
    if any(size is None for size in sizes):
        return None
    row, column, thickness = (float(size) for size in sizes)  # type: ignore[arg-type]
    return row * column * thickness / 1000


def annotated_volumes(annotations: list[AnnotationView], series: dict[str, SeriesRow]) -> list[Point]:
    """Per timepoint, the volume of its current annotations' segments (the approved ones when it has any:
    the reviewed figure, else every annotator's, averaged), in mL."""
    by_days: dict[int, list[AnnotationView]] = defaultdict(list)
    for view in annotations:
        if view.days_from_baseline is not None and view.series_instance_uid in series:
            by_days[view.days_from_baseline].append(view)
    points = []
    for days, views in sorted(by_days.items()):
        chosen = [v for v in views if v.state == "approved"] or views
        volumes = []
        for view in chosen:
            voxel = voxel_millilitres(series[view.series_instance_uid])
            current = next((v for v in view.versions if v.version == view.version), None)
            if voxel is not None and current is not None:
                volumes.append(sum(segment.voxels for segment in current.segments) * voxel)
        if volumes:
            points.append(Point(days=days, millilitres=sum(volumes) / len(volumes)))
    return _placed(points)


def _placed(points: list[Point]) -> list[Point]:
    """Each point's place in the plot's SVG."""
    if not points:
        return points
    span = max(max(p.days for p in points), 1)
    top = max(max(p.millilitres for p in points), 1e-6)
    for p in points:
        p.x = MARGIN + (PLOT_WIDTH - 2 * MARGIN) * p.days / span
        p.y = PLOT_HEIGHT - MARGIN - (PLOT_HEIGHT - 2 * MARGIN) * p.millilitres / top
    return points


@router.get("/projects/{project}/subjects/{subject}")
def timeline(project: str, subject: str, request: Request, who: Reader) -> Response:
    filters = CohortFilters(project=project, subject=[subject])
    db = database(request)
    with db.reading() as session:
        timepoints = run(session, filters, Page(level=Level.TIMEPOINT, limit=10000)).rows
        series = run(session, filters, Page(level=Level.SERIES, limit=100000)).rows
    if not timepoints:
        raise HTTPException(404, "no such subject in this project")
    by_study: dict[str, list[SeriesRow]] = defaultdict(list)
    for row in series:
        assert isinstance(row, SeriesRow)
        by_study[row.study_instance_uid].append(row)
    annotations = listing(db, project=project, subject=subject, full=True)
    by_series: dict[str, list[AnnotationView]] = defaultdict(list)
    for view in annotations:
        by_series[view.series_instance_uid].append(view)
    series_by_uid = {row.series_instance_uid: row for rows in by_study.values() for row in rows}
    points = annotated_volumes(annotations, series_by_uid)
    return render(
        request,
        "subject.html",
        title=f"{subject} · {project}",
        section="projects",
        project=project,
        subject=subject,
        timepoints=[t for t in timepoints if isinstance(t, TimepointRow)],
        by_study=by_study,
        by_series=by_series,
        points=points,
        polyline=" ".join(f"{p.x:.1f},{p.y:.1f}" for p in points),
        plot={"width": PLOT_WIDTH, "height": PLOT_HEIGHT, "margin": MARGIN},
        top=max((p.millilitres for p in points), default=0),
        span=max((p.days for p in points), default=0),
        all_timepoints=f"/viewer/subject?{urlencode({'project': project, 'subject': subject})}",
    )


@router.get("/projects/{project}/series/{series_uid}/thumbnail.png")
async def series_thumbnail(project: str, series_uid: str, request: Request, who: Reader) -> Response:
    """The series' middle slice as a PNG (404 when the series has no drawable image)."""
    with database(request).reading() as session:
        found = locate(session, projects=[project], series_uid=series_uid)
    if not found:
        raise HTTPException(404, "no such series in this project")
    store: Path = request.app.state.settings.storage.store_dir
    middle = found[len(found) // 2]
    try:
        png = await run_in_threadpool(thumbnail, store / middle.path)
    except NoThumbnail as error:
        raise HTTPException(404, str(error)) from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
