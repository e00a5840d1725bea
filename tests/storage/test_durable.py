"""Durable writes: whole file or none, same content twice is one file, crash leftovers are swept."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.durable import INCOMING, sweep_incoming, write_durably


def test_write_is_durable_hashed_and_idempotent(tmp_path: Path) -> None:
    relative = "lung/2.25.1/2.25.2/2.25.3.dcm"
    first = write_durably(tmp_path, relative, lambda out: out.write(b"DICM" * 100))
    second = write_durably(tmp_path, relative, lambda out: out.write(b"DICM" * 100))
    assert first == second
    assert first.sha256 == hashlib.sha256(b"DICM" * 100).hexdigest() and first.size == 400
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / "lung/2.25.1/2.25.2/2.25.3.dcm"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def explode(out) -> None:  # type: ignore[no-untyped-def]
        out.write(b"half")
        raise OSError("disk went away")

    with pytest.raises(OSError):
        write_durably(tmp_path, "p/a/b/c.dcm", explode)
    assert not (tmp_path / "p/a/b/c.dcm").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_leftovers_of_a_killed_process_are_swept(tmp_path: Path) -> None:
    """A real process is SIGKILLed in the middle of a write; its partial file is removed at start-up."""
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from storage.durable import write_durably\n"
        "def produce(out):\n"
        "    out.write(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"write_durably(Path({str(tmp_path)!r}), 'p/s/e/i.dcm', produce)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2]
    ) as process:
        assert process.stdout is not None and process.stdout.readline().strip() == "writing"
        process.kill()
        process.wait()
    partial = [p for p in (tmp_path / INCOMING).rglob("*") if p.is_file()]
    assert len(partial) == 1 and not (tmp_path / "p/s/e/i.dcm").exists()
    assert sweep_incoming(tmp_path) == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_sweep_spares_files_of_live_processes(tmp_path: Path) -> None:
    import socket

    live = tmp_path / INCOMING / f"{socket.gethostname()}.{os.getppid()}"
    live.mkdir(parents=True)
    (live / "busy.tmp").write_bytes(b"x")
    assert sweep_incoming(tmp_path) == 0 and (live / "busy.tmp").exists()
