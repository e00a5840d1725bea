"""A research-side SEG turned back into the hospital's terms, so that it files into the original study of
the original patient: every referenced UID, the frame of reference and the study mapped back through the
vault, the patient's identifiers and the accession number restored, the study date un-shifted; the
de-identification markers and the trial's pseudonyms removed.

It fails closed: a UID the project's vault does not know (another project's, or a new one) stops the
delivery with `ReidentificationError` and nothing is sent. Every vault read is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID

from bridge.deid import values
from bridge.errors import AnnotationError
from bridge.seg.build import RESEARCH_SIDE_KEYWORDS
from storage import vault
from storage.db import UnitOfWork

_MAPPED = ("StudyInstanceUID", "FrameOfReferenceUID", "ReferencedSOPInstanceUID", "ReferencedFrameOfReferenceUID")
_ACQUISITION_EQUIPMENT = "109101"  # DCM: the source images' equipment, dated like the study


def _unshift(seg: Dataset, offset: int) -> None:
    """The dates of the study and of its acquisition equipment back to the hospital's (the SEG's own
    content and series dates are today's, never shifted)."""
    if seg.get("StudyDate"):
        seg.StudyDate = values.shift_date(str(seg.StudyDate), -offset) or ""
    for item in seg.get("ContributingEquipmentSequence", []):
        purpose = item.get("PurposeOfReferenceCodeSequence", [])
        if (
            purpose
            and str(purpose[0].get("CodeValue", "")) == _ACQUISITION_EQUIPMENT
            and item.get("ContributionDateTime")
        ):
            item.ContributionDateTime = values.shift_datetime(str(item.ContributionDateTime), -offset) or ""


class ReidentificationError(AnnotationError):
    """The SEG cannot be mapped back in whole: nothing may be sent."""


def _uid_elements(ds: Dataset) -> Iterator[tuple[Dataset, str]]:
    """(dataset, keyword) of every UID to map, at any depth; the referenced series of ReferencedSeriesSequence."""
    for keyword in _MAPPED:
        if keyword in ds:
            yield ds, keyword
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                if element.keyword == "ReferencedSeriesSequence" and "SeriesInstanceUID" in item:
                    yield item, "SeriesInstanceUID"
                yield from _uid_elements(item)


def reidentify(
    seg: Dataset,
    *,
    project: str,
    subject_code: str,
    date_offset: Callable[[vault.Identity], int],
    work: UnitOfWork,
    cipher: vault.VaultCipher,
    actor: str,
    new_series_uid: str,
    new_instance_uid: str,
) -> Dataset:
    """`seg` (changed in place and returned) in the hospital's terms; `ReidentificationError` if incomplete.
    `date_offset`: the days the patient's dates were shifted by (0 when the project keeps dates)."""
    # highdicom shares reference items between ReferencedSeriesSequence and the per-frame sources: each once
    places = list({(id(ds), keyword): (ds, keyword) for ds, keyword in _uid_elements(seg)}.values())
    pseudo = {str(ds[keyword].value) for ds, keyword in places}
    originals = vault.reveal_uids(
        work.vault, project=project, pseudo_uids=pseudo, cipher=cipher, actor=actor, audit=work.research
    )
    unknown = sorted(pseudo - set(originals))
    if unknown:
        raise ReidentificationError(
            f"re-identification stopped: {len(unknown)} UID(s) of the SEG are not in project {project!r}'s vault "
            f"(first: {unknown[0]}); nothing was sent"
        )
    identity = vault.reveal_identity(
        work.vault, project=project, subject_code=subject_code, cipher=cipher, actor=actor, audit=work.research
    )
    if identity is None:
        raise ReidentificationError(f"re-identification stopped: subject {subject_code} is not in the vault")
    study_uid = str(seg.StudyInstanceUID)
    accession = vault.reveal_accession(
        work.vault, project=project, pseudo_study_uid=study_uid, cipher=cipher, actor=actor, audit=work.research
    )
    for ds, keyword in places:
        setattr(ds, keyword, originals[str(ds[keyword].value)])
    seg.PatientID = identity.patient_id
    seg.PatientName = identity.name
    seg.PatientBirthDate = identity.birth_date
    if identity.issuer:
        seg.IssuerOfPatientID = identity.issuer
    elif "IssuerOfPatientID" in seg:
        del seg.IssuerOfPatientID
    seg.AccessionNumber = accession or ""
    offset = date_offset(identity)
    if offset:
        _unshift(seg, offset)
    for keyword in RESEARCH_SIDE_KEYWORDS:
        if keyword in seg:
            delattr(seg, keyword)
    seg.SeriesInstanceUID = new_series_uid
    seg.SOPInstanceUID = new_instance_uid
    seg.file_meta.MediaStorageSOPInstanceUID = UID(new_instance_uid)
    return seg
