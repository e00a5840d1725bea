"""The spool: admitted entries are claimed once, given back on failure, and recovered from dead claimants."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from bridge.spool import CLAIMED, Spool


def admitted(spool: Spool, count: int) -> list[Path]:
    paths = []
    for n in range(count):
        partial = spool.incoming / f"part{n}.dcm"
        partial.write_bytes(b"DICM" + bytes([n]))
        paths.append(spool.admit(partial, project="lung", source="c-store:PACS 1").path)
    return paths


def test_admit_claim_done_and_unclaim(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    admitted(spool, 3)
    assert spool.backlog() == 3
    first = spool.claim(2)
    assert len(first) == 2 and spool.backlog() == 1
    assert {e.project for e in first} == {"lung"} and {e.source for e in first} == {"c-store:PACS_1"}
    assert spool.claim(5)[0].path.read_bytes() == b"DICM\x02"  # oldest first, each entry once
    spool.done(first[0])
    spool.unclaim(first[1])
    assert spool.backlog() == 1 and not first[0].path.exists()


def test_claims_of_a_dead_process_go_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    admitted(spool, 2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = tmp_path / CLAIMED / f"{socket.gethostname()}.{dead.stdout.strip()}"
    for entry in spool.entries():
        target = owner / entry.project / entry.source / entry.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        entry.path.rename(target)
    assert spool.backlog() == 0
    assert spool.release_dead_claims() == 2
    assert spool.backlog() == 2 and not owner.exists()


def test_claims_of_a_killed_process_not_yet_reaped_go_back(tmp_path: Path) -> None:
    """A worker SIGKILLed with its parent is a zombie until someone reaps it; its claims are released anyway."""
    spool = Spool(tmp_path)
    admitted(spool, 1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = tmp_path / CLAIMED / f"{socket.gethostname()}.{child.pid}"
    entry = next(spool.entries())
    (owner / entry.project / entry.source).mkdir(parents=True)
    entry.path.rename(owner / entry.project / entry.source / entry.path.name)
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        assert spool.release_dead_claims() == 1  # exited, not reaped: a zombie holds no claim
        assert spool.backlog() == 1
    finally:
        child.wait()
