"""Table E.1-1 as shipped: every row parses, and the documented resolution rules hold."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from bridge.deid.table import Action, Option, Policy, rows

DEFAULTS = frozenset({Option.RETAIN_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS})


def tag(keyword: str) -> int:
    value = tag_for_keyword(keyword)
    assert value is not None
    return value


def test_every_row_of_the_2024b_table_is_loaded() -> None:
    assert len(rows()) == 620  # 621 rows; the private-attributes row is handled by the keep-list


def test_compound_actions_follow_the_documented_rule() -> None:
    basic = Policy(frozenset())
    assert basic.action(tag("InstitutionName"), False) is Action.DUMMY  # X/Z/D
    assert basic.action(tag("AcquisitionDate"), False) is Action.EMPTY  # X/Z
    assert basic.action(tag("ContentDate"), False) is Action.DUMMY  # Z/D
    assert basic.action(tag("ProtocolName"), False) is Action.DUMMY  # X/D
    assert basic.action(tag("ReferencedImageSequence"), True) is Action.RECURSE  # X/Z/U*
    assert basic.action(tag("InstitutionCodeSequence"), True) is Action.EMPTY  # X/Z/D on a sequence
    assert basic.action(tag("OperatorIdentificationSequence"), True) is Action.REMOVE  # X/D on a sequence
    assert basic.action(tag("ContentSequence"), True) is Action.RECURSE  # D on a sequence
    assert basic.action(tag("PatientName"), False) is Action.EMPTY
    assert basic.action(tag("SOPInstanceUID"), False) is Action.UID
    assert basic.action(tag("Manufacturer"), False) is None  # not in the table: kept


def test_options_override_the_basic_profile_keep_before_clean() -> None:
    policy = Policy(DEFAULTS | {Option.RETAIN_DEVICE_IDENTITY})
    assert policy.action(tag("StudyDate"), False) is Action.CLEAN  # shifted
    assert policy.action(tag("PatientAge"), False) is Action.KEEP
    assert policy.action(tag("StudyDescription"), False) is Action.CLEAN
    assert policy.action(tag("DeviceSerialNumber"), False) is Action.KEEP
    # Date Of Last Detector Calibration: device K and dates C both apply; K wins, the walk still shifts dates
    assert policy.action(tag("DateOfLastDetectorCalibration"), False) is Action.KEEP


def test_repeating_groups_match_every_overlay_and_curve_group() -> None:
    policy = Policy(frozenset())
    assert policy.action(0x60023000, False) is Action.REMOVE
    assert policy.action(0x501E0010, False) is Action.REMOVE
