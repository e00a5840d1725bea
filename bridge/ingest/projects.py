"""A project's settings turned into what the services use: its key, its de-identification policy, its
subject codes."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.deid import values
from bridge.deid.deidentify import PrivateKeep
from bridge.deid.identity import TrialAttributes
from bridge.deid.table import Option, Policy
from bridge.keys import Keys
from bridge.settings import ProjectSettings, Settings

_OPTION_FLAGS = {
    "retain_modified_dates": Option.RETAIN_MODIFIED_DATES,
    "retain_full_dates": Option.RETAIN_FULL_DATES,
    "retain_patient_characteristics": Option.RETAIN_PATIENT_CHARACTERISTICS,
    "clean_descriptors": Option.CLEAN_DESCRIPTORS,
    "retain_device_identity": Option.RETAIN_DEVICE_IDENTITY,
    "retain_institution_identity": Option.RETAIN_INSTITUTION_IDENTITY,
    "retain_uids": Option.RETAIN_UIDS,
}


@dataclass(frozen=True)
class ProjectContext:
    name: str
    settings: ProjectSettings
    key: bytes
    policy: Policy
    trial: TrialAttributes
    keep_private: frozenset[PrivateKeep]

    @property
    def retain_uids(self) -> bool:
        return Option.RETAIN_UIDS in self.policy.options

    def stored_uid(self, uid: str) -> str:
        """The UID an instance's `uid` is stored under once de-identified (what a STOW-RS answer names)."""
        if self.retain_uids or not uid or values.is_well_known_uid(uid):
            return uid
        return values.pseudo_uid(self.key, uid)

    def subject_code(self, number: int) -> str:
        """The pseudonym of the project's `number`-th subject: `<prefix>-<number>`, e.g. LUNG-0007."""
        return f"{self.settings.subject_prefix}-{number:04d}"


def build_project(name: str, settings: ProjectSettings, keys: Keys) -> ProjectContext:
    deid = settings.deid
    options = frozenset(option for flag, option in _OPTION_FLAGS.items() if getattr(deid, flag))
    trial = settings.trial
    keep = frozenset(
        PrivateKeep(creator=rule.creator, group=int(rule.group, 16), offset=int(offset, 16))
        for rule in deid.keep_private
        for offset in rule.elements
    )
    return ProjectContext(
        name=name,
        settings=settings,
        key=keys.project_key(name),
        policy=Policy(options),
        trial=TrialAttributes(
            sponsor_name=trial.sponsor_name or name,
            protocol_id=trial.protocol_id or name,
            protocol_name=trial.protocol_name,
            site_id=trial.site_id,
            site_name=trial.site_name,
            coordinating_center=trial.coordinating_center,
        ),
        keep_private=keep,
    )


def build_projects(settings: Settings, keys: Keys) -> dict[str, ProjectContext]:
    return {name: build_project(name, project, keys) for name, project in settings.projects.items()}
