"""The one settings object: a TOML file, every key overridable by `PACS_BRIDGE_<SECTION>__<KEY>`.

Built by the entry point and passed down; a wrong key or value stops start-up with a message naming it.
Relative paths are relative to the working directory the service is started in.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "PACS_BRIDGE_"
CONFIG_ENV = "PACS_BRIDGE_CONFIG"
DEFAULT_CONFIG = Path("config/bridge.toml")


class ConfigError(ValueError):
    """A configuration problem, naming the key and what to do."""


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


class ProjectSettings(Section):
    subject_prefix: str = Field(pattern=r"^[A-Z0-9]{1,16}$")
    deid: DeidSettings = DeidSettings()
    trial: TrialSettings = TrialSettings()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    security: SecuritySettings = SecuritySettings()
    projects: dict[str, ProjectSettings] = {}
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("projects")
    @classmethod
    def _names(cls, value: dict[str, ProjectSettings]) -> dict[str, ProjectSettings]:
        for name in value:
            if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
                raise ValueError(f"project name {name!r}: use letters, digits, '-' and '_' (at most 64)")
        return value

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
            key = ".".join(str(part) for part in error["loc"])
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
