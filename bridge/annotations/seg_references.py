"""The references of a DICOM SEG checked against the index before the SEG is acknowledged: every referenced
instance must be indexed, all of them in the one series its ReferencedSeriesSequence names. Light on
imports: every ingest worker loads it."""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from bridge.errors import Refused

SEG_SOP_CLASS = str(SegmentationStorage)
DELIVERY_SOURCE = "delivery"  # the bridge's own SEGs going into its store: not annotations again
# instance UID -> (series UID, how to name that series)
SeriesOf = Callable[[list[str]], dict[str, tuple[str, str]]]


def is_seg(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def references(ds: Dataset) -> tuple[set[str], set[str]]:
    """The series a SEG names (ReferencedSeriesSequence) and every instance it references (there and per
    frame), as received."""
    named: set[str] = set()
    instances: set[str] = set()
    for item in ds.get("ReferencedSeriesSequence", []):
        named.add(str(item.get("SeriesInstanceUID", "")))
        instances.update(str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedInstanceSequence", []))
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in frame.get("DerivationImageSequence", []):
            instances.update(str(src.ReferencedSOPInstanceUID) for src in derivation.get("SourceImageSequence", []))
    return named - {""}, instances


def check_references(
    ds: Dataset, *, stored_uid: Callable[[str], str], series_of: SeriesOf, require_indexed: bool = True
) -> None:
    """Refuse (Refused, a mismatch) a SEG whose references are not all indexed instances of the one series it
    names. UIDs are compared as stored (`stored_uid` maps a received UID to its research-side UID).
    `require_indexed` False (a SEG from the hospital side, whose images may still be on their way): only
    references indexed in another series refuse it."""
    named_received, instances_received = references(ds)
    if len(named_received) != 1:
        count = len(named_received)
        raise Refused(f"a SEG must name exactly one series in ReferencedSeriesSequence, not {count}", mismatch=True)
    named = stored_uid(next(iter(named_received)))
    instances = sorted({stored_uid(uid) for uid in instances_received})
    if not instances:
        raise Refused("the SEG references no source instance", mismatch=True)
    found = series_of(instances)
    missing = [uid for uid in instances if uid not in found]
    if missing and require_indexed:
        raise Refused(
            f"the SEG references {len(missing)} instance(s) not in the index (first: {missing[0]}); send the images "
            "first",
            mismatch=True,
        )
    elsewhere = {found[uid] for uid in instances if uid in found and found[uid][0] != named}
    if elsewhere:
        others = "; ".join(sorted(description for _, description in elsewhere))
        raise Refused(f"the SEG names series {named} but references instances of {others}", mismatch=True)
