"""The store ``bench/dicomweb.py`` loads into both servers: a QIDO population and a WADO corpus, as files.

QIDO population: one tiny instance (16x16) per study, STUDIES_PER_PATIENT studies per patient, dates spread
over ten years, modalities CT/MR/PT (2:2:1). WADO corpus: CT series of SERIES_SIZE slices of 512x512 uint16
(~0.5 MB each), SERIES_PER_STUDY series per study, one study per patient. Both are written into UPLOADERS
folders so that parallel ``storescu +sd +r`` processes can send them (10,000 paths do not fit a command line).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pydicom.uid import generate_uid

UPLOADERS = 4  # parallel storescu processes per server (loading is not timed)
STUDIES_PER_PATIENT = 5
POPULATION_MODALITIES = ("CT", "MR", "PT", "CT", "MR")  # by study number: CT 40 %, MR 40 %, PT 20 %
FIRST_DATE = dt.date(2015, 1, 1)
DATE_SPAN_DAYS = 3650
DATE_STEP = 7919  # a prime: consecutive studies (one patient's) fall far apart, every day gets used
TINY = 16  # rows = columns of a population instance
SERIES_SIZE = 100
SERIES_PER_STUDY = 2
WADO_SIZE = 512
FIRST_WADO_PATIENT = 100_001  # distinct from the population's patients 1..N


@dataclass(frozen=True)
class Store:
    """What was generated: the folders to send, and what a server holding all of it must answer."""

    folders: list[Path]
    population_studies: int
    population_patients: int
    wado_series: int
    wado_instances: int
    wado_bytes: int
    files: int
    description: str

    @property
    def studies(self) -> int:
        """Every study of the store: the population's and the WADO corpus's."""
        return self.population_studies + (self.wado_series + SERIES_PER_STUDY - 1) // SERIES_PER_STUDY


def study_date(number: int) -> dt.date:
    """The date of population study ``number`` (0-based)."""
    return FIRST_DATE + dt.timedelta(days=number * DATE_STEP % DATE_SPAN_DAYS)


def generate(factory: ModuleType, root: Path, studies: int, wado_series: int) -> Store:
    """Write ``studies`` population studies and ``wado_series`` WADO series under ``root``, spread over
    UPLOADERS folders (a study's files stay together)."""
    folders = [root / f"part-{n}" for n in range(UPLOADERS)]
    population_bytes = 0
    for number in range(studies):
        patient = factory.make_patient(number // STUDIES_PER_PATIENT + 1)
        datasets = factory.make_series(
            patient,
            POPULATION_MODALITIES[number % len(POPULATION_MODALITIES)],
            1,
            study_date=study_date(number).strftime("%Y%m%d"),
            accession_number=f"P{number:07d}",
            series_number=1,
            rows=TINY,
            columns=TINY,
        )
        paths = factory.write_files(datasets, folders[number % UPLOADERS])
        population_bytes += sum(path.stat().st_size for path in paths)
    wado_bytes = wado_instances = 0
    study_uid = ""
    for index in range(wado_series):
        number = index % SERIES_PER_STUDY + 1
        if number == 1:
            study_uid = generate_uid()
        datasets = factory.make_series(
            factory.make_patient(FIRST_WADO_PATIENT + index // SERIES_PER_STUDY),
            "CT",
            SERIES_SIZE,
            study_uid=study_uid,
            study_date="20240105",
            accession_number=f"W{index // SERIES_PER_STUDY:07d}",
            series_number=number,
            rows=WADO_SIZE,
            columns=WADO_SIZE,
        )
        paths = factory.write_files(datasets, folders[(index // SERIES_PER_STUDY) % UPLOADERS])
        wado_bytes += sum(path.stat().st_size for path in paths)
        wado_instances += len(paths)
    patients = (studies + STUDIES_PER_PATIENT - 1) // STUDIES_PER_PATIENT
    wado_studies = (wado_series + SERIES_PER_STUDY - 1) // SERIES_PER_STUDY
    description = (
        f"QIDO population: {studies} studies of one {TINY}x{TINY} instance ({population_bytes / 1e6:.1f} MB), "
        f"{patients} patients x {STUDIES_PER_PATIENT} studies, dates {FIRST_DATE:%Y}-"
        f"{FIRST_DATE.year + DATE_SPAN_DAYS // 365 - 1}, modalities CT/MR/PT 2:2:1\n"
        f"WADO corpus: {wado_instances} CT slices of {WADO_SIZE}x{WADO_SIZE} uint16 "
        f"({wado_bytes / 1e6:.1f} MB, {wado_bytes / max(wado_instances, 1) / 1e6:.2f} MB each) in {wado_series} "
        f"series of {SERIES_SIZE}, {wado_studies} studies (up to {SERIES_PER_STUDY} series each)"
    )
    return Store(
        folders=[folder for folder in folders if folder.exists()],
        population_studies=studies,
        population_patients=patients,
        wado_series=wado_series,
        wado_instances=wado_instances,
        wado_bytes=wado_bytes,
        files=studies + wado_instances,
        description=description,
    )


def send(store: Store, port: int, called: str, calling: str, logs: Path) -> float:
    """Send every folder of ``store`` with one ``storescu +sd +r -R`` each, all at once; the seconds taken.

    ``TCP_NODELAY=1``: Debian's DCMTK leaves Nagle's algorithm on otherwise and every C-STORE stalls.
    Raises RuntimeError with the output of any ``storescu`` that fails.
    """
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    start = time.perf_counter()
    for index, folder in enumerate(store.folders):
        log = logs / f"storescu-{called}-{index}.log"
        command = ["storescu", "+sd", "+r", "-R", "-aet", calling, "-aec", called, "127.0.0.1", str(port), str(folder)]
        with log.open("wb") as out:
            running.append((subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env), log))
    failures = []
    for process, log in running:
        if process.wait() != 0:
            failures.append(f"--- {log.name}: exit status {process.returncode}\n{log.read_text(errors='replace')}")
    if failures:
        raise RuntimeError(f"storescu to {called} failed\n" + "\n".join(failures))
    return time.perf_counter() - start
