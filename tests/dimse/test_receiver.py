"""The receiver's answer when the spool cannot make an instance durable: a failure, never Success."""

from __future__ import annotations

import errno
from pathlib import Path

from bridge.dimse import status
from bridge.dimse.receiver import StoreReceiver
from bridge.runtime import Runtime
from bridge.spool import Spool, SpoolEntry
from tests import factory


class _FullDisk(Spool):
    """A spool on a disk that fills up during the fsync: simulated, since a test cannot fill a real disk
    safely (and runs as root, so permissions cannot refuse the write either)."""

    def admit(self, partial: Path, *, project: str, source: str, crc: int | None = None) -> SpoolEntry:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_instance_the_spool_cannot_keep_is_not_acknowledged(runtime: Runtime, tmp_path: Path) -> None:
    spool = _FullDisk(tmp_path / "spool")
    receiver = StoreReceiver(spool=spool, ingest=runtime.ingest, min_free_bytes=0)
    ds = factory.make_ct(factory.make_patient(1))
    (path,) = factory.write_files([ds], spool.incoming)
    answer = receiver.store(
        project="lung",
        calling_ae="MODALITY",
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
    )
    assert answer == status.OUT_OF_RESOURCES
    assert not list((tmp_path / "spool").glob("lung/*/*.dcm"))
