"""The store service's answer when the spool cannot make an instance durable: a failure, never Success."""

from __future__ import annotations

import errno
from pathlib import Path

from bridge.dicom import status
from bridge.dimse.store import StoreService
from bridge.wiring import Runtime
from storage.spool import Spool, SpoolEntry
from tests import factory


class _FullDisk(Spool):
    """A spool on a disk that fills up during the fsync: simulated, since a test cannot fill a real disk
    safely (and runs as root, so permissions cannot refuse the write either)."""

    def admit(self, partial: Path, *, project: str, source: str, crc: int | None = None) -> SpoolEntry:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_instance_the_spool_cannot_keep_is_not_acknowledged(runtime: Runtime, tmp_path: Path) -> None:
    spool = _FullDisk(tmp_path / "spool")
    store = StoreService(spool=spool, ingest=runtime.ingest("test"), min_free_bytes=0)
    ds = factory.make_ct(factory.make_patient(1))
    (path,) = factory.write_files([ds], tmp_path / "in")
    incoming = spool.receive(path.read_bytes())  # the file as the association writes it
    answer = store.store(
        incoming,
        project="lung",
        calling_ae="MODALITY",
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
    )
    assert answer == status.OUT_OF_RESOURCES
    assert not list((tmp_path / "spool").glob("lung/*/*.dcm"))
