"""The Query/Retrieve SCP of a real `serve` process, spoken to by DCMTK's findscu, movescu (to a DCMTK
storescp) and getscu, and by pynetdicom where a test reads every response's status and counts.

One bridge for the module (project LUNG, two subjects): subject A has a CT series of 3 and an MR series of
2 instances in Explicit VR Little Endian, subject B a CT series of 2 in RLE Lossless, which DCMTK's
uncompressed-only peers do not accept: their sub-operations fail and are counted so.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests import factory
from tests.serve_process import DCMTK_ENV, BridgeProcess, free_port, write_serve_config
from tests.test_serve import storescu

pytestmark = pytest.mark.integration

CALLER = "PACS"  # allowed for LUNG (from 127.0.0.0/8)
SUCCESS, PENDING, PENDING_WITH_WARNINGS = 0x0000, 0xFF00, 0xFF01
WARNING_SUB_OPERATIONS, UNABLE_TO_PERFORM_SUB_OPERATIONS, MOVE_DESTINATION_UNKNOWN = 0xB000, 0xA702, 0xA801


@dataclass
class Trial:
    bridge: BridgeProcess
    folder: Path
    destination_port: int
    identifiers: list[str]  # what of the patients must never come back
    explicit: Dataset  # the C-FIND answers of the two studies
    rle: Dataset

    @property
    def subject_codes(self) -> set[str]:
        return {str(self.explicit.PatientID), str(self.rle.PatientID)}


def find(
    port: int, level: str, keys: dict[str, str], model: str = StudyRootQueryRetrieveInformationModelFind
) -> list[tuple[int, Dataset | None]]:
    """pynetdicom C-FIND on LUNG: every response's status and identifier."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="LUNG")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    try:
        return [(int(status.Status), identifier) for status, identifier in assoc.send_c_find(query, model)]
    finally:
        assoc.release()


def matches(
    port: int, level: str, keys: dict[str, str], model: str = StudyRootQueryRetrieveInformationModelFind
) -> list[Dataset]:
    answered = find(port, level, keys, model)
    assert answered[-1][0] == SUCCESS, [hex(status) for status, _ in answered]
    return [identifier for status, identifier in answered[:-1] if identifier is not None]


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trial]:
    folder = tmp_path_factory.mktemp("qr")
    destination_port, port = free_port(), free_port()
    extra = f"""
[[projects.lung.dimse.move_destinations]]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {destination_port}
[[projects.lung.dimse.move_destinations]]
ae_title = "DOWN"
host = "127.0.0.1"
port = {free_port()}
"""
    config = write_serve_config(folder, f"sqlite:///{folder / 'bridge.db'}", port, extra=extra)
    bridge = BridgeProcess(config=config, port=port, log=folder / "serve.log").start()
    try:
        first, second = factory.make_patient(1), factory.make_patient(2)
        explicit = factory.make_study(first, "20200301", modalities=("CT", "MR"), per_series=3)[:5]  # CT 3, MR 2
        files = factory.write_files(explicit, folder / "in")
        sent = storescu(port, "LUNG", files, calling="MODALITY")
        assert sent.returncode == 0, sent.stderr
        rle = factory.make_series(second, "CT", 2, study_date="20210615", transfer_syntax=RLELossless)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage, [RLELossless])
        assoc = ae.associate("127.0.0.1", port, ae_title="LUNG")
        assert assoc.is_established
        assert [int(assoc.send_c_store(ds).Status) for ds in rle] == [SUCCESS, SUCCESS]
        assoc.release()
        bridge.wait_for("lung", 7)
        keys = {"PatientID": "", "StudyInstanceUID": "", "StudyDate": "", "NumberOfStudyRelatedInstances": ""}
        studies = sorted(matches(port, "STUDY", keys), key=lambda s: int(s.NumberOfStudyRelatedInstances))
        identifiers = [first.patient_id, second.patient_id, first.name.split("^")[0], second.name.split("^")[0]]
        yield Trial(bridge, folder, destination_port, identifiers, explicit=studies[1], rle=studies[0])
    finally:
        bridge.stop()


@pytest.fixture
def storescp(trial: Trial, tmp_path: Path) -> Iterator[Path]:
    """A DCMTK storescp as the move destination STORESCP (uncompressed syntaxes only); what it receives."""
    received = tmp_path / "received"
    received.mkdir()
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(received), str(trial.destination_port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["echoscu", "-aec", "STORESCP", "127.0.0.1", str(trial.destination_port)],
                env=DCMTK_ENV,
                capture_output=True,
                timeout=10,
            )
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        yield received
    finally:
        process.terminate()
        process.wait(10)


def dcmtk(
    tool: str, port: int, *args: str, calling: str = CALLER, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-v", "-aet", calling, "-aec", "LUNG", *args, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=120,
        cwd=cwd,
    )


def no_identifiers(trial: Trial, data: bytes) -> None:
    for identifier in trial.identifiers:
        assert identifier.encode() not in data, "an identifier of the patient came back"


def test_findscu_study_root_answers_subject_codes_from_the_index(trial: Trial, tmp_path: Path) -> None:
    done = dcmtk(
        "findscu",
        trial.bridge.port,
        "-S",
        "-X",
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID",
        "-k",
        "PatientName",
        "-k",
        "StudyInstanceUID",
        "-k",
        "ModalitiesInStudy",
        "-k",
        "NumberOfStudyRelatedInstances",
        "-k",
        "AccessionNumber",
    )
    assert done.returncode == 0, done.stderr
    answers = [dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
    assert len(answers) == 2
    assert {str(a.PatientID) for a in answers} == trial.subject_codes
    assert all(str(a.PatientID).startswith("LUNG") and str(a.PatientName) == str(a.PatientID) for a in answers)
    assert sorted(int(a.NumberOfStudyRelatedInstances) for a in answers) == [2, 5]
    assert all(a.RetrieveAETitle == "LUNG" and a.AccessionNumber == "" for a in answers)
    for path in tmp_path.glob("rsp*.dcm"):
        no_identifiers(trial, path.read_bytes())
    no_identifiers(trial, (done.stdout + done.stderr).encode())


def test_findscu_patient_root_at_each_level(trial: Trial, tmp_path: Path) -> None:
    explicit = trial.explicit

    def answers(*keys: str) -> list[Dataset]:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        out.mkdir()
        done = dcmtk("findscu", trial.bridge.port, "-P", "-X", "-od", str(out), *[a for k in keys for a in ("-k", k)])
        assert done.returncode == 0, done.stderr
        return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]

    patients = answers("QueryRetrieveLevel=PATIENT", "PatientID", "NumberOfPatientRelatedStudies")
    assert {str(p.PatientID) for p in patients} == trial.subject_codes
    assert [int(p.NumberOfPatientRelatedStudies) for p in patients] == [1, 1]
    code = str(explicit.PatientID)
    studies = answers("QueryRetrieveLevel=STUDY", f"PatientID={code}", "StudyInstanceUID")
    assert [s.StudyInstanceUID for s in studies] == [explicit.StudyInstanceUID]
    series = answers(
        "QueryRetrieveLevel=SERIES",
        f"PatientID={code}",
        f"StudyInstanceUID={explicit.StudyInstanceUID}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert sorted((s.Modality, int(s.NumberOfSeriesRelatedInstances)) for s in series) == [("CT", 3), ("MR", 2)]
    ct = next(s for s in series if s.Modality == "CT")
    images = answers(
        "QueryRetrieveLevel=IMAGE",
        f"PatientID={code}",
        f"StudyInstanceUID={explicit.StudyInstanceUID}",
        f"SeriesInstanceUID={ct.SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
    assert all(i.QueryRetrieveLevel == "IMAGE" and i.SOPInstanceUID for i in images)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # the refused key below
def test_find_matches_as_qido_does(trial: Trial) -> None:
    port = trial.bridge.port
    explicit, rle = trial.explicit, trial.rle
    assert [s.StudyInstanceUID for s in matches(port, "STUDY", {"ModalitiesInStudy": "MR"})] == [
        explicit.StudyInstanceUID
    ]
    shifted = str(rle.StudyDate)  # de-identified: shifted by the subject's offset
    dated = matches(port, "STUDY", {"StudyDate": f"{shifted}-{shifted}", "StudyInstanceUID": ""})
    assert [s.StudyInstanceUID for s in dated] == [rle.StudyInstanceUID]
    assert len(matches(port, "STUDY", {"PatientID": "LUNG*"})) == 2
    assert matches(port, "STUDY", {"PatientID": "NOBODY*"}) == []
    uids = f"{explicit.StudyInstanceUID}\\{rle.StudyInstanceUID}"
    assert len(matches(port, "SERIES", {"StudyInstanceUID": uids, "SeriesInstanceUID": ""})) == 3
    patients = matches(port, "PATIENT", {"PatientID": ""}, PatientRootQueryRetrieveInformationModelFind)
    assert len(patients) == 2
    # a key the level does not know: its value is ignored, it comes back empty, the responses warn
    answered = find(port, "STUDY", {"StudyInstanceUID": "", "OperatorsName": "SMITH"})
    assert [status for status, _ in answered] == [PENDING_WITH_WARNINGS, PENDING_WITH_WARNINGS, SUCCESS]
    assert all(identifier.OperatorsName == "" for _, identifier in answered[:-1] if identifier is not None)
    # a key its attribute cannot match: refused, naming the attribute
    assert [status for status, _ in find(port, "STUDY", {"StudyDate": "yesterday"})] == [0xC000]


def test_movescu_sends_the_de_identified_study_to_the_destination(trial: Trial, storescp: Path) -> None:
    explicit = trial.explicit
    done = dcmtk(
        "movescu",
        trial.bridge.port,
        "-S",
        "-aem",
        "STORESCP",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={explicit.StudyInstanceUID}",
    )
    assert done.returncode == 0, done.stderr
    received = [dcmread(path) for path in sorted(storescp.iterdir())]
    assert len(received) == 5
    assert {str(ds.PatientID) for ds in received} == {str(explicit.PatientID)}
    assert {ds.StudyInstanceUID for ds in received} == {explicit.StudyInstanceUID}
    for path in storescp.iterdir():
        no_identifiers(trial, path.read_bytes())
    said = done.stdout + done.stderr  # a Pending response after each sub-operation but the last
    assert "Received Move Response 4 (Pending)" in said and "Received Final Move Response (Success)" in said


def test_move_reports_pending_counts_and_failed_instances(trial: Trial, storescp: Path) -> None:
    """Both studies in one C-MOVE: the RLE instances are refused by the uncompressed-only destination."""
    explicit, rle = trial.explicit, trial.rle
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", trial.bridge.port, ae_title="LUNG")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = [explicit.StudyInstanceUID, rle.StudyInstanceUID]
    try:
        responses = list(assoc.send_c_move(query, "STORESCP", StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    statuses = [int(status.Status) for status, _ in responses]
    assert statuses == [PENDING] * 6 + [WARNING_SUB_OPERATIONS]
    assert [int(status.NumberOfRemainingSuboperations) for status, _ in responses[:-1]] == [6, 5, 4, 3, 2, 1]
    final, failed = responses[-1]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (5, 2)
    assert final.NumberOfWarningSuboperations == 0 and "NumberOfRemainingSuboperations" not in final
    assert failed is not None and len(failed.FailedSOPInstanceUIDList) == 2
    assert len(list(storescp.iterdir())) == 5


def test_move_to_an_unknown_destination_is_refused_with_a801(trial: Trial) -> None:
    explicit = trial.explicit
    done = dcmtk(
        "movescu",
        trial.bridge.port,
        "-S",
        "-aem",
        "NOWHERE",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={explicit.StudyInstanceUID}",
    )
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in done.stdout + done.stderr  # 0xA801


def test_move_to_a_destination_that_does_not_answer_fails_every_sub_operation(trial: Trial) -> None:
    explicit = trial.explicit
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", trial.bridge.port, ae_title="LUNG")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = explicit.StudyInstanceUID
    try:
        responses = list(assoc.send_c_move(query, "DOWN", StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    ((final, _),) = responses
    assert int(final.Status) == UNABLE_TO_PERFORM_SUB_OPERATIONS
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 5)


def test_getscu_brings_the_series_back_on_its_association(trial: Trial, tmp_path: Path) -> None:
    explicit = trial.explicit
    done = dcmtk(
        "getscu",
        trial.bridge.port,
        "-S",
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={explicit.StudyInstanceUID}",
    )
    assert done.returncode == 0, done.stderr
    received = [dcmread(path) for path in sorted(tmp_path.iterdir())]
    assert len(received) == 5
    assert {str(ds.PatientID) for ds in received} == {str(explicit.PatientID)}
    assert {ds.file_meta.TransferSyntaxUID for ds in received} == {ExplicitVRLittleEndian}  # as stored
    for path in tmp_path.iterdir():
        no_identifiers(trial, path.read_bytes())


def test_getscu_taking_implicit_vr_only_gets_them_converted(trial: Trial, tmp_path: Path) -> None:
    explicit = trial.explicit
    done = dcmtk(
        "getscu",
        trial.bridge.port,
        "-S",
        "+xi",
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={explicit.StudyInstanceUID}",
    )
    assert done.returncode == 0, done.stderr
    received = [dcmread(path) for path in sorted(tmp_path.iterdir())]
    assert len(received) == 5
    assert all(len(ds.PixelData) == 64 * 64 * 2 for ds in received)


def test_get_counts_sub_operations_the_requestor_cannot_take_as_failed(trial: Trial) -> None:
    """C-GET over pynetdicom, taking CT and MR as SCP in uncompressed syntaxes only: the RLE study fails."""
    rle = trial.rle
    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return SUCCESS

    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for storage in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(storage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    assoc = ae.associate(
        "127.0.0.1", trial.bridge.port, ae_title="LUNG", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = rle.StudyInstanceUID
    try:
        responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    final, failed = responses[-1]
    assert [int(status.Status) for status, _ in responses] == [PENDING, UNABLE_TO_PERFORM_SUB_OPERATIONS]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 2)
    assert failed is not None and len(failed.FailedSOPInstanceUIDList) == 2
    assert received == []


def test_a_caller_not_allowed_for_the_project_can_neither_query_nor_retrieve(trial: Trial, tmp_path: Path) -> None:
    explicit = trial.explicit
    found = dcmtk("findscu", trial.bridge.port, "-S", "-k", "QueryRetrieveLevel=STUDY", calling="INTRUDER")
    assert found.returncode != 0 and "rejected" in (found.stdout + found.stderr).lower()
    got = dcmtk(
        "getscu",
        trial.bridge.port,
        "-S",
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={explicit.StudyInstanceUID}",
        calling="INTRUDER",
    )
    assert got.returncode != 0 and list(tmp_path.iterdir()) == []


def test_a_cancel_never_breaks_the_association(trial: Trial, tmp_path: Path) -> None:
    done = dcmtk(
        "findscu", trial.bridge.port, "-S", "--cancel", "1", "-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID"
    )
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr  # answered Cancel, or Success when every match was out before it came
    assert "Find Response: 1 (Pending)" in said and "Sending Cancel Request" in said
    assert "Received Final Find Response (Cancel" in said or "Received Final Find Response (Success)" in said


def test_queries_and_retrieves_are_audited_without_identifiers(trial: Trial) -> None:
    with sqlite3.connect(trial.folder / "bridge.db") as db:
        events = list(db.execute("SELECT action, detail FROM auditevent WHERE action LIKE 'dimse.%'"))
    actions = {action for action, _ in events}
    assert {"dimse.find", "dimse.move", "dimse.move.refused", "dimse.get"} <= actions
    assert any("lung" in detail and "5 sent" in detail for action, detail in events if action == "dimse.move")
    for _, detail in events:
        no_identifiers(trial, detail.encode())


def test_move_at_patient_level_sends_every_study_of_the_subject(trial: Trial, storescp: Path) -> None:
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", trial.bridge.port, ae_title="LUNG")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = trial.explicit.PatientID  # the subject code
    try:
        responses = list(assoc.send_c_move(query, "STORESCP", PatientRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    final, _ = responses[-1]
    assert int(final.Status) == SUCCESS and final.NumberOfCompletedSuboperations == 5
    assert {str(dcmread(path).PatientID) for path in storescp.iterdir()} == {str(trial.explicit.PatientID)}
