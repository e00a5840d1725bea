"""The pinned OHIF draws the bridge's delivered SEG over the right slice.

The research copy of an approved annotation is a BINARY SEG with its empty frames omitted, and some OHIF
versions have placed the remaining frames on the wrong images when frames were left out. A mask that marks
only the last slice of a three-slice CT (in the series' index order: by position along the slice normal)
is uploaded, approved and delivered; the viewer opens the study with that SEG, steps through the slices of
its viewport and finds the segment's tint on the slice at the mask's position and on no other. Which image
the viewport shows is read from the viewer's own cornerstone (the displayed image's ImagePositionPatient),
so the check does not depend on overlay text or on the order of the viewer's stack. Screenshots go to
var/test-artefacts/viewer/delivered-seg-slice-K.png (K = the viewer's stack index: OHIF's "(K+1/3)").
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from playwright.sync_api import Page

from tests.dicomweb.served import Served
from tests.dicomweb.test_annotation_api import _ct_series, _reviewer, _wait
from tests.dicomweb.test_viewer import ARTEFACTS, browser, non_blank, page, sign_in, tinted

__all__ = ["browser", "page"]  # the fixtures, used by name
pytestmark = pytest.mark.integration

# the viewport's stack (the one with the CT's three images), which image it shows and where that image lies
_SHOWN = """(count) => {
  const viewports = window.cornerstone.getRenderingEngines().flatMap((engine) => engine.getViewports());
  const stack = viewports.find((v) => v.getImageIds && v.getImageIds().length === count);
  if (!stack) { return null; }
  const imageId = stack.getCurrentImageId();
  const plane = window.cornerstone.metaData.get("imagePlaneModule", imageId);
  return {index: stack.getCurrentImageIdIndex(), position: plane ? plane.imagePositionPatient : null,
          viewport: stack.id, type: stack.type};
}"""
_GO = """([count, index]) => {
  const viewports = window.cornerstone.getRenderingEngines().flatMap((engine) => engine.getViewports());
  const stack = viewports.find((v) => v.getImageIds && v.getImageIds().length === count);
  return stack.setImageIdIndex(index).then(() => stack.render()).then(() => true);
}"""


def _deliver_last_slice_mask(served: Served) -> tuple[str, str, str, list[float], int]:
    """Upload a mask of the CT's last slice only, approve it, wait for its SEG; the study, the CT series,
    the SEG series, the marked slice's ImagePositionPatient and InstanceNumber."""
    study, series, sources = _ct_series(served)
    assert len(sources) == 3
    mask = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=np.uint8)
    mask[-1, 8:56, 8:56] = 1  # most of the last slice, nothing on the others
    body = io.BytesIO()
    np.save(body, mask)
    path = f"/api/v1/projects/open/series/{series}/annotations?labels=Tumor&format=npy"
    created = served.call("POST", path, user="annotator", content=body.getvalue())
    assert created.status_code == 201, created.text
    annotation = created.json()["id"]
    review = f"/api/v1/annotations/{annotation}/review"
    decision = {"decision": "approve", "comment": "ok"}
    approved = served.call("POST", review, user=_reviewer(served, "rev1"), json=decision)
    assert approved.status_code == 200, approved.text

    def delivered() -> list[dict]:  # type: ignore[type-arg]
        answer = served.call("GET", "/api/v1/deliveries?state=delivered", user="reader").json()
        return [d for d in answer if d["annotation"] == annotation]

    done = _wait(delivered, timeout=90)
    assert done, served.call("GET", "/api/v1/deliveries", user="reader").text
    seg_series = str(done[0]["seg_series_uid"])
    seg = served.client().retrieve_series(study, seg_series)[0]
    assert str(seg.SeriesDescription).startswith("Tumor by annotator")
    assert int(seg.NumberOfFrames) == 1  # the premise: the empty frames of slices 0 and 1 are omitted
    last = sources[-1]
    return study, series, seg_series, [float(v) for v in last.ImagePositionPatient], int(last.InstanceNumber)


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_the_viewer_draws_the_delivered_seg_on_its_slice(served: Served, page: tuple[Page, list[str]]) -> None:
    study, series, seg_series, marked, instance = _deliver_last_slice_mask(served)
    browser_page, blocked = page
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    sign_in(browser_page, served, "/viewer/")
    browser_page.wait_for_url("**/viewer/**")
    browser_page.get_by_text("OPEN-0001").first.wait_for(timeout=60000)
    # only the CT and our SEG: the trial's own SEG of the same series stays out of the study browser
    browser_page.goto(f"{served.base}/viewer/viewer?StudyInstanceUIDs={study}&SeriesInstanceUIDs={series},{seg_series}")
    viewport = browser_page.locator(".cornerstone-canvas").first
    viewport.wait_for(timeout=60000)
    for _ in range(30):
        browser_page.wait_for_timeout(1000)
        if non_blank(viewport.screenshot()) > 0.05:
            break
    if browser_page.get_by_text("Skip all").count():
        browser_page.get_by_text("Skip all").click()  # the viewer's first-visit tour
    assert browser_page.get_by_text("SEG", exact=True).count() == 1, "more than our SEG in the study browser"
    assert browser_page.get_by_text("S:9001").count() == 1  # the delivered SEG's series number (9000 + version)
    browser_page.get_by_text("SEG", exact=True).dblclick()
    coloured = 0.0
    for _ in range(30):  # the SEG loads, then the viewport shows the slice it was on or the one with the segment
        browser_page.wait_for_timeout(1000)
        coloured = tinted(viewport.screenshot())
        if coloured > 0.05:
            break
    browser_page.screenshot(path=str(ARTEFACTS / "delivered-seg.png"))
    assert coloured > 0.05, f"the delivered SEG was not drawn on any slice shown ({coloured:.4f} tinted)"
    # open it as a user would ("Do you want to open this Segmentation?"): the prompt's blue goes too
    browser_page.get_by_role("button", name="Yes").click()
    browser_page.get_by_text("Do you want to open this Segmentation?").wait_for(state="hidden", timeout=30000)

    # every slice of the viewport, by the viewer's own stack index; what it shows is read back from it
    seen: dict[int, tuple[list[float], float, str]] = {}
    overlay = browser_page.get_by_text(re.compile(r"^I:\s*\d+ \(\d+/3\)$"))  # OHIF's "I:3 (1/3)"
    for index in range(3):
        browser_page.evaluate(_GO, [3, index])
        browser_page.wait_for_timeout(1500)
        shown = browser_page.evaluate(_SHOWN, 3)
        assert shown is not None and shown["index"] == index and shown["position"], shown
        png = viewport.screenshot()
        browser_page.screenshot(path=str(ARTEFACTS / f"delivered-seg-slice-{index}.png"))
        seen[index] = ([float(v) for v in shown["position"]], tinted(png), " ".join(overlay.all_inner_texts()))
    # the segment covers ~45% of the viewport where it is drawn; the viewer's blue controls alone ~1%
    on = [(position, text) for position, share, text in seen.values() if share > 0.1]
    off = [position for position, share, _ in seen.values() if share < 0.03]
    assert len(on) == 1 and len(off) == 2, f"tint per slice (position, share, overlay): {seen}"
    assert np.allclose(on[0][0], marked, atol=0.01), f"the segment is drawn at {on[0][0]}, the mask marks {marked}"
    assert on[0][1].startswith(f"I:{instance} "), f"drawn on {on[0][1]!r}, the mask marks instance {instance}"
    assert not blocked, blocked
