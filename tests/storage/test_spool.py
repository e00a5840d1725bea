"""The spool: admitted entries are claimed once, given back on failure, and recovered from dead claimants."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

from storage.durable import INCOMING
from storage.spool import CLAIMED, PREAMBLE, Spool


def admitted(spool: Spool, count: int) -> list[Path]:
    paths = []
    for n in range(count):
        partial = spool.incoming / f"part{n}.dcm"
        partial.write_bytes(b"DICM" + bytes([n]))
        paths.append(spool.admit(partial, project="lung", source="c-store:PACS 1").path)
    return paths


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


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
    owner = tmp_path / CLAIMED / f"{socket.gethostname()}.{dead_pid()}"
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


def received(folder: Path, name: str, body: bytes) -> tuple[Path, int]:
    """A file as the listener writes it: a zero preamble, then `body`; and the CRC-32 it computes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(bytes(PREAMBLE) + body)
    return path, zlib.crc32(body)


def test_a_file_admitted_with_its_crc_carries_a_marker_in_its_preamble(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    body = b"DICM" + bytes(range(256)) * 40
    partial, crc = received(spool.incoming, "a.part", body)
    entry = spool.admit(partial, project="lung", source="c-store:PACS 1", crc=crc)
    data = entry.path.read_bytes()
    assert data[PREAMBLE:] == body and data[:PREAMBLE] != bytes(PREAMBLE)
    assert b"lung/c-store:PACS_1" in data[:PREAMBLE]
    # names too long for the marker: admitted the other way (folder synced), the preamble left as it was
    partial, crc = received(spool.incoming, "b.part", body)
    entry = spool.admit(partial, project="lung", source="x" * 120, crc=crc)
    assert entry.path.read_bytes() == bytes(PREAMBLE) + body and spool.backlog() == 2


def test_recovery_keeps_what_was_received_whole_and_removes_the_rest(tmp_path: Path) -> None:
    """A crash can lose the rename of a file already fsynced and acknowledged: it is found in `.incoming/`
    and checked against its marker. A torn or cut marked file, and an unmarked one, were never answered."""
    spool = Spool(tmp_path)
    body = b"DICM" + bytes(range(256)) * 4000
    whole, torn, cut = [
        spool.admit(received(spool.incoming, f"{n}.part", body)[0], project="lung", source="c-store:PACS", crc=crc)
        for n, crc in enumerate([zlib.crc32(body)] * 3)
    ]
    dead = tmp_path / INCOMING / f"{socket.gethostname()}.{dead_pid()}"
    dead.mkdir(parents=True)
    for entry in (whole, torn, cut):
        entry.path.rename(dead / entry.path.name)  # the renames were lost
    data = bytearray((dead / torn.path.name).read_bytes())
    data[50_000] ^= 0xFF
    (dead / torn.path.name).write_bytes(bytes(data))
    (dead / cut.path.name).write_bytes(data[:-100])
    received(dead, "partial.part", body[:1000])
    live = spool.incoming / "in-progress.part"  # this process is alive: its files are not touched
    live.write_bytes(b"partial")
    assert spool.backlog() == 0

    assert spool.recover(at_start=False) == (1, 3)

    (recovered,) = list(spool.entries())
    assert recovered.project == "lung" and recovered.source == "c-store:PACS"
    assert recovered.path.read_bytes()[PREAMBLE:] == body
    assert not dead.exists() and live.exists()
    assert spool.recover(at_start=True) == (0, 1) and not live.exists()  # at start-up: an earlier same pid's
