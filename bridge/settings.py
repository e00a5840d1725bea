"""The one settings object: a TOML file, every key overridable by `PACS_BRIDGE_<SECTION>__<KEY>`.

Built by the entry point and passed down; a wrong key or value stops start-up with a message naming it.
Relative paths are relative to the working directory the service is started in.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError

ENV_PREFIX = "PACS_BRIDGE_"
CONFIG_ENV = "PACS_BRIDGE_CONFIG"
DEFAULT_CONFIG = Path("config/bridge.toml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(Section):
    url: str = "sqlite:///var/pacs-bridge.db"
    vault_url: str = ""
    auto_migrate: bool = True

    @field_validator("url", "vault_url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value


class StorageSettings(Section):
    store_dir: Path = Path("var/store")
    quarantine_dir: Path = Path("var/quarantine")
    spool_dir: Path = Path("var/spool")
    annotations_dir: Path = Path("var/annotations")  # annotation masks, one file per version (de-identified)
    exports_dir: Path = Path("var/exports")  # exports started from the web console: PROJECT/NAME/ (de-identified)


class SecuritySettings(Section):
    secret: SecretStr | None = None
    secret_file: Path = Path("var/secret.key")


class PrivateKeepSettings(Section):
    creator: str
    group: str = Field(pattern=r"^[0-9A-Fa-f]{4}$")
    elements: list[str] = Field(min_length=1)

    @field_validator("group")
    @classmethod
    def _odd(cls, value: str) -> str:
        if int(value, 16) % 2 == 0:
            raise ValueError("a private group is odd (e.g. '0009')")
        return value

    @field_validator("elements")
    @classmethod
    def _offsets(cls, value: list[str]) -> list[str]:
        for offset in value:
            if not (len(offset) == 2 and 0x00 <= int(offset, 16) <= 0xFF):
                raise ValueError("elements are the last two hex digits of the element, e.g. ['10', '1A']")
        return value


class DeidSettings(Section):
    retain_modified_dates: bool = True
    retain_full_dates: bool = False
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    max_date_shift_days: int = Field(default=3650, ge=1, le=36500)
    accept_burned_in: bool = False
    keep_private: list[PrivateKeepSettings] = []

    @model_validator(mode="after")
    def _one_date_option(self) -> DeidSettings:
        if self.retain_modified_dates and self.retain_full_dates:
            raise ValueError("retain_modified_dates and retain_full_dates exclude each other: set one to false")
        return self


class TrialSettings(Section):
    sponsor_name: str = Field(default="", max_length=64)
    protocol_id: str = Field(default="", max_length=64)
    protocol_name: str = Field(default="", max_length=64)
    site_id: str = Field(default="", max_length=64)
    site_name: str = Field(default="", max_length=64)
    coordinating_center: str = Field(default="", max_length=64)


AE_TITLE = r"^[ -\[\]-~]{1,16}$"  # printable ASCII without backslash, at most 16 characters


class CallerSettings(Section):
    """A calling AE title allowed to send to a project, optionally only from given IP addresses."""

    ae_title: str = Field(pattern=AE_TITLE)
    addresses: list[str] = []

    @field_validator("addresses")
    @classmethod
    def _ip(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_network(address, strict=False)  # raises ValueError naming the bad one
        return value


class MoveDestinationSettings(Section):
    """A node a C-MOVE of this project may send to: the Move Destination AE title names it, the address is
    configured here (a C-MOVE-RQ carries only the title)."""

    ae_title: str = Field(pattern=AE_TITLE)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class ProjectDimseSettings(Section):
    """How the DICOM listener routes to this project: the called AE title, who may call it (to store, query
    and retrieve), and where its C-MOVEs may send."""

    ae_title: str | None = Field(default=None, pattern=AE_TITLE)
    allowed_callers: list[CallerSettings] = []
    move_destinations: list[MoveDestinationSettings] = []

    @field_validator("move_destinations")
    @classmethod
    def _unique_destinations(cls, value: list[MoveDestinationSettings]) -> list[MoveDestinationSettings]:
        titles = [destination.ae_title for destination in value]
        if len(titles) != len(set(titles)):
            raise ValueError(f"move_destinations: AE titles must be unique ({', '.join(titles)})")
        return value


UNSCHEDULED = "unscheduled"  # the label of a timepoint outside every visit window


class VisitSettings(Section):
    """One visit of the trial's schedule: timepoints `from_day`..`to_day` days after baseline get `label`."""

    label: str = Field(pattern=r"^[A-Za-z0-9_.+-]{1,16}$")  # it goes into Clinical Trial Time Point ID (LO)
    from_day: int = Field(ge=0)
    to_day: int = Field(ge=0)

    @model_validator(mode="after")
    def _window(self) -> VisitSettings:
        if self.to_day < self.from_day:
            raise ValueError(f"visit {self.label!r}: to_day {self.to_day} is before from_day {self.from_day}")
        if self.label == UNSCHEDULED:
            raise ValueError(f"visit label {UNSCHEDULED!r} is reserved for timepoints outside every window")
        return self


STAGE = r"^[a-z][a-z0-9_-]{0,31}$"
CODE_TRIPLET = r"^[^^]{1,16}\^[^^]{1,64}\^[^^]{1,64}$"  # value^scheme^meaning, e.g. 108369006^SCT^Neoplasm


class ReviewSettings(Section):
    """The stages an annotation passes, in order: the first is the annotator's, each later one a review;
    approval at the last one makes it final (and delivers it)."""

    stages: list[str] = Field(default=["annotate", "review"], min_length=2, max_length=8)

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, value: list[str]) -> list[str]:
        for stage in value:
            if not re.match(STAGE, stage):
                raise ValueError(f"stage {stage!r}: lower-case letters, digits, '_' and '-' (at most 32)")
        if len(value) != len(set(value)):
            raise ValueError(f"stages must be unique ({', '.join(value)})")
        return value


class LabelCodeSettings(Section):
    """How a segment label is coded in a SEG (SNOMED CT by default): category and type as
    `value^scheme^meaning`, an anatomic region where it applies, a display colour (sRGB)."""

    label: str = Field(pattern=r"^[A-Za-z0-9 _.+-]{1,64}$")
    category: str = Field(default="49755003^SCT^Morphologically Abnormal Structure", pattern=CODE_TRIPLET)
    type: str = Field(default="108369006^SCT^Neoplasm", pattern=CODE_TRIPLET)
    region: str | None = Field(default=None, pattern=CODE_TRIPLET)
    colour: tuple[int, int, int] | None = None

    @field_validator("colour")
    @classmethod
    def _rgb(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not all(0 <= channel <= 255 for channel in value):
            raise ValueError("colour is three sRGB values 0-255, e.g. [255, 0, 0]")
        return value


RESEARCH = "research"  # the seg destination that is the bridge's own store


class SegDestinationSettings(Section):
    """Where approved segmentations go: `research` (the bridge's own store and index, de-identified), or a
    remote, de-identified or re-identified into the patient's original study."""

    remote: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # "research", or a [[remotes]] name
    mode: Literal["deidentified", "reidentified"] = "deidentified"
    protocol: Literal["c-store", "stow-rs"] | None = None  # default: C-STORE when the remote has an AE title

    @model_validator(mode="after")
    def _research_stays_deidentified(self) -> SegDestinationSettings:
        if self.remote == RESEARCH and self.mode != "deidentified":
            raise ValueError("the research store holds de-identified data only: mode = 'deidentified'")
        return self



class ProjectSettings(Section):
    subject_prefix: str = Field(pattern=r"^[A-Z0-9]{1,16}$")
    deid: DeidSettings = DeidSettings()
    trial: TrialSettings = TrialSettings()
    dimse: ProjectDimseSettings = ProjectDimseSettings()
    visits: list[VisitSettings] = []
    review: ReviewSettings = ReviewSettings()
    labels: list[LabelCodeSettings] = []
    seg_destinations: list[SegDestinationSettings] = [SegDestinationSettings(remote=RESEARCH)]

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, value: list[LabelCodeSettings]) -> list[LabelCodeSettings]:
        labels = [entry.label.lower() for entry in value]
        if len(labels) != len(set(labels)):
            raise ValueError("labels: each label once")
        return value

    @field_validator("seg_destinations")
    @classmethod
    def _unique_destinations(cls, value: list[SegDestinationSettings]) -> list[SegDestinationSettings]:
        remotes = [entry.remote for entry in value]
        if len(remotes) != len(set(remotes)):
            raise ValueError(f"seg_destinations: each remote once ({', '.join(remotes)})")
        return value

    @field_validator("visits")
    @classmethod
    def _disjoint(cls, value: list[VisitSettings]) -> list[VisitSettings]:
        """Windows may not overlap (a timepoint would have two labels) and labels are unique."""
        ordered = sorted(value, key=lambda visit: visit.from_day)
        for before, after in zip(ordered, ordered[1:], strict=False):
            if after.from_day <= before.to_day:
                raise ValueError(f"visits {before.label!r} and {after.label!r}: windows overlap")
        labels = [visit.label for visit in value]
        if len(labels) != len(set(labels)):
            raise ValueError(f"visits: labels must be unique ({', '.join(labels)})")
        return value


class TlsSettings(Section):
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None  # when set, callers must present a certificate signed by it

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.ca_file and not self.cert_file:
            raise ValueError("ca_file (client certificate check) needs cert_file and key_file")
        for path in (self.cert_file, self.key_file, self.ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class RemoteSettings(Section):
    """A hospital PACS the bridge pulls from: a DICOMweb base URL and/or a DIMSE node."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    dicomweb_url: str | None = Field(default=None, pattern=r"^https?://")
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    ae_title: str | None = Field(default=None, pattern=AE_TITLE)
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool = False  # DIMSE over TLS; the remote's certificate is checked against tls_ca_file
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None  # our client certificate, when the remote asks for one
    tls_key_file: Path | None = None
    retrieve: Literal["dicomweb", "c-move", "c-get"] | None = None  # default: dicomweb when configured
    move_destination: str | None = Field(default=None, pattern=AE_TITLE)  # default: the project's AE title
    timeout: float = Field(default=60, gt=0)
    parallel: int = Field(default=4, ge=1, le=32)  # series retrieved at once
    page_size: int = Field(default=100, ge=1, le=10000)  # QIDO-RS results asked per request (<= remote's cap)
    result_limit: int | None = Field(default=None, ge=2)  # the remote's cap on search results, if it has one
    retries: int = Field(default=4, ge=0, le=20)

    @model_validator(mode="after")
    def _complete(self) -> RemoteSettings:
        if self.dicomweb_url is None and self.ae_title is None:
            raise ValueError("a remote needs dicomweb_url, or ae_title with host and port, or both")
        if self.ae_title is not None and (self.host is None or self.port is None):
            raise ValueError("ae_title needs host and port")
        if self.retrieve == "dicomweb" and self.dicomweb_url is None:
            raise ValueError("retrieve = 'dicomweb' needs dicomweb_url")
        if self.retrieve in ("c-move", "c-get") and self.ae_title is None:
            raise ValueError(f"retrieve = {self.retrieve!r} needs ae_title, host and port")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        for path in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")
        if self.auth == "basic" and (self.username is None or self.password is None):
            raise ValueError("auth = 'basic' needs username and password")
        if self.auth == "bearer" and self.token is None:
            raise ValueError("auth = 'bearer' needs token")
        return self

    @property
    def retrieval(self) -> Literal["dicomweb", "c-move", "c-get"]:
        """How studies are retrieved: as configured, else DICOMweb when there is a URL, else C-MOVE."""
        return self.retrieve or ("dicomweb" if self.dicomweb_url else "c-move")


_INTERVAL = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScheduleSettings(Section):
    """A pull that `serve` runs by itself: every `every` (e.g. "30m", "6h", "1d") or on a `cron` expression
    (five fields, local time). Each run asks only for studies from the day of the last successful run on
    (less `lookback_days`, for studies archived late); the first run from `since`, or for all of them."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    remote: str
    project: str
    every: str | None = None
    cron: str | None = None
    patient_ids: list[str] = []
    patient_ids_file: Path | None = None  # CSV, patient IDs in the first column (read at each run)
    accession_numbers: list[str] = []
    modality: str | None = None
    description: str | None = None
    since: str | None = Field(default=None, pattern=r"^\d{8}$")  # YYYYMMDD: the first run's lower bound
    lookback_days: int = Field(default=1, ge=0, le=3650)
    retrieve: Literal["dicomweb", "c-move", "c-get"] | None = None  # default: the remote's

    @model_validator(mode="after")
    def _when(self) -> ScheduleSettings:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of every (e.g. '6h') and cron (e.g. '0 2 * * *')")
        if self.every is not None and not _INTERVAL.match(self.every.strip()):
            raise ValueError(f"every {self.every!r}: a number and a unit, s, m, h or d (e.g. '30m')")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron)
            except ValueError as error:
                raise ValueError(f"cron {self.cron!r}: {error}") from None
        return self

    @property
    def interval_seconds(self) -> int | None:
        match = _INTERVAL.match((self.every or "").strip())
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None


class DimseSettings(Section):
    """The DICOM listener of `serve`."""

    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=1, le=65535)
    ae_title: str = Field(default="PACS_BRIDGE", pattern=AE_TITLE)
    default_project: str | None = None  # project for calls to `ae_title` itself
    max_associations: int = Field(default=32, ge=1, le=1000)
    max_pdu_size: int = Field(default=4 * 1024 * 1024, ge=0)
    acse_timeout: float = Field(default=30, gt=0)
    dimse_timeout: float = Field(default=60, gt=0)
    network_timeout: float = Field(default=60, gt=0)
    min_free_space_mb: int = Field(default=1024, ge=0)
    workers: int = Field(default=2, ge=1, le=64)
    listeners: int = Field(default=2, ge=1, le=64)
    tls: TlsSettings = TlsSettings()


class HttpSettings(Section):
    """The research side's HTTP API, served by `serve` (loopback by default: put a TLS proxy in front)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_stow_bytes: int = Field(default=4 * 1024**3, ge=1024)  # one STOW-RS request (a study, say)
    dicomweb_max_results: int = Field(default=1000, ge=1, le=100000)  # QIDO-RS caps `limit` at this
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")  # links in answers
    viewer_dir: Path = Path("var/viewer")  # the OHIF viewer's dist/, as scripts/fetch-viewer.sh unpacks it
    cors_origins: list[str] = []  # origins of browser apps (a viewer elsewhere) allowed to call; "*" for any
    metrics_dir: Path = Path("var/metrics")  # every process's counts, added up by /metrics; emptied at start


class DeliverySettings(Section):
    """The outbox of SEG deliveries, worked by `serve`: how often it looks, how it backs off."""

    enabled: bool = True
    poll_seconds: float = Field(default=1.0, gt=0)
    first_retry_seconds: float = Field(default=5.0, gt=0)  # doubled after each failure
    max_retry_seconds: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=100, ge=1)  # then the delivery is failed (retry it by hand)
    lease_seconds: float = Field(default=300.0, gt=0)  # a claim older than this is taken over (a dead worker's)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    security: SecuritySettings = SecuritySettings()
    projects: dict[str, ProjectSettings] = {}
    dimse: DimseSettings = DimseSettings()
    remotes: list[RemoteSettings] = []
    schedules: list[ScheduleSettings] = []
    http: HttpSettings = HttpSettings()
    deliveries: DeliverySettings = DeliverySettings()
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("projects")
    @classmethod
    def _names(cls, value: dict[str, ProjectSettings]) -> dict[str, ProjectSettings]:
        for name in value:
            if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
                raise ValueError(f"project name {name!r}: use letters, digits, '-' and '_' (at most 64)")
        return value

    @model_validator(mode="after")
    def _routing(self) -> Settings:
        """Called AE titles must be unique and the default project must exist."""
        titles: dict[str, str] = {}
        for name, project in self.projects.items():
            title = project.dimse.ae_title
            if title is None:
                continue
            if title == self.dimse.ae_title or title in titles:
                other = titles.get(title, "dimse.ae_title")
                raise ValueError(f"projects.{name}.dimse.ae_title {title!r} is also used by {other}")
            titles[title] = f"projects.{name}"
        names = [remote.name for remote in self.remotes]
        if len(names) != len(set(names)):
            raise ValueError(f"remotes: names must be unique ({', '.join(names)})")
        if self.dimse.default_project and self.dimse.default_project not in self.projects:
            raise ValueError(f"dimse.default_project {self.dimse.default_project!r} is not a configured project")
        schedules = [schedule.name for schedule in self.schedules]
        if len(schedules) != len(set(schedules)):
            raise ValueError(f"schedules: names must be unique ({', '.join(schedules)})")
        for project_name, project in self.projects.items():
            for destination in project.seg_destinations:
                if destination.remote != RESEARCH and destination.remote not in names:
                    raise ValueError(
                        f"projects.{project_name}.seg_destinations: remote {destination.remote!r} is not configured"
                        f" (a [[remotes]] name, or {RESEARCH!r})"
                    )
        for schedule in self.schedules:
            if schedule.remote not in names:
                raise ValueError(f"schedule {schedule.name!r}: remote {schedule.remote!r} is not configured")
            if schedule.project not in self.projects:
                raise ValueError(f"schedule {schedule.name!r}: project {schedule.project!r} is not configured")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # environment over file

    def remote(self, name: str) -> RemoteSettings:
        for remote in self.remotes:
            if remote.name == name:
                return remote
        known = ", ".join(r.name for r in self.remotes) or "none"
        raise ConfigError(
            f"unknown remote {name!r} (configured: {known}); add a [[remotes]] entry with name = {name!r}"
        )

    def project(self, name: str) -> ProjectSettings:
        try:
            return self.projects[name]
        except KeyError:
            known = ", ".join(sorted(self.projects)) or "none"
            raise ConfigError(f"unknown project {name!r} (configured: {known}); add [projects.{name}]") from None


def config_path(explicit: Path | None) -> Path | None:
    """--config, else $PACS_BRIDGE_CONFIG, else ./config/bridge.toml if present, else built-in defaults."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: Path | None) -> Settings:
    """Read and validate the configuration; ConfigError names the file, the key and the problem."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _check_environment_keys()
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "configuration"
            problems.append(f"  {key}: {error['msg']}")
        raise ConfigError(f"invalid configuration ({source}):\n" + "\n".join(problems)) from None


def _check_environment_keys() -> None:
    """An environment variable with our prefix that matches no key is a mistake, not something to ignore."""
    sections = {name for name in Settings.model_fields}
    for variable in os.environ:
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper() == CONFIG_ENV:
            continue
        head = variable[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if head not in sections:
            raise ConfigError(
                f"environment variable {variable}: no configuration key {head!r} (known: {', '.join(sorted(sections))})"
            )
