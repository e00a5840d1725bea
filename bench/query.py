"""Cohort queries on a big synthetic population, on SQLite and PostgreSQL: p50/p95 through the HTTP API of a
real `pacs-bridge serve`, side by side with the same query run in-process (the SQL alone, the reference).

Population (inserted in bulk through the real schema, not timed): at --scale 1, 10,000 subjects, 40,000
timepoints (days 0, ~56, ~112, ~200; labels baseline/week8/week16/unscheduled), 200,000 series (CT, PT,
MR; chest/abdomen; slice thickness 0.625-5 mm), 2,000,000 instances. Queries: the example (a baseline and
two follow-up chest CTs of 2.5 mm or thinner, subjects), one subject's timeline, CT <= 1.25 mm series
(first page and offset 5000), a saved cohort's page, each cold (right after a write to the index: counted
afresh) and warm (the same page again: the kept tally). Target: HTTP p95 under 50 ms for each.

    .venv/bin/python bench/query.py [--scale 1.0] [--repeat 50] [--only sqlite|postgresql] [--keep] [--reuse DIR]

--reuse DIR keeps the populations (the SQLite file and the name of the PostgreSQL schema) in DIR and runs on
them again next time (after bringing their schema to the newest revision, timed): building them at full scale
takes far longer than measuring.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, clean_env  # noqa: E402
from bridge.cohorts.filters import CohortFilters, Level, Page  # noqa: E402
from bridge.cohorts.query import run  # noqa: E402
from storage import migrate  # noqa: E402
from storage import statistics as planner_statistics  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models.research import Instance, Project, Series, Subject, Timepoint  # noqa: E402
from tests.serve_process import free_port  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DAYS = ((0, "baseline"), (56, "week8"), (112, "week16"), (200, "unscheduled"))
SERIES_KINDS = (("CT", "CHEST"), ("CT", "CHEST"), ("PT", "CHEST"), ("MR", "ABDOMEN"), ("CT", "ABDOMEN"))
THICKNESS = (0.625, 1.25, 2.5, 5.0)
CHUNK = 10_000


def chunks(rows: Iterator[dict[str, object]]) -> Iterator[list[dict[str, object]]]:
    batch: list[dict[str, object]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def populate(url: str, subjects: int) -> float:
    database = Database(url)
    migrate.upgrade(database)
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(1)
    with database.research_engine.begin() as connection:
        connection.execute(insert(Project), [{"id": 1, "name": "lung", "created_at": now}])
        connection.execute(
            insert(Subject),
            [
                {"id": s, "project_id": 1, "subject_code": f"LUNG-{s:05d}", "created_at": now}
                for s in range(1, subjects + 1)
            ],
        )

        def timepoints() -> Iterator[dict[str, object]]:
            for s in range(1, subjects + 1):
                for index, (days, label) in enumerate(DAYS):
                    yield {
                        "id": (s - 1) * 4 + index + 1,
                        "project_id": 1,
                        "subject_id": s,
                        "study_uid": f"2.25.{s}.{index}",
                        "study_date": dt.date(2020, 1, 1) + dt.timedelta(days=s % 700 + days),
                        "days_from_baseline": days,
                        "timepoint_index": index,
                        "label": label,
                        "label_source": "visit",
                        "modalities": "CT,MR,PT",
                        "series_count": 5,
                        "instance_count": 50,
                        "created_at": now,
                    }

        for batch in chunks(timepoints()):
            connection.execute(insert(Timepoint), batch)

        def series() -> Iterator[dict[str, object]]:
            for timepoint in range(1, subjects * 4 + 1):
                subject, index = divmod(timepoint - 1, 4)
                days, label = DAYS[index]
                for number, (modality, body) in enumerate(SERIES_KINDS, start=1):
                    yield {
                        "id": (timepoint - 1) * 5 + number,
                        "project_id": 1,
                        "timepoint_id": timepoint,
                        # the copies of the timepoint's columns that storage.index writes with a series
                        "subject_id": subject + 1,
                        "study_date": dt.date(2020, 1, 1) + dt.timedelta(days=(subject + 1) % 700 + days),
                        "days_from_baseline": days,
                        "timepoint_index": index,
                        "timepoint_label": label,
                        "series_uid": f"2.25.9{timepoint}.{number}",
                        "modality": modality,
                        "body_part": body,
                        "description": f"{body} {modality}",
                        "series_number": number,
                        "manufacturer": rng.choice(("ACME", "Siemens", "GE")),
                        "model": "M1",
                        "slice_thickness": rng.choice(THICKNESS),
                        "pixel_spacing_row": 0.7,
                        "pixel_spacing_col": 0.7,
                        "convolution_kernel": rng.choice(("STANDARD", "LUNG")),
                        "contrast_agent": rng.choice((None, "Iohexol")),
                        "instance_count": 10,
                        "created_at": now,
                    }

        for batch in chunks(series()):
            connection.execute(insert(Series), batch)

        def instances() -> Iterator[dict[str, object]]:
            for series_id in range(1, subjects * 20 + 1):
                for number in range(1, 11):
                    yield {
                        "project_id": 1,
                        "series_id": series_id,
                        "sop_instance_uid": f"2.25.8{series_id}.{number}",
                        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                        "instance_number": number,
                        "path": f"lung/{series_id}/{number}.dcm",
                        "size": 526_000,
                        "sha256": "0" * 64,
                        "source": "bench",
                        "received_at": now,
                    }

        for batch in chunks(instances()):
            connection.execute(insert(Instance), batch)
    settle(database)
    database.dispose()
    return time.monotonic() - started


def settle(database: Database) -> None:
    """What a running service has soon after a bulk write: on PostgreSQL what autovacuum does (the test
    server runs without it: the visibility map that lets an index answer a count without reading the table,
    and statistics); on SQLite the statistics `serve` gathers itself (`storage.statistics`)."""
    if database.research_engine.dialect.name == "postgresql":
        with database.research_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        planner_statistics.refresh(database.research_engine)


EXAMPLE = {"modality": ["CT"], "body_part": ["CHEST"], "slice_thickness_max": 2.5, "min_followups": 2}
THIN_CT = {"modality": ["CT"], "slice_thickness_max": 1.25}


def queries(subjects: int) -> dict[str, tuple[dict[str, object], Page, str | None]]:
    """name -> (filters, page, saved cohort name to run over HTTP instead of the filters)."""
    return {
        "example (subjects)": (EXAMPLE, Page(level=Level.SUBJECT, limit=100), None),
        "one subject's timeline": ({"subject": ["RANDOM"]}, Page(level=Level.TIMEPOINT, limit=100), None),
        "CT <= 1.25 mm series, page 1": (THIN_CT, Page(level=Level.SERIES, limit=100), None),
        "CT <= 1.25 mm series, offset 5000": (THIN_CT, Page(level=Level.SERIES, limit=100, offset=5000), None),
        "saved cohort page (series)": (EXAMPLE, Page(level=Level.SERIES, limit=100), "example"),
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000


def timed(action: Callable[[], object], repeat: int, before: Callable[[], object] | None = None) -> tuple[float, float]:
    """(p50, p95) of `action`; `before` runs ahead of each sample, untimed."""
    for _ in range(3):
        action()
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def data_changer(database: Database) -> Callable[[], object]:
    """A write to the index from another connection (a series' count set to itself): every kept tally is then
    stale, so the next query counts its cohort afresh, as it does after any ingest."""

    def change() -> None:
        with database.research_engine.begin() as connection:
            connection.execute(text("UPDATE series SET instance_count = instance_count WHERE id = 1"))

    return change


def with_subject(filters: dict[str, object], rng: random.Random, subjects: int) -> dict[str, object]:
    if filters.get("subject") == ["RANDOM"]:
        return {**filters, "subject": [f"LUNG-{rng.randint(1, subjects):05d}"]}
    return filters


def start_serve(folder: Path, url: str) -> tuple[subprocess.Popen[bytes], int, str]:
    port, http = free_port(), free_port()
    config = folder / "bridge.toml"
    config.write_text(
        f"""
log_level = "WARNING"
[database]
url = "{url}"
[storage]
store_dir = "{folder / "store"}"
quarantine_dir = "{folder / "quarantine"}"
spool_dir = "{folder / "spool"}"
[security]
secret = "bench-secret-0123456789abcdef0123"
[http]
port = {http}
metrics_dir = "{folder / "metrics"}"
[dimse]
port = {port}
workers = 1
listeners = 1
min_free_space_mb = 0
[projects.lung]
subject_prefix = "LUNG"
"""
    )
    cli = [sys.executable, "-m", "bridge"]
    made = subprocess.run(
        [
            *cli,
            "users",
            "create",
            f"bench-{uuid.uuid4().hex[:8]}",
            "--role",
            "admin",
            "--json",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean_env(),
        check=True,
    )
    token = json.loads(made.stdout)["token"]
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [*cli, "serve", "--config", str(config)], cwd=REPO, env=clean_env(), stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    answer: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=2)
            if answer.status_code == 200:
                wait_until_idle(process.pid)
                return process, http, token
            time.sleep(0.2)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(
        f"serve did not answer /healthz: {answer.text if answer else None}\n{(folder / 'serve.log').read_text()}"
    )


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process and its live children (Linux /proc), in seconds."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def wait_until_idle(pid: int, limit: float = 60) -> None:
    """Let `serve` finish starting (its worker processes import and connect for a few seconds after it first
    answers): measure a warm, idle service, not its start-up."""
    deadline = time.monotonic() + limit
    used = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = cpu_seconds(pid)
        if now - used < 0.05:
            return
        used = now


Figures = tuple[float, float]


def measure(
    database: Database,
    client: httpx.Client,
    filters: dict[str, object],
    page: Page,
    cohort: str | None,
    rng: random.Random,
    subjects: int,
    repeat: int,
) -> tuple[Figures, Figures, Figures]:
    """(p50, p95) in ms of the query run in-process after the data changed, then through the API after the
    data changed (counted afresh: cold), then through the API again on unchanged data (the tally kept: warm)."""

    def direct() -> object:
        with database.reading() as session:
            return run(session, CohortFilters(project="lung", **with_subject(filters, rng, subjects)), page)

    def over_http() -> object:
        params = {**with_subject(filters, rng, subjects), **page.model_dump(exclude_none=True)}
        path = f"/api/v1/projects/lung/cohorts/{cohort}/rows" if cohort else "/api/v1/projects/lung/cohort"
        response = client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    changed = data_changer(database)
    return timed(direct, repeat, changed), timed(over_http, repeat, changed), timed(over_http, repeat)


def bench(name: str, url: str, folder: Path, subjects: int, repeat: int) -> None:
    populated = folder / f"populated-{subjects}"
    if populated.exists():
        database = Database(url)
        started = time.monotonic()
        migrated = not migrate.is_current(database)
        migrate.upgrade(database)
        if migrated:
            settle(database)
        print(
            f"\n{name}: population of {subjects} subjects reused (schema brought up to date in "
            f"{time.monotonic() - started:.1f} s)",
            flush=True,
        )
    else:
        print(f"\n{name}: populating {subjects} subjects ...", flush=True)
        print(f"  population inserted in {populate(url, subjects):.1f} s")
        populated.touch()
        database = Database(url)
    with database.session() as session:
        from bridge.cohorts import saved

        saved.save(session, "example", CohortFilters(project="lung", **EXAMPLE), actor="bench")
    process, port, token = start_serve(folder, url)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
    rng = random.Random(2)
    print(
        f"  {'query':36} {'SQL cold p50/p95':>17} {'HTTP cold p50/p95':>18} {'HTTP warm p50/p95':>18}"
        f" {'cold HTTP/SQL':>13}"
        "  target HTTP p95 < 50 ms (cold, warm)"
    )
    try:
        for label, (filters, page, cohort) in queries(subjects).items():
            sql, cold, warm = measure(database, client, filters, page, cohort, rng, subjects, repeat)
            verdict = ", ".join("meets" if p95 < 50 else "MISSES" for _, p95 in (cold, warm))
            figures = "  ".join(f"{p50:7.1f} / {p95:7.1f}" for p50, p95 in (sql, cold, warm))
            figures += f" {cold[1] / sql[1]:12.2f}x"
            print(f"  {label:36} {figures}  {verdict}", flush=True)
    finally:
        client.close()
        process.terminate()
        process.wait(60)
        database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", type=Path, help="keep the populations in this folder and run on them again")
    args = parser.parse_args()
    subjects = max(10, int(10_000 * args.scale))
    folder = args.reuse.resolve() if args.reuse else Path(tempfile.mkdtemp(prefix="bench-query-"))
    try:
        if args.only in (None, "sqlite"):
            (folder / "sqlite").mkdir(parents=True, exist_ok=True)
            if not (folder / "sqlite" / f"populated-{subjects}").exists():  # a population left half-built
                for leftover in (folder / "sqlite").glob("bridge.db*"):
                    leftover.unlink()
            bench("SQLite", f"sqlite:///{folder / 'sqlite' / 'bridge.db'}", folder / "sqlite", subjects, args.repeat)
        if args.only in (None, "postgresql"):
            (folder / "pg").mkdir(parents=True, exist_ok=True)
            kept = folder / "pg" / "schema"
            schema = kept.read_text().strip() if args.reuse and kept.exists() else f"bench_{uuid.uuid4().hex[:12]}"
            admin = create_engine(POSTGRES)
            with admin.begin() as connection:
                if not (folder / "pg" / f"populated-{subjects}").exists():  # a population left half-built
                    connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            if args.reuse:
                kept.write_text(schema)
            try:
                bench(
                    "PostgreSQL", f"{POSTGRES}?options=-csearch_path%3D{schema}", folder / "pg", subjects, args.repeat
                )
            finally:
                if not args.reuse:
                    with admin.begin() as connection:
                        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
