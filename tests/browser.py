"""Debian's Chromium driven by Playwright, for the viewer's and the console's browser tests (a browser
download at install time is not possible here: `scripts/test.sh` installs Debian's package)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright


def chromium(*args: str) -> Iterator[Browser]:
    """A headless Chromium for the length of a fixture; `args` go to the browser."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed: run the tests through ./scripts/test.sh")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", *args])
        yield launched
        launched.close()
