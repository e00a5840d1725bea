"""The web console in a real headless Chromium (Debian's, driven by Playwright) against a real `serve`, with the
trial of tests/cohorts/population.py pushed over C-STORE by DCMTK (its identifying attributes carry a
nonsense token): sign in, build the baseline + two follow-ups cohort, save, snapshot and export it, see a
subject's timeline with thumbnails, approve an annotation from the keyboard as reviewer and see its delivery,
and a viewer-role token that sees no approve button and gets 403 when it posts anyway. Every page's HTML is
grepped for the identifiers sent; every form field must have a label. Screenshots go to
var/test-artefacts/console/."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Response, expect

from tests import factory
from tests.browser import chromium
from tests.cohorts import population
from tests.serve_process import REPOSITORY, BridgeProcess, free_port, write_serve_config
from tests.test_serve import storescu

pytestmark = pytest.mark.integration
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts" / "console"
MARKER = "ZQXCONSOLEPHI"  # in PatientName and InstitutionName of every instance sent
VISITS = "".join(
    f'[[projects.lung.visits]]\nlabel = "{v["label"]}"\nfrom_day = {v["from_day"]}\nto_day = {v["to_day"]}\n'
    for v in population.VISITS
)
ROLES = {"manager": "data-manager", "watcher": "viewer", "drawer": "annotator", "checker": "reviewer", "boss": "admin"}


@dataclass
class Console:
    bridge: BridgeProcess
    base: str
    tokens: dict[str, str]
    identifiers: set[str]
    pages: list[tuple[str, bytes]] = field(default_factory=list)  # (url, body) of every answer a browser got
    blocked: list[str] = field(default_factory=list)  # errors in the browsers' consoles

    def api(self, method: str, path: str, user: str, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return httpx.request(method, self.base + path, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]


def _user(config: Path, name: str, role: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "users", "create", name, "--role", role, "--project", "lung", "--json",
         "--config", str(config)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["token"])


def _identifiers(sent: list[object]) -> set[str]:
    found = {MARKER}
    for n in population.TRIAL:
        patient = factory.make_patient(n)
        found |= {patient.patient_id, patient.birth_date}
    for ds in sent:
        found |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, str(ds.get("AccessionNumber", ""))}  # type: ignore[attr-defined]
    return {value for value in found if value}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    port = free_port()
    hospital = (  # a PACS that does not answer: the schedule's run fails, and the overview says so
        f'[[remotes]]\nname = "hospital"\ndicomweb_url = "http://127.0.0.1:{free_port()}/dicom-web"\n'
        "timeout = 2\nretries = 1\n"
        '[[schedules]]\nname = "nightly"\nremote = "hospital"\nproject = "lung"\nevery = "24h"\n'
        # approved SEGs go to the research store, and to that PACS: failed at the first try, retried by hand
        '[[projects.lung.seg_destinations]]\nremote = "research"\n'
        '[[projects.lung.seg_destinations]]\nremote = "hospital"\nprotocol = "stow-rs"\n'
        "[deliveries]\nmax_attempts = 1\n"
    )
    config = write_serve_config(folder, f"sqlite:///{folder / 'bridge.db'}", port, extra=VISITS + hospital)
    http = int(next(line for line in config.read_text().splitlines() if line.startswith("port =")).split("=")[1])
    bridge = BridgeProcess(config=config, port=port, log=folder / "serve.log").start()
    try:
        sent = list(population.datasets(marker=MARKER))
        files = factory.write_files(sent, folder / "in")
        done = storescu(port, "LUNG", files)
        assert done.returncode == 0, done.stderr
        bridge.wait_for("lung", len(files))
        broken = folder / "broken"
        broken.mkdir()
        (broken / "cut.dcm").write_bytes(files[0].read_bytes()[:400])  # truncated: quarantined
        imported = subprocess.run(
            [sys.executable, "-m", "bridge", "import", str(broken), "--project", "lung", "--config", str(config)],
            cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert imported.returncode == 0, imported.stderr
        tokens = {name: _user(config, name, role) for name, role in ROLES.items()}
        yield Console(bridge, f"http://127.0.0.1:{http}", tokens, _identifiers(sent))
    finally:
        bridge.stop(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture
def context(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    """A fresh browser profile that keeps every console page it is sent (for the identifier check)."""
    opened = browser.new_context(viewport={"width": 1300, "height": 900})

    def keep(response: Response) -> None:
        if response.url.startswith(console.base) and response.status != 303:
            console.pages.append((response.url, response.body()))

    def watch(message: ConsoleMessage) -> None:  # a script or style the page's policy blocked, a script error
        if message.type == "error" and "Failed to load resource" not in message.text:  # (401/403: the tests')
            console.blocked.append(message.text[:300])

    opened.on("response", keep)
    opened.on("console", watch)
    yield opened
    opened.close()
    assert not console.blocked, console.blocked


def sign_in(page: Page, console: Console, user: str, then: str = "/") -> None:
    page.goto(console.base + then)
    page.wait_for_url("**/signin?**")
    page.get_by_label("API token").fill(console.tokens[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def shot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def unlabelled_fields(page: Page) -> list[str]:
    """The visible form fields a screen reader could not name."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
            .map(e => e.name || e.id || e.outerHTML.slice(0, 80))"""
    )
    return found


def csrf_of(page: Page) -> str:
    return str(page.locator("input[name=csrf]").first.get_attribute("value"))


def non_blank(png: bytes) -> float:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)
    return float(np.mean(np.abs(pixels - np.median(pixels)) > 10))


def upload_mask(console: Console, user: str, series: str, rows: slice) -> int:
    found = console.api("GET", f"/api/v1/projects/lung/series/{series}/instances", user).json()
    first = found[0]
    mask = np.zeros((len(found), int(first.get("rows") or 64), int(first.get("columns") or 64)), dtype=np.uint8)
    mask[:, rows, 10:40] = 1
    body = io.BytesIO()
    np.save(body, mask)
    made = console.api(
        "POST", f"/api/v1/projects/lung/series/{series}/annotations?labels=tumor&format=npy", user,
        content=body.getvalue(),
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def example_subjects(console: Console) -> list[str]:
    """The subjects of the example cohort (their codes follow arrival order), as the API answers."""
    query = "modality=CT&body_part=CHEST&slice_thickness_max=2.5&min_followups=2&level=subject"
    rows = console.api("GET", f"/api/v1/projects/lung/cohort?{query}", "manager").json()["rows"]
    assert len(rows) == 2
    return sorted(row["subject"] for row in rows)


def series_of(console: Console, subject: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = console.api(
        "GET", f"/api/v1/projects/lung/series?subject={subject}", "manager"
    ).json()["rows"]
    return rows


def test_sign_in_is_required_and_a_wrong_token_is_refused(console: Console, context: BrowserContext) -> None:
    page = context.new_page()
    answer = page.goto(console.base + "/projects/lung/cohort?modality=CT")
    assert answer is not None and "/signin?next=" in page.url
    page.get_by_label("API token").fill("pb_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")
    cookie = next(c for c in context.cookies() if c["name"] == "pacs_bridge_sign_in")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    without_csrf = context.request.post(console.base + "/signin", form={"token": console.tokens["manager"]})
    assert without_csrf.status == 403  # a sign-in form from another site
    assert not [c for c in context.cookies() if c["name"] == "pacs_bridge_session"]
    page.get_by_label("API token").fill(console.tokens["manager"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/projects/lung/cohort?modality=CT")  # back where the visitor was going
    session = next(c for c in context.cookies() if c["name"] == "pacs_bridge_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] == -1
    # a form posted without the page's CSRF token changes nothing
    forged = context.request.post(console.base + "/projects/lung/cohorts", form={"name": "forged", "query": ""})
    assert forged.status == 403
    assert console.api("GET", "/api/v1/projects/lung/cohorts", "manager").json() == []
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin?done=signed-out")
    assert page.goto(console.base + "/") is not None and "/signin" in page.url


def test_a_data_manager_builds_saves_snapshots_and_exports_the_cohort(
    console: Console, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, console, "manager")
    overview = page.locator("#projects tr[data-project=lung]")
    expect(overview).to_contain_text("lung")
    cells = overview.locator("td.num").all_inner_texts()
    assert cells[:5] == ["6", "16", "16", "32", "1"]  # subjects, timepoints, series, instances, quarantined
    schedule = page.locator("#schedules tbody tr", has_text="nightly")
    expect(schedule).to_contain_text("lung")
    expect(schedule).to_contain_text("every 24h")
    shot(page, "overview")
    assert unlabelled_fields(page) == []

    page.get_by_role("link", name="Cohort builder").click()
    page.get_by_label("Modality").fill("CT")
    page.get_by_label("Body part").fill("CHEST")
    page.get_by_label("Slice thickness (mm), to").fill("2.5")
    page.get_by_label("Baseline and at least N follow-ups").fill("2")
    page.get_by_label("Rows").select_option("subject")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#results-heading")).to_have_text("2 subjects")
    assert "min_followups=2" in page.url and "slice_thickness_max=2.5" in page.url  # the URL holds the query
    subjects = page.locator("#results tbody tr td:first-child").all_inner_texts()
    assert sorted(subjects) == example_subjects(console)  # the API's answer to the same query
    page.get_by_role("link", name="sort by subject", exact=True).click()
    page.get_by_role("link", name="sort by subject descending").click()
    assert "sort=-subject" in page.url
    assert page.locator("#results tbody tr td:first-child").all_inner_texts() == sorted(subjects, reverse=True)
    shot(page, "cohort-builder")
    assert unlabelled_fields(page) == []

    first = page.url
    page.goto(console.base + "/projects/lung/cohort?level=series&limit=5")  # paging: 16 series by 5
    expect(page.locator("#results tbody tr")).to_have_count(5)
    page.get_by_role("link", name="Next page").click()
    expect(page.locator(".pager")).to_contain_text("rows 6–10 of 16")
    page.goto(first)
    page.get_by_label("Save these filters as").fill("baseline-2fu")
    page.get_by_role("button", name="Save cohort").click()
    expect(page.get_by_role("status").first).to_contain_text("Cohort saved")
    saved = console.api("GET", "/api/v1/projects/lung/cohorts", "manager").json()
    assert [(c["name"], c["filters"]["min_followups"]) for c in saved] == [("baseline-2fu", 2)]
    row = page.locator("#saved tr[data-cohort=baseline-2fu]")
    row.get_by_role("button", name="Snapshot").click()
    expect(page.get_by_role("status").first).to_contain_text("Snapshot taken")
    expect(page.locator("#saved tr[data-cohort=baseline-2fu]")).to_contain_text("baseline-2fu@1 (6 series)")

    page.locator("#saved tr[data-cohort=baseline-2fu]").get_by_role("button", name="Export").click()
    expect(page.locator("#export-progress")).to_contain_text("finished", timeout=60000)
    assert page.locator("#export-bar").get_attribute("value") == "100"
    shot(page, "export")
    manifest = console.bridge.config.parent / "exports" / "lung" / "baseline-2fu" / "manifest.json"
    assert manifest.is_file() and len(json.loads(manifest.read_text())["files"]) == 12  # 6 series of 2 instances


def test_the_subject_timeline_shows_thumbnails_and_the_annotated_volume(
    console: Console, context: BrowserContext
) -> None:
    subject = example_subjects(console)[0]
    timepoints = console.api("GET", f"/api/v1/projects/lung/subjects/{subject}", "manager").json()["timepoints"]
    series = series_of(console, subject)
    upload_mask(console, "drawer", str(series[0]["series_instance_uid"]), slice(10, 30))  # 2 x 20 x 30 voxels
    page = context.new_page()
    sign_in(page, console, "watcher", f"/projects/lung/subjects/{subject}")
    sections = page.locator("section.timepoint")
    expect(sections).to_have_count(len(timepoints))
    assert sections.first.locator("h3").inner_text().startswith("baseline · day 0")
    assert "week8" in sections.nth(1).inner_text() and "week16" in sections.nth(2).inner_text()
    images = page.locator("figure.thumb img")
    expect(images).to_have_count(3)
    for image in images.all():
        image.scroll_into_view_if_needed()
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("i => i.naturalWidth") > 0
    png = context.request.get(console.base + str(images.first.get_attribute("src")))
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    assert non_blank(png.body()) > 0.05  # a slice in its window, not a flat square
    expect(page.locator("figure.thumb").first).to_contain_text("in-review")
    point = page.locator("svg.plot circle").first
    voxel = float(series[0]["pixel_spacing_row"]) * float(series[0]["pixel_spacing_col"])  # type: ignore[arg-type]
    voxel *= float(series[0]["slice_thickness"])  # type: ignore[arg-type]
    assert float(str(point.get_attribute("data-ml"))) == pytest.approx(2 * 20 * 30 * voxel / 1000, rel=1e-3)
    shot(page, "subject-timeline")

    # the viewer is a click away, signed in by the console's session (no token asked again)
    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.url, r.status)) if "/dicomweb/" in r.url else None)
    page.get_by_role("link", name="Open every timepoint in the viewer").click()
    page.wait_for_url("**/viewer/viewer?StudyInstanceUIDs=*", timeout=30000)
    assert page.url.count(",") == len(timepoints) - 1  # every timepoint of the subject, side by side
    page.wait_for_timeout(2000)
    assert "/viewer/sign-in" not in page.url
    assert answers and all(status == 200 for _, status in answers), answers[:5]
    stow = context.request.post(console.base + "/dicomweb/projects/lung/studies", data=b"x")
    assert stow.status == 401  # the cookie stands for the token in reads only: a write needs the token itself


def test_a_reviewer_approves_from_the_keyboard_and_the_delivery_appears(
    console: Console, context: BrowserContext
) -> None:
    target = str(series_of(console, example_subjects(console)[1])[0]["series_instance_uid"])
    first = upload_mask(console, "drawer", target, slice(10, 30))
    upload_mask(console, "boss", target, slice(12, 30))  # a second annotator: the agreement page has a pair
    page = context.new_page()
    sign_in(page, console, "checker", "/review")
    item = page.locator(f"li[data-annotation='{first}']")
    expect(item).to_contain_text("by drawer")
    shot(page, "review-queue")
    assert unlabelled_fields(page) == []
    # keyboard only: Tab from the top of the page reaches this item's comment field, then its Approve button
    page.locator("body").focus()
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == f"comment-{first}":
            break
    else:
        pytest.fail("Tab never reached the review form's comment field")
    page.keyboard.type("margins fine")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Approve"
    page.keyboard.press("Enter")
    page.wait_for_url("**/review?done=approved")
    expect(page.locator(f"li[data-annotation='{first}']")).to_have_count(0)
    decided = console.api("GET", f"/api/v1/annotations/{first}", "manager").json()
    assert decided["state"] == "approved" and decided["decisions"][-1]["comment"] == "margins fine"

    deadline = time.monotonic() + 60
    while True:  # the outbox worker builds and stores the SEG; the page shows where it went
        page.goto(console.base + "/quarantine")
        research = page.locator("#delivery-list tbody tr", has_text="research").locator("td.state-delivered")
        pacs = page.locator("#delivery-list tbody tr", has_text="hospital").locator("td.state-failed")
        if research.count() and pacs.count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(1000)
    expect(research).to_have_text("delivered")
    expect(pacs).to_have_text("failed")
    expect(page.locator("#delivery-list tbody tr", has_text="hospital")).to_contain_text("Connection")
    assert page.get_by_role("button", name="Retry").count() == 0  # retrying is a data manager's
    expect(page.locator("table#lung")).to_contain_text("missing-attribute")  # the cut file: reason class
    shot(page, "quarantine-deliveries")

    page.goto(console.base + "/projects/lung/agreement")
    cell = page.locator("table.heat tbody tr", has_text="boss").locator("td").nth(1)
    assert str(cell.get_attribute("title")).startswith("1 series; HD95 ")
    assert 0.8 < float(cell.inner_text()) < 1.0 and "heat-" in str(cell.get_attribute("class"))
    shot(page, "agreement")


def test_a_viewer_cannot_approve_and_gets_403_when_posting_anyway(console: Console, context: BrowserContext) -> None:
    others = [s for s in ("LUNG-0001", "LUNG-0002", "LUNG-0003") if s not in example_subjects(console)]
    waiting = upload_mask(console, "drawer", str(series_of(console, others[0])[0]["series_instance_uid"]), slice(5, 15))
    page = context.new_page()
    sign_in(page, console, "watcher", "/review")
    expect(page.locator("h1")).to_have_text("Review queue")
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.locator("form[action$='/review']").count() == 0
    posted = context.request.post(
        f"{console.base}/annotations/{waiting}/review", form={"csrf": csrf_of(page), "decision": "approve"}
    )
    assert posted.status == 403
    assert console.api("GET", f"/api/v1/annotations/{waiting}", "manager").json()["state"] == "in-review"
    page.goto(console.base + "/projects/lung/cohort")
    assert page.get_by_role("button", name="Save cohort").count() == 0  # curating is a data manager's
    other = context.request.post(
        f"{console.base}/projects/lung/cohorts", form={"csrf": csrf_of(page), "name": "x", "query": "modality=CT"}
    )
    assert other.status == 403
    elsewhere = page.goto(console.base + "/projects/open/cohort")  # a project the token lacks
    assert elsewhere is not None and elsewhere.status == 403
    expect(page.get_by_role("alert")).to_contain_text("this token has no project 'open'")


def test_an_annotator_sees_open_tasks_and_rejections_with_comments(console: Console, context: BrowserContext) -> None:
    made = console.api(
        "POST", "/api/v1/projects/lung/tasks", "manager",
        json={"cohort": "baseline-2fu", "labels": ["tumor"], "annotators": ["drawer"]},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    waiting = console.api("GET", "/api/v1/annotations?project=lung&state=in-review&annotator=drawer", "manager").json()
    rejected = waiting[0]["id"]
    decision = {"decision": "reject", "comment": "redraw the lower margin"}
    assert console.api("POST", f"/api/v1/annotations/{rejected}/review", "checker", json=decision).status_code == 200
    page = context.new_page()
    sign_in(page, console, "drawer", "/review")
    tasks = page.locator("#my-tasks li")
    expect(tasks).to_have_count(2)
    assert sorted(tasks.all_inner_texts())[0].startswith("Task ")
    assert {s for s in example_subjects(console) if s in " ".join(tasks.all_inner_texts())} == set(
        example_subjects(console)
    )
    mine = page.locator(f"#my-rejected li#annotation-{rejected}")
    expect(mine).to_contain_text("rejected by checker at review: “redraw the lower margin”")
    assert page.get_by_role("button", name="Approve").count() == 0  # an annotator reviews nothing
    shot(page, "annotator-queue")


def test_a_data_manager_retries_a_failed_delivery_and_an_admin_sees_the_quarantined_items(
    console: Console, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, console, "manager", "/quarantine")
    assert page.locator("#quarantine-items").count() == 0  # the items are an admin's
    failed = page.locator("#delivery-list tbody tr", has_text="hospital")
    delivery = str(failed.get_attribute("data-delivery"))
    failed.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status").first).to_contain_text("Delivery queued again")
    events = console.api("GET", "/api/v1/audit?action=delivery.requeued", "boss").json()
    assert [(e["actor"], e["object"]) for e in events] == [("console:manager", f"delivery {delivery}")]

    admin = context.browser.new_context()  # type: ignore[union-attr]
    try:
        other = admin.new_page()
        sign_in(other, console, "boss", "/quarantine")
        expect(other.locator("#quarantine-items tbody tr")).to_have_count(1)
        expect(other.locator("#quarantine-items")).to_contain_text("missing SOPClassUID")  # the reason itself
        shot(other, "quarantine-admin")
    finally:
        admin.close()
    looked = console.api("GET", "/api/v1/audit?action=quarantine.view", "boss").json()
    assert [e["actor"] for e in looked] == ["console:boss"]


def test_no_identifier_in_any_page(console: Console) -> None:
    """Runs last in this module: every page (and every other answer) the browsers were sent."""
    assert len(console.pages) > 10
    leaked = {(url, token) for url, body in console.pages for token in console.identifiers if token.encode() in body}
    assert not leaked, sorted(leaked)[:5]
