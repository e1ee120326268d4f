"""The browse pages in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, which `.ci/browser.sh` installs in CI) driven by selenium, against
`BrowseServer` on a generated store.

It opens the conversation view and the chart pages, checks what they show (a known message's
text; one SVG mark per data row of each chart) and saves screenshots: always as test artifacts
(`$CHATLEDGER_TEST_ARTIFACTS`, default `<tmp>/chatledger-artifacts/browse`), and into
`docs/browse/` when `CHATLEDGER_DOCS_SCREENSHOTS=1` (how the pictures of docs/browse.md are made).

Without Chromium it skips, with the reason, except in CI (`CI` set), where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

pytest.importorskip("datasette", reason="the browse extra is not installed")

from browse_store import GENERAL, KNOWN_TEXT, make_store

from chatledger.projections.browse.server import BrowseServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "browse"
WINDOW = (1280, 900)
RENDER_TIMEOUT = 30.0

if not (CHROMIUM and CHROMEDRIVER):
    reason = ("no chromium or chromedriver on PATH (Debian: apt-get install chromium "
              "chromium-driver; .ci/browser.sh does it in CI)")
    if os.environ.get("CI"):
        raise RuntimeError(f"the browser test must run in CI, but there is {reason}")
    pytest.skip(reason, allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _artifacts() -> Path:
    root = os.environ.get("CHATLEDGER_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "chatledger-artifacts"
    path = Path(root) / "browse"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    store = make_store(tmp_path_factory.mktemp("browse-chromium"))
    with BrowseServer([store.path], port=0) as running:
        running.start()
        yield running, store


@pytest.fixture(scope="module")
def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-extensions", "--no-first-run", "--hide-scrollbars",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    # The driver from Debian's package, given by path: selenium then downloads nothing.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(RENDER_TIMEOUT)
    yield driver
    driver.quit()


def _save(driver, name: str, *, max_height: int = 2400) -> Path:
    """A screenshot of the whole page (up to `max_height` pixels tall)."""
    path = _artifacts() / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WINDOW[0], min(max(height, WINDOW[1]), max_height))
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(*WINDOW)
    if os.environ.get("CHATLEDGER_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / f"{name}.png")
    return path


def _wait_for_charts(driver) -> None:
    WebDriverWait(driver, RENDER_TIMEOUT).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts-rendered")
        or d.find_element(By.TAG_NAME, "body").get_attribute("data-charts-error"))
    error = driver.find_element(By.TAG_NAME, "body").get_attribute("data-charts-error")
    assert not error, f"a chart failed to draw: {error}"


def _marks(driver, chart: str, mark: str) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, f"#chart-{chart} svg g.mark-{mark}.role-mark > path"))


def _local_scripts_only(driver, base: str) -> None:
    sources = driver.execute_script(
        "return Array.from(document.scripts).map(s => s.src).filter(Boolean)")
    assert sources and all(s.startswith(base) for s in sources), sources


def test_conversation_view_shows_the_messages(server, browser):
    running, _ = server
    started = time.perf_counter()
    browser.get(f"{running.url}/conversation?{urlencode({'cid': GENERAL, 'before': ''})}")
    WebDriverWait(browser, RENDER_TIMEOUT).until(
        lambda d: KNOWN_TEXT in d.find_element(By.TAG_NAME, "body").text)
    table = browser.find_element(By.CSS_SELECTOR, "table.rows-and-columns").text
    assert KNOWN_TEXT in table and "thumbsup 1" in table and "sending" in table
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "td a")]
    assert any("/-/chatledger/alice/message?id=" in href for href in links)
    assert _save(browser, "conversation").stat().st_size > 10_000
    print(f"conversation page: {time.perf_counter() - started:.2f} s")


def test_chart_page_draws_one_mark_per_row(server, browser):
    running, _ = server
    base = f"http://127.0.0.1:{running.port}/"
    with urllib.request.urlopen(f"{base}-/chatledger/alice/charts.json") as answer:
        rows = {c["name"]: len(c["rows"]) for c in json.load(answer)["charts"]}
    browser.get(f"{base}-/chatledger/alice/charts")
    _wait_for_charts(browser)
    _local_scripts_only(browser, base)
    assert _marks(browser, "events_by_type", "rect") == rows["events_by_type"] > 0
    assert _marks(browser, "events_by_channel", "rect") == rows["events_by_channel"] > 0
    assert _marks(browser, "sync_gaps", "rect") == rows["sync_gaps"] > 0
    assert _marks(browser, "catch_ups", "rect") == rows["catch_ups"] > 0
    assert _marks(browser, "outbox", "symbol") == rows["outbox"] > 0
    assert _marks(browser, "outbox", "line") == 5  # one line per state
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "last sync point: " in text and "The outbox over time" in text
    _save(browser, "charts")


def test_message_life_timeline(server, browser):
    running, store = server
    base = f"http://127.0.0.1:{running.port}/"
    browser.get(f"{base}-/chatledger/alice/message?{urlencode({'id': store.traced_message})}")
    _wait_for_charts(browser)
    entries = browser.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
    assert entries and _marks(browser, "message_life", "symbol") == len(entries)
    assert "Notes are in the shared folder (v2)" in browser.find_element(By.ID, "message-now").text
    _save(browser, "message")
