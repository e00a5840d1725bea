"""The roles of the research side and what each may do (no database here: the command line names them)."""

from __future__ import annotations

from enum import StrEnum

ALL_PROJECTS = "*"


class Role(StrEnum):
    VIEWER = "viewer"
    DATA_MANAGER = "data-manager"
    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"  # the index, cohorts, snapshots, quarantine counts
    CURATE = "curate"  # save cohorts, take snapshots, export, label timepoints
    CONTRIBUTE = "contribute"  # send instances in (STOW-RS), annotate: an annotation platform's segmentations
    REVIEW = "review"  # approve or reject annotations (never one's own)
    ADMINISTER = "administer"  # users, audit events


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.ANNOTATOR: frozenset({Permission.READ, Permission.CONTRIBUTE}),
    Role.REVIEWER: frozenset({Permission.READ, Permission.CONTRIBUTE, Permission.REVIEW}),
    Role.DATA_MANAGER: frozenset({Permission.READ, Permission.CURATE, Permission.CONTRIBUTE}),
    Role.ADMIN: frozenset(Permission),
}
