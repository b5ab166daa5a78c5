"""The dashboard in a real browser (Chromium through Playwright) against the real product: `tuner-service up`
with one worker on a temporary TUNER_HOME. A small study is submitted with the form and watched to the end
while the worker trains it, and a learning-rate range test is started with its form and watched until its chart
appears; every page is screenshotted under test-artifacts/screenshots/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import digits_study, running_up
from tuner_service.config import Settings, load_settings
from tuner_service.store import Store
from tuner_service.study import submit_study

# One browser and one service for the whole module, its tests in order: on one pytest-xdist worker.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("dashboard-browser")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
SMALL_SPACE = {
    "hidden_layers": {"type": "int", "min": 0, "max": 2},
    "neurons": {"type": "int", "min": 16, "max": 64, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 0.001, "max": 0.01, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
}


@dataclass
class Service:
    """The running product and what the tests learn about it along the way."""

    base: str
    settings: Settings
    log: Path
    admin_token: str
    other_token: str
    other_study_id: int
    study_id: int | None = None
    requests_seen: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`tuner-service up` with one worker; a second team with a member and a (paused) study of its own."""
    root = tmp_path_factory.mktemp("dashboard")
    settings = load_settings({"TUNER_HOME": str(root / "home"), "TUNER_HEARTBEAT_TIMEOUT": "30"})
    log_path = root / "up.log"
    with running_up(settings, log_path) as base:
        store = Store(settings.database_url)
        store.create_team("beta")
        store.create_user("bea", "beta", "member")
        other_token, _ = store.create_token("bea")
        beta = store.get_team("beta").id
        theirs = submit_study(
            store, settings, digits_study(name="beta-private-study"), lambda pool, n: None, team_id=beta
        )
        store.control_study(theirs.id, action="pause")  # never trained: the worker is ours
        store.dispose()
        admin = (settings.home / "admin-token").read_text().strip()
        yield Service(base, settings, log_path, admin, other_token.secret, theirs.id)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium) to run these tests"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_context(browser, service: Service):  # noqa: ANN001, ANN201 - Playwright's own types
    context = browser.new_context(base_url=service.base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    context.on("request", lambda request: service.requests_seen.append(request.url))
    return context


def watch(page, service: Service):  # noqa: ANN001, ANN201
    page.on("pageerror", lambda error: service.page_errors.append(f"{page.url}: {error}"))
    page.on("console", lambda msg: console_error(page, msg, service))
    return page


def console_error(page, msg, service: Service) -> None:  # noqa: ANN001
    """Errors in the console, except the browser's note on a page answered 401, 404 or 422 on purpose."""
    if msg.type != "error":
        return
    if msg.text.startswith("Failed to load resource") and msg.location.get("url") == page.url:
        return
    service.page_errors.append(f"{page.url}: {msg.text} ({msg.location.get('url')})")


def sign_in(page, token: str) -> None:  # noqa: ANN001
    page.fill("#token", token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


@pytest.fixture(scope="module")
def page(browser, service: Service):  # noqa: ANN001, ANN201
    """The admin's signed-in tab, shared by the tests of this module in order."""
    context = open_context(browser, service)
    tab = watch(context.new_page(), service)
    tab.goto("/signin")
    sign_in(tab, service.admin_token)
    yield tab
    context.close()


def shot(page, name: str) -> None:  # noqa: ANN001
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# -- the tests, in the order a person would go ----------------------------------------------------------
def test_a_page_without_sign_in_redirects_to_sign_in_and_back(browser, service: Service) -> None:  # noqa: ANN001
    context = open_context(browser, service)
    tab = watch(context.new_page(), service)
    tab.goto("/queue")
    url = urlsplit(tab.url)
    assert url.path == "/signin" and parse_qs(url.query)["next"] == ["/queue"]
    shot(tab, "signin")
    sign_in(tab, "tks_not-a-token")
    assert "unknown, revoked or expired" in tab.locator("#token-error").inner_text()
    assert tab.locator("#token").get_attribute("aria-invalid") == "true"
    sign_in(tab, service.admin_token)
    assert urlsplit(tab.url).path == "/queue"
    context.close()


def test_submit_a_small_study_with_the_form_and_watch_it_finish(page, service: Service) -> None:  # noqa: ANN001
    page.goto("/studies/new")
    assert json.loads(page.input_value("#search_space"))["neurons"]["max"] == 256  # the classic space, prefilled
    page.fill("#name", "browser-digits")
    page.fill("#max_trials", "3")
    page.fill("#max_epochs", "2")
    page.fill("#patience", "1")
    page.fill("#seed", "7")
    page.select_option("#priority", "high")
    page.fill("#search_space", json.dumps(SMALL_SPACE, indent=2))
    page.get_by_role("button", name="Submit study").click()
    page.wait_for_url("**/studies/*")
    service.study_id = int(urlsplit(page.url).path.rsplit("/", 1)[1])
    progress = page.locator("#study-progress")
    assert progress.get_attribute("max") == "3"
    start = int(progress.get_attribute("value"))
    assert start < 3
    page.evaluate("window.__sameDocument = true")  # gone if the page were reloaded
    page.get_by_role("button", name="Trial", exact=True).click()  # a sort chosen now must survive live updates
    page.wait_for_function(
        "() => { const p = document.querySelector('#study-progress'); return p && p.value === 3 && p.max === 3 }",
        timeout=150_000,
    )
    assert page.evaluate("window.__sameDocument") is True, "the progress bar moved by a reload, not by itself"
    page.wait_for_function("() => document.querySelector('#study-status').textContent.trim() === 'completed'")
    assert page.locator("#trial-rows tr").count() == 3
    numbers = page.locator("#trial-rows tr th").all_inner_texts()
    assert numbers == ["#0", "#1", "#2"], "the live table lost the sort chosen before it updated"
    assert page.locator("#trials-table thead th").first.get_attribute("aria-sort") == "ascending"
    for chart in ("chart-curves", "chart-best", "chart-parcoords"):
        page.wait_for_selector(f"#{chart} .main-svg")
    page.wait_for_selector("#chart-parcoords .gl-container canvas")
    assert "WebGL is not supported" not in page.locator("#chart-parcoords").inner_text()  # CSP lets regl compile
    page.wait_for_selector("#best-snippet")
    assert "hp.Fixed('hidden_layers'" in page.locator("#best-snippet").inner_text()
    assert "needs at least 4 finished trials" in page.locator("#importance").inner_text()
    shot(page, "study")


def test_the_studies_list_shows_the_finished_study(page, service: Service) -> None:  # noqa: ANN001
    page.goto("/")
    row = page.locator(f"#study-row-{service.study_id}")
    assert "browser-digits" in row.inner_text() and "completed" in row.inner_text()
    assert row.locator("progress").get_attribute("value") == "3"
    shot(page, "studies-list")


def test_sort_the_leaderboard_by_clicking_headers(page, service: Service) -> None:  # noqa: ANN001
    page.goto(f"/studies/{service.study_id}")

    def column(index: int) -> list[str]:
        return page.locator("#trial-rows tr").evaluate_all(f"rows => rows.map(r => r.children[{index}].dataset.sort)")

    headers = page.locator("#trials-table thead th")
    names = [h.strip() for h in headers.all_inner_texts()]
    score_col = names.index("val_accuracy")
    scores = [float(s) for s in column(score_col)]
    assert scores == sorted(scores, reverse=True)  # best first on arrival
    page.get_by_role("button", name="Trial", exact=True).click()
    assert [int(n) for n in column(0)] == [0, 1, 2]
    assert headers.nth(0).get_attribute("aria-sort") == "ascending"
    page.get_by_role("button", name="Trial", exact=True).click()
    assert [int(n) for n in column(0)] == [2, 1, 0]
    assert headers.nth(0).get_attribute("aria-sort") == "descending"
    page.get_by_role("button", name="val_accuracy").click()
    assert [float(s) for s in column(score_col)] == sorted(scores)


def test_open_a_trial_page(page, service: Service) -> None:  # noqa: ANN001
    page.goto(f"/studies/{service.study_id}")
    page.locator("#trial-rows a").first.click()
    page.wait_for_url("**/trials/*")
    page.wait_for_selector("#chart-trial .main-svg")
    epochs = page.locator("#epochs-table tbody tr").count()
    assert 1 <= epochs <= 2
    assert page.locator("#epochs-table .best-row").count() == 1
    assert "cpu0" in page.locator("#trial-detail").inner_text()  # the worker that trained it
    shot(page, "trial")


def test_start_a_range_test_from_the_form_and_watch_its_chart_appear(page) -> None:  # noqa: ANN001
    """The real worker runs it: the page polls while it is queued and running, then draws the curve."""
    page.goto("/lr-range-tests")
    page.select_option("#dataset", "builtin:digits")
    page.fill("#steps", "100")
    page.get_by_role("button", name="Start range test").click()
    page.wait_for_url("**/lr-range-tests/*")
    assert page.locator("#range-test-status").inner_text() in ("queued", "running")
    assert page.locator("main").get_attribute("data-live-url").endswith("/live.json")
    page.evaluate("window.__sameDocument = true")  # gone if the page were reloaded
    page.wait_for_selector("#chart-lr .main-svg", timeout=45_000)
    assert page.evaluate("window.__sameDocument") is True, "the chart appeared by a reload, not by itself"
    assert page.locator("main").get_attribute("data-live") == "done"  # polling stopped
    assert page.locator("#range-test-status").inner_text() == "completed"
    assert page.locator("#range-test-progress").get_attribute("value") == "1.000"
    assert page.evaluate("document.getElementById('chart-lr')._fullLayout.xaxis.type") == "log"
    names = page.evaluate("document.getElementById('chart-lr').data.map(t => t.name)")
    assert names[:2] == ["loss (each batch)", "smoothed loss"] and names[2].startswith("suggested rate")
    suggested = float(page.locator("#suggested-lr").inner_text())
    assert 1e-5 < suggested < 10
    assert "smoothed loss minimum" in page.locator("#suggestion-method").inner_text()
    assert len(page.locator("#chart-lr").get_attribute("aria-label")) > 40
    shot(page, "lr-range-test")
    page.goto("/lr-range-tests")
    assert page.locator("#range-tests-table tbody tr").first.locator("strong").inner_text() == f"{suggested:.3g}"
    shot(page, "lr-range-tests")


def test_cancel_another_study_with_the_button(page, service: Service) -> None:  # noqa: ANN001
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {service.admin_token}"
    doc = digits_study(name="to-cancel", max_trials=20, priority="low", early_stopping={"patience": 1, "max_epochs": 2})
    response = http.post(service.base + "/api/v1/studies", json=doc, timeout=10)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    page.goto(f"/studies/{study_id}")
    page.get_by_role("button", name="Cancel study").click()
    page.wait_for_url(f"**/studies/{study_id}")
    assert page.locator("#study-status").inner_text() == "cancelled"
    assert "Study cancelled" in page.locator(".flashes").inner_text()
    assert page.get_by_role("button", name="Cancel study").count() == 0
    assert http.get(f"{service.base}/api/v1/studies/{study_id}", timeout=10).json()["status"] == "cancelled"


def test_a_bad_range_is_shown_next_to_the_search_space(page) -> None:  # noqa: ANN001
    page.goto("/studies/new")
    page.fill("#name", "bad-range")
    bad = {**SMALL_SPACE, "neurons": {"type": "int", "min": 128, "max": 16}}
    page.fill("#search_space", json.dumps(bad, indent=2))
    page.get_by_role("button", name="Submit study").click()
    page.wait_for_selector("#search_space-error")
    assert "search_space.neurons.min: must be less than max" in page.locator("#search_space-error").inner_text()
    textarea = page.locator("#search_space")
    assert textarea.get_attribute("aria-invalid") == "true"
    assert "search_space-error" in textarea.get_attribute("aria-describedby")
    assert page.evaluate("document.activeElement.id") == "error-summary"  # announced and focused
    assert json.loads(textarea.input_value())["neurons"]["min"] == 128  # what was typed is kept
    shot(page, "new-study-error")


def test_another_teams_study_is_not_visible(browser, service: Service) -> None:  # noqa: ANN001
    context = open_context(browser, service)
    tab = watch(context.new_page(), service)
    tab.goto("/signin")
    sign_in(tab, service.other_token)
    listing = tab.locator("main").inner_text()
    assert "beta-private-study" in listing and "browser-digits" not in listing
    response = tab.goto(f"/studies/{service.study_id}")
    assert response.status == 404
    assert "does not exist" in tab.locator("main").inner_text()
    context.close()


def test_queue_and_data_sets_pages(page, tmp_path: Path) -> None:  # noqa: ANN001
    page.goto("/queue")
    assert page.locator("h2", has_text="Waiting").count() == 1
    shot(page, "queue")
    page.goto("/datasets")
    csv = tmp_path / "points.csv"
    csv.write_text("a,b,label\n" + "\n".join(f"{i},{i % 7},{i % 2}" for i in range(80)) + "\n")
    page.set_input_files("#file", str(csv))
    page.fill("#target_column", "label")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_selector(".flash")
    assert "points.csv" in page.locator("main").inner_text()
    shot(page, "datasets")


def test_accessibility_basics(page, service: Service) -> None:  # noqa: ANN001
    page.goto("/studies/new")
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
              .filter(el => el.type !== 'hidden' && el.labels.length === 0 && !el.getAttribute('aria-label'))
              .map(el => el.id || el.name)"""
    )
    assert unlabelled == []
    page.locator("body").focus()
    reached = False
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "submit-study":
            reached = True
            break
    assert reached, "Tab never reached the submit button"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # :focus-visible draws the focus ring
    page.goto(f"/studies/{service.study_id}")
    charts = page.evaluate(
        """() => Array.from(document.querySelectorAll('.chart'))
              .map(el => [el.id, el.getAttribute('role'), el.getAttribute('aria-label') || ''])"""
    )
    assert len(charts) == 4
    for chart_id, role, label in charts:
        assert role == "img" and len(label) > 20, chart_id


def test_nothing_was_loaded_from_another_host_and_no_script_failed(service: Service) -> None:
    assert service.requests_seen, "no request was recorded"
    foreign = [url for url in service.requests_seen if not url.startswith(service.base)]
    assert foreign == []
    assert service.page_errors == []
