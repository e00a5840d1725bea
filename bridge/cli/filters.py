"""The query model's filters as command-line options, declared once for every command that takes them.

`with_filters` adds one option per field of `CohortFilters` to a command's signature and hands the command a
validated `filters` argument (a bad value stops the command with the field and the reason).
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from bridge.cohorts.filters import CohortFilters

Command = TypeVar("Command", bound=Callable[..., Any])

# field -> (type, help); lists are repeatable options
_OPTIONS: dict[str, tuple[Any, str]] = {
    "subject": (list[str] | None, "Subject code (repeatable)."),
    "label": (list[str] | None, "Timepoint label, e.g. baseline, week8 (repeatable)."),
    "timepoint_index": (list[int] | None, "Timepoint index, 0 = baseline (repeatable)."),
    "days_min": (int | None, "Days from baseline, at least."),
    "days_max": (int | None, "Days from baseline, at most."),
    "date_from": (str | None, "Shifted study date, from (YYYY-MM-DD)."),
    "date_to": (str | None, "Shifted study date, to (YYYY-MM-DD)."),
    "modality": (list[str] | None, "Series modality, e.g. CT (repeatable)."),
    "body_part": (list[str] | None, "Body part examined, e.g. CHEST (repeatable)."),
    "description": (str | None, "Series description contains (case-insensitive)."),
    "slice_thickness_min": (float | None, "Slice thickness in mm, at least."),
    "slice_thickness_max": (float | None, "Slice thickness in mm, at most."),
    "pixel_spacing_min": (float | None, "In-plane pixel spacing in mm, at least."),
    "pixel_spacing_max": (float | None, "In-plane pixel spacing in mm, at most."),
    "manufacturer": (str | None, "Manufacturer contains."),
    "model": (str | None, "Model name contains."),
    "kernel": (str | None, "Convolution kernel contains."),
    "contrast": (str | None, "Contrast: yes, no, or text the agent contains."),
    "min_instances": (int | None, "Series with at least this many instances."),
    "segmented": (list[str] | None, "Series with an approved segmentation of this label (repeatable)."),
    "segmented_stage": (str | None, "With --segmented: approved at this review stage (default: final)."),
    "min_timepoints": (int | None, "Subjects with at least this many matching timepoints."),
    "min_followups": (int | None, "Subjects with a matching baseline and at least this many matching follow-ups."),
}
_PROJECT = inspect.Parameter(
    "project",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[str | None, typer.Option("--project", "-p", help="Project (required for a new query).")],
)


def _parameters() -> list[inspect.Parameter]:
    params = [_PROJECT]
    for name, (kind, text) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        annotation = Annotated[kind, typer.Option(flag, help=text, rich_help_panel="Filters")]  # type: ignore[valid-type]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(2)


def filters_from(values: dict[str, Any]) -> CohortFilters | None:
    """The filters given (None when no option was), validated."""
    given = {name: value for name, value in values.items() if value not in (None, [])}
    if not given:
        return None
    if "project" not in given:
        fail("--project is required with filters")
    try:
        return CohortFilters(**given)
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        fail(problems.replace("--: ", ""))
    raise AssertionError("unreachable")


def with_filters(command: Command) -> Command:
    """Give `command` the filter options; it receives `filters: CohortFilters | None` instead of them."""
    hints = typing.get_type_hints(command, include_extras=True)  # the command's own, resolved with their options
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(command).parameters.values()
        if p.name != "filters"
    ]
    names = [p.name for p in _parameters()]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in names}
        return command(*args, filters=filters_from(values), **kwargs)

    positional = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p not in positional]
    wrapper.__signature__ = inspect.Signature([*positional, *keyword, *_parameters()])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
