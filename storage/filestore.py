"""The de-identified store: instances laid out as project/study/series/instance.dcm, pseudo UIDs only.

Files of an ingest batch (`FileBatch`) are written by the caller, fsynced and renamed on a background thread
while the caller prepares the next file, and each folder is synced once for the batch (see `durable` for the
write itself). Rows may point at a file only once its batch is finished.
"""

from __future__ import annotations

import multiprocessing.util
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from storage.durable import HashingWriter, StoredFile, fsync_folder, new_temporary, settle, write_temporary


class _SpareFiles:
    """Empty temporary files made ahead on the settler threads. Creating a file waits while the filesystem
    commits another file's fsync (ext4's journal, ~0.1-0.4 ms each time with fsyncs this frequent), and the
    thread that de-identifies should not wait. They are removed when the process exits (a killed one's are
    swept at the next start-up)."""

    _AHEAD = 4

    def __init__(self, root: Path) -> None:
        self._root = root
        self._ready: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        # removed when this object goes, or at exit: in the main process (atexit) and in multiprocessing's
        # workers (which skip atexit); the callback holds the queue, not this object
        multiprocessing.util.Finalize(self, _discard, args=(self._ready,), exitpriority=0)

    def take(self) -> tuple[int, str]:
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return new_temporary(self._root)

    def make(self) -> None:
        if self._ready.qsize() < self._AHEAD:
            self._ready.put(new_temporary(self._root))


def _discard(ready: queue.SimpleQueue[tuple[int, str]]) -> None:
    while True:
        try:
            fd, name = ready.get_nowait()
        except queue.Empty:
            return
        os.close(fd)
        Path(name).unlink(missing_ok=True)


class FileBatch:
    """The files behind one batch of rows. Each is written by the caller; its fsync and rename into place
    run on a background thread (the disk waits while the caller de-identifies the next one). `finish()`
    waits for them and syncs each folder once: only then may rows point at the files."""

    def __init__(self, root: Path, settler: ThreadPoolExecutor, spares: _SpareFiles) -> None:
        self._root = root
        self._settler = settler
        self._spares = spares
        self._pending: list[tuple[str, Future[None]]] = []

    def write(self, relative_path: str, produce: Callable[[HashingWriter], None]) -> StoredFile:
        """Write the file (its bytes and hash are final on return; it is durable after `finish()`)."""
        raw, temp_name, stored = write_temporary(self._root, relative_path, produce, self._spares.take())
        self._pending.append((relative_path, self._settler.submit(settle, raw, temp_name, self._root / relative_path)))
        self._settler.submit(self._spares.make)  # a failure here only means the next file is created in line
        return stored

    def finish(self) -> dict[str, OSError]:
        """Wait until every file is in place and its folder synced; the files that are not, with why."""
        failed: dict[str, OSError] = {}
        for relative_path, settled in self._pending:
            try:
                settled.result()
            except OSError as error:
                failed[relative_path] = error
        in_place = [relative_path for relative_path, _ in self._pending if relative_path not in failed]
        unsynced: dict[str, OSError] = {}
        for folder in dict.fromkeys(relative_path.rpartition("/")[0] for relative_path in in_place):
            try:
                fsync_folder(self._root / folder)
            except OSError as error:
                unsynced[folder] = error
        for relative_path in in_place:
            if (problem := unsynced.get(relative_path.rpartition("/")[0])) is not None:
                failed[relative_path] = problem
        self._pending.clear()
        return failed


class FileStore:
    """De-identified instances, laid out as project/study/series/instance.dcm with pseudo UIDs only."""

    _SETTLERS = 2  # concurrent fsyncs: the filesystem commits them together

    def __init__(self, root: Path) -> None:
        self.root = root
        self._settler: ThreadPoolExecutor | None = None
        self._settler_lock = threading.Lock()
        self._spares = _SpareFiles(root)

    @staticmethod
    def relative_path(project: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        return f"{project}/{study_uid}/{series_uid}/{sop_instance_uid}.dcm"

    def batch(self) -> FileBatch:
        """Several files made durable together: see `FileBatch`."""
        with self._settler_lock:  # created on first use, in the process that uses it (workers are forked)
            if self._settler is None:
                self._settler = ThreadPoolExecutor(self._SETTLERS, thread_name_prefix="store-fsync")
        return FileBatch(self.root, self._settler, self._spares)

    def path(self, relative_path: str) -> Path:
        return self.root / relative_path
