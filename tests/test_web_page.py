"""The web page in real headless Chromium against the real local host and emulators.

Playwright drives Debian's `chromium` (scripts/setup.sh installs it) through `executable_path`:
`playwright install` would download a browser build, which this project never does. The page
is served by the host at `/` under its strict CSP, so every check here also shows that the page
runs with no inline script or style. Screenshots go to tests/artifacts/ (git-ignored).

Playwright's `wait_for_function` evaluates a string, which the page's CSP forbids (no
'unsafe-eval'); waits here are locator expectations, each with its own timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.harness import FIXTURES, PROJECT_ROOT, SAMPLES, Pipeline

ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
WAIT_MS = 60_000  # one image through the route on a busy 2-core machine
pytestmark = pytest.mark.timeout(180)

# Located by hand in the upright rotated-exif.jpg (tests/fixtures/PROVENANCE.md).
ROTATED_FACE = (116, 72, 88, 104)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: run scripts/setup.sh (make setup)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_key() -> tuple[str, str]:
    key = secrets.token_urlsafe(24)
    return key, hashlib.sha256(key.encode()).hexdigest()


class Session:
    """One browser context on the page, recording what the page logged."""

    def __init__(self, browser: Browser, pipeline: Pipeline, **context: object) -> None:
        self.base = f"http://127.0.0.1:{pipeline.settings.host_port}/"
        self.context = browser.new_context(**context)
        self.context.set_default_timeout(15_000)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on("console", self._console)
        # Playwright turns file-chooser interception on, with a message it does not wait for,
        # when a page gains its first "filechooser" listener. Registered only inside
        # expect_file_chooser, a key press could reach Chromium first and the picker opened
        # unseen (a CI failure). One listener for the page's whole life keeps it on throughout.
        self.page.on("filechooser", lambda _chooser: None)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def sign_in(self, key: str) -> Page:
        page = self.page
        page.goto(self.base, timeout=15_000)
        expect(page.locator("#api-key")).to_be_visible(timeout=10_000)
        page.fill("#api-key", key)
        page.click("#sign-in-form button[type=submit]")
        expect(page.locator("#drop-zone")).to_be_visible(timeout=10_000)
        return page

    def shot(self, name: str, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def sessions(browser: Browser, request: pytest.FixtureRequest) -> Iterator[list[Session]]:
    made: list[Session] = []
    yield made
    for n, session in enumerate(made):
        # the page as the test left it, to look at when it failed
        session.shot(f"last-{request.node.name}-{n}")
        (ARTIFACTS / f"last-{request.node.name}-{n}.txt").write_text(
            session.page.locator("body").inner_text(timeout=5_000)
        )
        session.close()


def open_session(sessions: list[Session], browser: Browser, pipeline: Pipeline, **context):
    session = Session(browser, pipeline, **context)
    sessions.append(session)
    return session


def drop_files(page: Page, paths: list[Path]) -> None:
    """A real drag-and-drop: a DataTransfer holding Files, dispatched on the drop zone."""
    files = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in paths]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, data] of files) {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            }
            return transfer;
        }""",
        files,
    )
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event("#drop-zone", event, {"dataTransfer": transfer})


def upload_item(page: Page, name: str):
    return page.locator(f'#uploads li.upload[data-name="{name}"]')


def api_document(session: Session, key: str, image: str) -> dict:
    """The document as the API gives it to this caller (what the page drew from)."""
    response = session.page.request.get(
        f"{session.base}api/images/{image}", headers={"x-api-key": key}, timeout=10_000
    )
    assert response.status == 200, response.text()
    return response.json()


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


# ---------------------------------------------------------------------------------------------


def test_three_photos_dropped_and_chosen_all_reach_done(make_pipeline, browser, sessions):
    key, digest = new_key()
    pipeline = make_pipeline(
        "prepare,analyze,transform,store",  # every analyzer: what a user's document holds
        DARKROOM_API_KEYS=f"web:{digest}",
    )
    session = open_session(sessions, browser, pipeline, viewport={"width": 1280, "height": 900})
    page = session.sign_in(key)
    expect(page.locator("#who-name")).to_have_text("web", timeout=5_000)
    expect(page.locator('.tab[data-view="ops"]')).to_be_hidden(timeout=2_000)  # not an admin

    page.set_input_files("#file-input", [FIXTURES / "cat.jpg", SAMPLES / "shopfront-sign.jpg"])
    drop_files(page, [FIXTURES / "gps.jpg"])

    for name in ("cat.jpg", "shopfront-sign.jpg", "gps.jpg"):
        item = upload_item(page, name)
        expect(item).to_have_count(1, timeout=5_000)
        expect(item).to_have_attribute("data-status", "done", timeout=WAIT_MS)
        # every step of the route shows as done
        for step in ("prepare", "analyze", "transform", "store"):
            expect(item.locator(f'.step[data-step="{step}"]')).to_have_attribute(
                "data-status", "done", timeout=5_000
            )
    ids = [upload_item(page, n).get_attribute("data-id") for n in ("cat.jpg", "gps.jpg")]
    for image in ids:
        assert pipeline.results.get(image)["status"] == "done"
    session.shot("upload-three-done")

    # What was found, shown to its owner: tags, text, verdict, camera and location.
    upload_item(page, "cat.jpg").locator("button", has_text="View").click()
    detail = page.locator("#detail")
    expect(detail).to_have_attribute("data-id", ids[0], timeout=5_000)
    expect(page.locator("#tags")).to_contain_text("cat", timeout=5_000)
    expect(page.locator("#moderation .verdict")).to_have_text("safe", timeout=5_000)
    upload_item(page, "gps.jpg").locator("button", has_text="View").click()
    expect(detail).to_have_attribute("data-id", ids[1], timeout=5_000)
    expect(page.locator("#gps-block")).to_be_visible(timeout=5_000)
    expect(page.locator("#exif")).not_to_contain_text("none", timeout=5_000)
    expect(page.locator("#published")).to_be_visible(timeout=5_000)
    session.shot("detail-gps")
    upload_item(page, "shopfront-sign.jpg").locator("button", has_text="View").click()
    page.locator('.toggle[data-kind="text"]').click()
    canvas = page.locator("#boxes")
    expect(canvas).to_have_attribute("data-ready", "true", timeout=15_000)
    expect(page.locator("#text")).not_to_have_text("none found", timeout=5_000)
    assert any(b["kind"] == "text" for b in json.loads(canvas.get_attribute("data-boxes")))
    session.shot("detail-text-boxes")

    # Search by words from the library's search box (its default), best match first.
    page.locator('.tab[data-view="library"]').click()
    expect(page.locator("#search-by")).to_have_value("q", timeout=5_000)
    page.fill("#search-text", "cats")  # the tagger's "tabby cat"/"Egyptian cat", stemmed
    page.locator("#search-form button[type=submit]").click()
    rows = page.locator("#library > li[data-id]")
    # The listing shown before the search has all three: wait until the answer replaced it.
    expect(page.locator(f'#library > li[data-id="{ids[1]}"]')).to_have_count(0, timeout=10_000)
    expect(rows.first).to_have_attribute("data-id", ids[0], timeout=10_000)
    session.shot("library-search-words")


def test_face_box_is_drawn_on_the_face_of_an_exif_rotated_portrait(
    make_pipeline, browser, sessions
):
    key, digest = new_key()
    pipeline = make_pipeline(
        "prepare,analyze,transform,store",
        DARKROOM_ANALYZERS="faces,objects",
        DARKROOM_API_KEYS=f"web:{digest}",
    )
    session = open_session(sessions, browser, pipeline, viewport={"width": 1280, "height": 900})
    page = session.sign_in(key)
    page.set_input_files("#file-input", [FIXTURES / "rotated-exif.jpg"])
    item = upload_item(page, "rotated-exif.jpg")
    expect(item).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    image = item.get_attribute("data-id")

    detail = page.locator("#detail")
    expect(detail).to_have_attribute("data-id", image, timeout=10_000)
    canvas = page.locator("#boxes")
    expect(canvas).to_have_attribute("data-ready", "true", timeout=15_000)

    doc = api_document(session, key, image)
    assert (doc["image"]["width"], doc["image"]["height"]) == (384, 512)
    # The browser shows the photo upright (EXIF orientation 6 applied): the same pixel grid as
    # the document's boxes.
    photo = page.locator("#photo")
    natural = photo.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [384, 512], natural
    shown = photo.bounding_box()
    overlay = canvas.bounding_box()
    assert shown and overlay
    for k in ("x", "y", "width", "height"):
        assert abs(shown[k] - overlay[k]) < 1, (shown, overlay)  # canvas covers the photo

    drawn = json.loads(canvas.get_attribute("data-boxes"))
    faces = [b for b in drawn if b["kind"] == "faces"]
    expected_faces = doc["analysis"]["faces"]
    assert len(faces) == len(expected_faces) == 1, (drawn, expected_faces)
    sx, sy = shown["width"] / doc["image"]["width"], shown["height"] / doc["image"]["height"]
    x, y, w, h = expected_faces[0]["box"]
    face = faces[0]
    for got, want in (
        (face["x"], x * sx),
        (face["y"], y * sy),
        (face["w"], w * sx),
        (face["h"], h * sy),
    ):
        assert abs(got - want) <= 1.0, (face, expected_faces[0]["box"], sx, sy)
    # …and that place is the face, as located by hand in the upright photo.
    back = (face["x"] / sx, face["y"] / sy, face["w"] / sx, face["h"] / sy)
    assert iou(back, ROTATED_FACE) > 0.5, back

    # The face toggle hides and shows the face boxes.
    toggle = page.locator('.toggle[data-kind="faces"]')
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false", timeout=2_000)
    assert not [b for b in json.loads(canvas.get_attribute("data-boxes")) if b["kind"] == "faces"]
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true", timeout=2_000)
    session.shot("rotated-portrait-face-box")
    page.locator("#stage").screenshot(path=str(ARTIFACTS / "rotated-portrait-stage.png"))


def test_operations_view_shows_a_poisoned_image_and_replays_it(
    make_pipeline, browser, sessions, tmp_path
):
    key, digest = new_key()
    marker = tmp_path / "outage"
    marker.write_text("model server down")
    pipeline = make_pipeline(
        "prepare,tests.pipeline_steps.fickle,store",
        FICKLE_MARKER=str(marker),
        DARKROOM_ADMIN_KEYS=f"ops:{digest}",
    )
    session = open_session(sessions, browser, pipeline, viewport={"width": 1280, "height": 900})
    page = session.sign_in(key)
    ops_tab = page.locator('.tab[data-view="ops"]')
    expect(ops_tab).to_be_visible(timeout=5_000)  # admins only

    page.set_input_files("#file-input", [FIXTURES / "cat.jpg"])
    item = upload_item(page, "cat.jpg")
    expect(item).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    image = item.get_attribute("data-id")

    ops_tab.click()
    view = page.locator("#view-ops")
    poisoned = view.locator(f'#ops-poison li[data-image-id="{image}"]')
    expect(poisoned).to_have_count(1, timeout=15_000)
    expect(poisoned).to_contain_text("fickle", timeout=2_000)
    failed = view.locator(f'#ops-failed li[data-id="{image}"]')
    expect(failed).to_contain_text("model server down", timeout=15_000)
    fickle_row = view.locator('#ops-queues tbody tr[data-step="fickle"][data-lane="live"]')
    expect(fickle_row.locator(".poison")).to_have_text("1", timeout=15_000)
    session.shot("operations-poisoned")

    marker.unlink()  # the operator fixes the dependency, then replays from the page
    fickle_row.locator("button.replay").click()
    expect(page.locator("#ops-message")).to_contain_text(
        "Replayed 1 message from fickle", timeout=10_000
    )
    expect(poisoned).to_have_count(0, timeout=20_000)
    expect(failed).to_have_count(0, timeout=WAIT_MS)

    doc = pipeline.wait_final(image, timeout=60)
    assert doc["status"] == "done" and doc["fickle"] == {"ok": True}
    page.locator('.tab[data-view="library"]').click()
    entry = page.locator(f'#library li[data-id="{image}"]')
    expect(entry).to_have_attribute("data-status", "done", timeout=10_000)
    session.shot("operations-replayed")
    page.locator('.tab[data-view="upload"]').click()  # this tab's upload went on after the replay
    expect(item).to_have_attribute("data-status", "done", timeout=10_000)


def _tab_to(page: Page, selector: str, presses: int = 25) -> None:
    """Press Tab until `selector` has the focus (bounded), and check the focus is visible."""
    target = page.locator(selector)
    for _ in range(presses):
        page.keyboard.press("Tab")
        if target.evaluate("node => node === document.activeElement"):
            outline = target.evaluate("node => getComputedStyle(node).outlineStyle")
            assert outline not in ("none", ""), f"{selector} has no visible focus"
            return
    raise AssertionError(f"{selector} not reached with {presses} Tab presses")


def test_keyboard_only_upload_and_box_toggles_and_a_phone_screen(make_pipeline, browser, sessions):
    key, digest = new_key()
    pipeline = make_pipeline(
        "prepare,analyze,store", DARKROOM_ANALYZERS="faces", DARKROOM_API_KEYS=f"web:{digest}"
    )
    session = open_session(
        sessions,
        browser,
        pipeline,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = session.page
    page.goto(session.base, timeout=15_000)
    expect(page.locator("#api-key")).to_be_visible(timeout=10_000)
    session.shot("phone-sign-in", full_page=False)
    page.evaluate("document.activeElement.blur()")  # from the top of the page, by Tab alone
    _tab_to(page, "#api-key")
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    expect(page.locator("#drop-zone")).to_be_visible(timeout=10_000)

    # The photo picker opens from the keyboard (Enter, then Space after a cancelled choice).
    _tab_to(page, "#choose")
    with page.expect_file_chooser(timeout=5_000) as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files([FIXTURES / "portrait.jpg"])
    item = upload_item(page, "portrait.jpg")
    expect(item).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    with page.expect_file_chooser(timeout=5_000) as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files([])

    canvas = page.locator("#boxes")
    expect(canvas).to_have_attribute("data-ready", "true", timeout=15_000)
    assert any(b["kind"] == "faces" for b in json.loads(canvas.get_attribute("data-boxes")))
    toggle = '.toggle[data-kind="faces"]'
    _tab_to(page, toggle)
    page.keyboard.press("Space")
    expect(page.locator(toggle)).to_have_attribute("aria-pressed", "false", timeout=2_000)
    assert not any(b["kind"] == "faces" for b in json.loads(canvas.get_attribute("data-boxes")))
    page.keyboard.press("Enter")
    expect(page.locator(toggle)).to_have_attribute("aria-pressed", "true", timeout=2_000)
    assert any(b["kind"] == "faces" for b in json.loads(canvas.get_attribute("data-boxes")))
    # the other toggles are in the tab order right after it
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.kind") == "objects"

    # Readable on a phone: nothing wider than the screen.
    page.evaluate("window.scrollTo(0, 0)")
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"horizontal scroll on a phone: {widths}"
    session.shot("phone-390x844")
    session.shot("phone-390x844-viewport", full_page=False)

    # Sign out clears the key: a reload asks for it again.
    page.locator("#sign-out").click()
    expect(page.locator("#api-key")).to_be_visible(timeout=5_000)
    assert page.evaluate("sessionStorage.getItem('darkroom.apiKey')") is None
    page.reload()
    expect(page.locator("#api-key")).to_be_visible(timeout=10_000)


def test_page_files_need_no_inline_script_style_or_network():
    """What the strict CSP and an offline machine require of the static files themselves."""
    page = PROJECT_ROOT / "pipeline" / "api" / "page"
    html = (page / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "inline event-handler attribute"
    assert not re.search(r"\sstyle\s*=|<style", html, re.I), "inline style"
    js = (page / "app.js").read_text()
    assert ".innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js
    for text in (html, js, (page / "app.css").read_text()):
        assert not re.search(r"https?://(?!127\.0\.0\.1)", text), "a network dependency (CDN, font)"


def api_json(session: Session, key: str, path: str) -> dict:
    response = session.page.request.get(
        f"{session.base}{path.lstrip('/')}", headers={"x-api-key": key}, timeout=10_000
    )
    assert response.status == 200, (path, response.status, response.text())
    return response.json()


def usable_people(doc: dict) -> list[str]:
    return [f["person"] for f in doc["recognition"]["faces"] if f["usable"] and f["person"]]


def test_people_view_names_merges_and_corrects_people(make_pipeline, browser, sessions):
    """Faces grouped by person in the People view: rename one (Enter), see the name on the image
    view's face label, merge two, take a face out, and forget a person (confirm dialog)."""
    key, digest = new_key()
    pipeline = make_pipeline(
        "prepare,analyze,recognize,transform,store",
        DARKROOM_ANALYZERS="faces",
        DARKROOM_PERSON_MIN_FACES="1",
        DARKROOM_API_KEYS=f"web:{digest}",
    )
    session = open_session(sessions, browser, pipeline, viewport={"width": 1280, "height": 900})
    page = session.sign_in(key)
    # the same astronaut twice, and someone else (the face_recognition sdist's photo if set-up
    # fetched it; a sample with a face otherwise)
    other = FIXTURES / "faces" / "biden.jpg"
    if not other.exists():
        other = SAMPLES / "astronaut-collins.jpg"
    photos = [FIXTURES / "portrait.jpg", FIXTURES / "rotated-exif.jpg", other]
    page.set_input_files("#file-input", photos)
    ids = {}
    for photo in photos:
        item = upload_item(page, photo.name)
        expect(item).to_have_attribute("data-status", "done", timeout=WAIT_MS)
        ids[photo.name] = item.get_attribute("data-id")
    docs = {name: api_document(session, key, image) for name, image in ids.items()}
    astronaut = {p for n in ("portrait.jpg", "rotated-exif.jpg") for p in usable_people(docs[n])}
    assert len(astronaut) == 1, {n: d["recognition"] for n, d in docs.items()}
    (astronaut_id,) = astronaut
    listed = api_json(session, key, "/api/people")["items"]
    assert astronaut_id in {p["id"] for p in listed}

    # People: a card per person, each with its cover face cut from a picture
    page.locator('.tab[data-view="people"]').click()
    cards = page.locator("#people li.person-card")
    expect(cards).to_have_count(len(listed), timeout=10_000)
    with_faces = [p for p in listed if p["faces"]]  # the API may list a person with none left
    expect(page.locator("#people .crop[data-ready=true]")).to_have_count(
        len(with_faces), timeout=15_000
    )
    card = page.locator(f'#people li.person-card[data-id="{astronaut_id}"]')
    expect(card.locator(".person-name")).to_have_text("Unnamed", timeout=2_000)
    expect(card.locator(".person-counts")).to_have_text("2 faces · 2 images", timeout=2_000)
    session.shot("people-list")

    # rename inline: type, Enter saves; API strings are text, never markup
    name = 'Ada <b>"Lovelace"</b>'
    card.locator(f"#name-{astronaut_id}").fill(name)
    card.locator(f"#name-{astronaut_id}").press("Enter")
    expect(card.locator(".person-name")).to_have_text(name, timeout=5_000)
    assert card.locator(".person-name b").count() == 0
    assert api_json(session, key, f"/api/people/{astronaut_id}")["name"] == name
    session.shot("people-renamed")

    # open the person: its faces and images; an image opens the image view with the name on
    # the face's label
    card.locator(".person-open").click()
    person = page.locator("#person")
    expect(person).to_have_attribute("data-ready", "true", timeout=10_000)
    expect(person.locator(".person-face")).to_have_count(2, timeout=2_000)
    expect(person.locator(".person-face .crop[data-ready=true]")).to_have_count(2, timeout=10_000)
    expect(person.locator("#person-images li")).to_have_count(2, timeout=2_000)
    person.locator(f'#person-images button[data-id="{ids["portrait.jpg"]}"]').click()
    expect(page.locator("#detail")).to_have_attribute("data-id", ids["portrait.jpg"], timeout=5_000)
    canvas = page.locator("#boxes")
    expect(canvas).to_have_attribute("data-ready", "true", timeout=15_000)
    labels = [
        b["label"] for b in json.loads(canvas.get_attribute("data-boxes")) if b["kind"] == "faces"
    ]
    assert labels == [name], labels
    expect(page.locator("#faces-list")).to_contain_text(name, timeout=2_000)
    expect(page.locator("#similar-block")).to_be_visible(timeout=10_000)
    session.shot("image-view-face-named")
    page.locator("#stage").screenshot(path=str(ARTIFACTS / "image-view-face-named-stage.png"))
    page.locator("#detail-close").click()

    people_now = api_json(session, key, "/api/people")["items"]
    others = [p["id"] for p in people_now if p["id"] != astronaut_id]
    if not others:
        pytest.skip(f"only one person in these photos: {people_now}")
    merged_away = next((p for p in others if p in usable_people(docs[other.name])), others[0])
    merged_faces = api_json(session, key, f"/api/people/{merged_away}")["face_list"]

    # merge: on the astronaut's card, pick the other person, Merge
    card.locator(f"#merge-{astronaut_id}").select_option(merged_away)
    card.locator("form.merge button").click()
    expect(cards).to_have_count(len(people_now) - 1, timeout=10_000)
    expect(page.locator("#people-message")).to_contain_text("Merged", timeout=5_000)
    total = 2 + len(merged_faces)
    expect(card).to_have_attribute("data-faces", str(total), timeout=5_000)
    detail = api_json(session, key, f"/api/people/{astronaut_id}")
    assert len(detail["face_list"]) == total
    expect(person.locator(".person-face")).to_have_count(total, timeout=10_000)
    expect(person.locator(".person-face .crop[data-ready=true]")).to_have_count(
        total, timeout=10_000
    )
    session.shot("people-merged")

    # readable on a phone
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.scrollTo(0, 0)")
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"horizontal scroll on a phone: {widths}"
    session.shot("people-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # take a face out: "Not this person" on the merged-in face
    wrong = merged_faces[0]["face_id"]
    person.locator(f'.person-face[data-face="{wrong}"] button.take-out').click()
    expect(person.locator(f'.person-face[data-face="{wrong}"]')).to_have_count(0, timeout=5_000)
    expect(person.locator(".person-face")).to_have_count(total - 1, timeout=10_000)
    after = api_json(session, key, f"/api/people/{astronaut_id}")
    assert wrong not in [f["face_id"] for f in after["face_list"]]
    expect(card).to_have_attribute("data-faces", str(total - 1), timeout=10_000)
    images_left = len(after["image_ids"])
    expect(page.locator("#person-counts")).to_have_text(
        f"{total - 1} faces · {images_left} images", timeout=10_000
    )
    expect(person.locator("#person-images li")).to_have_count(images_left, timeout=5_000)
    expect(card.locator(".crop[data-ready=true]")).to_have_count(1, timeout=10_000)
    session.shot("person-face-taken-out")

    # "Search images of this person": My images, filtered by the person
    page.locator("#person-search").click()
    expect(page.locator("#search-person")).to_have_value(astronaut_id, timeout=5_000)
    expect(page.locator("#library li.library-item")).to_have_count(images_left, timeout=10_000)
    listed_ids = {li.get_attribute("data-id") for li in page.locator("#library li").all()}
    assert listed_ids == set(after["image_ids"])
    session.shot("library-person-filter")
    page.locator('.tab[data-view="people"]').click()
    card.locator(".person-open").click()
    expect(person).to_have_attribute("data-ready", "true", timeout=10_000)

    # forget (consent erasure): a dialog says what it does; Cancel keeps them, Forget erases
    page.locator("#person-forget").click()
    dialog = page.locator("#forget-dialog")
    expect(dialog).to_be_visible(timeout=2_000)
    expect(dialog).to_contain_text("delete every stored face embedding", timeout=2_000)
    expect(dialog.locator("#forget-name")).to_have_text(name, timeout=2_000)
    session.shot("forget-dialog", full_page=False)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden(timeout=2_000)
    assert astronaut_id in {p["id"] for p in api_json(session, key, "/api/people")["items"]}
    page.locator("#person-forget").click()
    dialog.locator("#forget-confirm").click()
    expect(page.locator("#people-message")).to_contain_text("forgotten", timeout=10_000)
    expect(card).to_have_count(0, timeout=10_000)
    assert astronaut_id not in {p["id"] for p in api_json(session, key, "/api/people")["items"]}
    session.shot("people-forgotten")


def _brightness_segmenter(path: Path) -> Path:
    """A real ONNX segmenter built here: per pixel, sigmoid(20 * (mean of RGB - 0.5)), so the
    bright parts of a photo are the class `bright`: [1, 3, 64, 64] → [1, 1, 64, 64]."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["grey"], keepdims=1),
        helper.make_node("Sub", ["grey", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["mask"]),
    ]
    constants = [
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]),
        helper.make_tensor("gain", TensorProto.FLOAT, [1], [20.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "bright",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 64, 64])],
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_model_steps_show_on_the_page_with_their_own_toggles(
    make_pipeline, browser, sessions, tmp_path
):
    """A classifying model step's labels and a segmenting one's mask, drawn as GET
    /api/capabilities says, with settings only."""
    from pipeline.vision.local.tags_efficientnet import load_labels

    labels = tmp_path / "imagenet.txt"
    labels.write_text("\n".join(load_labels()))
    tagger = PROJECT_ROOT / "pipeline" / "vision" / "local" / "models" / "efficientnet-lite0.onnx"
    key, digest = new_key()
    pipeline = make_pipeline(
        "prepare,species,bright,store",
        DARKROOM_API_KEYS=f"web:{digest}",
        DARKROOM_MODEL_SPECIES__TASK="classify",
        DARKROOM_MODEL_SPECIES__ONNX=str(tagger),
        DARKROOM_MODEL_SPECIES__RESIZE="center_crop",
        DARKROOM_MODEL_SPECIES__SCALE="1",
        DARKROOM_MODEL_SPECIES__MEAN="127",
        DARKROOM_MODEL_SPECIES__STD="128",
        DARKROOM_MODEL_SPECIES__LABELS=str(labels),
        DARKROOM_MODEL_BRIGHT__TASK="segment",
        DARKROOM_MODEL_BRIGHT__ONNX=str(_brightness_segmenter(tmp_path / "bright.onnx")),
        DARKROOM_MODEL_BRIGHT__LABELS="dark,bright",
        DARKROOM_MODEL_BRIGHT__MIN_SCORE="0.5",
    )
    session = open_session(sessions, browser, pipeline, viewport={"width": 1280, "height": 900})
    page = session.sign_in(key)
    page.set_input_files("#file-input", [FIXTURES / "cat.jpg"])
    item = upload_item(page, "cat.jpg")
    expect(item).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    item.locator("button", has_text="View").click()
    expect(page.locator("#species")).to_contain_text("cat", timeout=5_000)
    expect(page.locator("#bright")).to_contain_text("bright", timeout=5_000)
    toggle = page.locator('.toggle[data-kind="bright"]')
    expect(toggle).to_have_attribute("aria-pressed", "false", timeout=2_000)  # masks start off
    canvas = page.locator("#boxes")
    expect(canvas).to_have_attribute("data-ready", "true", timeout=15_000)
    toggle.click()
    page.wait_for_function(
        "JSON.parse(document.getElementById('boxes').dataset.boxes || '[]')"
        ".some(b => b.kind === 'bright')",
        timeout=10_000,
    )
    session.shot("model-steps")
