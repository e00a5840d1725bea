"""The OHIF viewer that `serve` offers at /viewer, in a real headless Chromium (Debian's, driven by
Playwright): sign in with a token, the study list shows the test subjects, a subject's timepoints open
together, a series is drawn (the viewport's screenshot has image pixels, not a blank canvas) and its SEG
overlays it. Screenshots go to var/test-artefacts/viewer/."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect

from tests.browser import chromium
from tests.dicomweb.served import Served

pytestmark = pytest.mark.integration
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts" / "viewer"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium("--use-gl=swiftshader")


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    blocked: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            blocked.append(message.text[:300])

    opened.on("console", watch)
    yield opened, blocked
    context.close()


def sign_in(page: Page, served: Served, then: str) -> None:
    page.goto(served.base + then)
    page.wait_for_url("**/viewer/sign-in**")
    page.get_by_label("API token").fill(served.tokens["reader"])
    page.get_by_role("button", name="Sign in").click()


def non_blank(png: bytes) -> float:
    """The share of pixels that are neither black nor one flat colour."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)
    return float(np.mean(np.abs(pixels - np.median(pixels)) > 10))


def tinted(png: bytes) -> float:
    """The share of clearly coloured (not grey) pixels: a segment's overlay on a greyscale image."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float(np.mean(rgb.max(axis=2) - rgb.min(axis=2) > 60))


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_viewer_lists_subjects_and_draws_a_series(served: Served, page: tuple[Page, list[str]]) -> None:
    browser_page, blocked = page

    def keep(response: Response) -> None:  # what the browser got goes into the fixture's identifier check
        if "/dicomweb/" in response.url and response.ok:
            served.bodies.append(response.body())

    browser_page.on("response", keep)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    wrong = browser_page.goto(served.base + "/viewer/sign-in")
    assert wrong is not None and wrong.status == 200
    browser_page.get_by_label("API token").fill("pb_not-a-token")
    browser_page.get_by_role("button", name="Sign in").click()
    expect(browser_page.locator("#problem")).to_contain_text("Unknown or revoked token", timeout=10000)

    sign_in(browser_page, served, "/viewer/")
    browser_page.wait_for_url("**/viewer/**")
    browser_page.get_by_text("OPEN-0002").first.wait_for(timeout=60000)
    assert browser_page.get_by_text("OPEN-0001").count() >= 1
    browser_page.screenshot(path=str(ARTEFACTS / "study-list.png"))

    browser_page.goto(served.base + "/viewer/subject?project=open&subject=OPEN-0001")
    browser_page.wait_for_url("**/viewer/viewer?StudyInstanceUIDs=*", timeout=30000)
    assert browser_page.url.count(",") == 1  # both timepoints of the subject, side by side
    viewport = browser_page.locator(".cornerstone-canvas").first
    viewport.wait_for(timeout=60000)
    drawn = 0.0
    for _ in range(30):  # the first frames arrive after the canvas
        browser_page.wait_for_timeout(1000)
        drawn = non_blank(viewport.screenshot())
        if drawn > 0.05:
            break
    browser_page.screenshot(path=str(ARTEFACTS / "viewer.png"))
    assert drawn > 0.05, f"the viewport stayed blank ({drawn:.3f} of its pixels drawn)"

    # the SEG of the baseline CT, as an overlay on the (de-identified) series it references
    if browser_page.get_by_text("Skip all").count():
        browser_page.get_by_text("Skip all").click()  # the viewer's first-visit tour
    browser_page.get_by_text("SEG", exact=True).last.dblclick()
    coloured = 0.0
    for _ in range(30):
        browser_page.wait_for_timeout(1000)
        coloured = tinted(viewport.screenshot())
        if coloured > 0.01:
            break
    browser_page.screenshot(path=str(ARTEFACTS / "viewer-seg.png"))
    assert coloured > 0.01, f"no segment drawn over the image ({coloured:.4f} of the pixels tinted)"
    assert not blocked, blocked
