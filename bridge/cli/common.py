"""What every command shares: the --config option, settings and logging, progress bars, the console."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bridge.process.logs import configure_logging
from bridge.settings import Settings, config_path, load_settings

console = Console(stderr=True)
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration (default: $PACS_BRIDGE_CONFIG or ./config/bridge.toml)"),
]


def load(config: Path | None) -> Settings:
    """The settings of the command, with logging configured from them."""
    settings = load_settings(config_path(config))
    configure_logging(settings.log_level)
    return settings


def output() -> Console:
    """The console for a command's result (stdout), plain: no markup guessing, no wrapping."""
    return Console(soft_wrap=True, highlight=False)


def progress_bar(label: str, *, quiet: bool) -> Progress:
    """A progress bar on stderr, shown only to a person at a terminal (never with --json)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )
