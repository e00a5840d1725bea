"""The bridge's few exceptions, and the one retry layer.

Each exception carries a message a person can act on, and never PHI: configuration errors name the key,
refusals name attributes and rules, remote errors quote the remote's answer redacted of original UIDs.
What a retry can fix (`RetriableError`) is told apart from what it cannot, and `with_retries` is the only
place that retries (not dicomweb-client, not pynetdicom, not the puller, not the callers).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, naming the key and what to do."""


class MalformedInstance(ValueError):
    """The bytes are not a complete, parseable DICOM instance; the message says what is wrong."""


class Refused(ValueError):
    """The instance cannot be admitted; the message is the quarantine reason (no PHI). `mismatch` says the
    dataset contradicts its SOP class or the request that carried it (rather than being unreadable)."""

    def __init__(self, reason: str, *, mismatch: bool = False) -> None:
        super().__init__(reason)
        self.mismatch = mismatch


class RemoteError(RuntimeError):
    """A remote refused or failed a request; the message names the remote and quotes its answer."""


class RetriableError(RemoteError):
    """A failure that may pass: timeout, refused connection, 5xx/429, a remote out of resources."""


class TruncatedSearch(RemoteError):
    """The remote capped a search's results: the caller narrows it (by dates) and asks again."""


_UID_LIKE = re.compile(r"(?<![\d.])(?!2\.25\.)\d+(?:\.\d+){3,}(?![\d.])")


def redact(text: str) -> str:
    """Messages from the remote side may quote original UIDs (in URLs, in error bodies): not in our logs."""
    return _UID_LIKE.sub("<UID>", text)


def with_retries(retries: int, action: Callable[[], T]) -> T:
    """`action()`, again after a `RetriableError`, `retries` times at most, with exponential backoff."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except RetriableError as error:
            if attempt == attempts:
                raise
            delay = min(30.0, 0.5 * 2**attempt)
            logger.warning("%s (attempt %d of %d, again in %.1f s)", error, attempt, attempts, delay)  # redacted
            time.sleep(delay)
    raise AssertionError("unreachable")


class AnnotationError(ValueError):
    """An annotation, review or delivery request that cannot be done as asked; the message says why and what
    to do (it names pseudonymous objects only)."""


class NotFound(AnnotationError):
    """What the request names does not exist (or is not visible to the caller)."""


class Forbidden(AnnotationError):
    """The caller's role or relation to the object does not allow this (an annotator approving, a reviewer
    approving their own work)."""
