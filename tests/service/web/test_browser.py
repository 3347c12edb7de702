"""The web view in a real browser: headless Chromium from the distribution's packages
(``/usr/bin/chromium`` with ``chromium-driver``, which ``.ci/run`` installs), driven by
Selenium against a real ``ledger serve`` process (its API listener with ``[web]``, and its
projector) on the demo database. Screenshots of each page
go to ``test-artifacts/web/`` (git-ignored)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ledger import Ledger, RunStarted
from ledger.clock import utcnow
from ledger.events import ACTOR_NAME_MAX, CONNECTOR_NAME_MAX
from tests.service.web.support import SCRIPT, TOKENS, demo_with_open_run, tamper
from tests.support import free_port, stop_process

pytestmark = [pytest.mark.browser, pytest.mark.processes]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "web"
START_DEADLINE = 30.0

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "browser tests need chromium and chromium-driver (apt-get install -y chromium "
        "chromium-driver; .ci/run installs them)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402 (after the skip: only where Chromium is)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def wait_for(driver: WebDriver, fragment: str) -> None:
    """Wait (with a deadline) until the browser has navigated to a URL containing fragment."""
    WebDriverWait(driver, 15).until(lambda d: fragment in d.current_url)


def wait_until_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ledger serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"ledger serve did not answer within {START_DEADLINE}s")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    folder = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{folder / 'demo.db'}"
    runs = demo_with_open_run(url, folder / "spool")
    config = folder / "ledger.toml"
    tokens = "".join(
        f'[[api.tokens]]\nname = "{name}"\nscopes = {scopes!r}\n'
        f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'.replace("'", '"')
        for name, (token, scopes) in TOKENS.items()
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The sweeper must not time the open run out before the test fails it through the form.
    config.write_text(
        f'database_url = "{url}"\n[serve]\nrun_at_start = false\ngrace_period = "2s"\n'
        f'[sweeper]\ninterval = "7d"\n[spool]\ndir = "{folder / "spool"}"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\ngrace_period = "2s"\n{tokens}'
        '[web]\nenabled = true\nverify_interval = "0s"\n'
    )
    ledger = shutil.which("ledger", path=str(Path(sys.executable).parent)) or "ledger"
    process = subprocess.Popen(
        [ledger, "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(base, process)
        yield {"base": base, "url": url, **runs}
    finally:
        stop_process(process, timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def log_in(driver: WebDriver, base: str, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(base + "/web/runs")
    assert "/web/login" in driver.current_url  # no cookie: the login page
    shot(driver, "login")
    driver.find_element(By.ID, "token").send_keys(TOKENS[name][0])
    driver.find_element(By.CSS_SELECTOR, "form.stack button").click()
    wait_for(driver, "/web/runs")
    assert driver.current_url.endswith("/web/runs")


def test_pages_links_filters_and_the_fail_form(
    served: dict[str, object], browser: WebDriver
) -> None:
    base = str(served["base"])
    log_in(browser, base, "oncall")
    assert browser.find_elements(By.CSS_SELECTOR, "tr.stuck")  # the open run, highlighted
    shot(browser, "runs")
    # from the runs list to a run and back
    browser.find_element(By.LINK_TEXT, str(served["open"])).click()
    wait_for(browser, f"/web/runs/{served['open']}")
    assert browser.current_url.endswith(f"/web/runs/{served['open']}")
    assert "RunStarted" in browser.find_element(By.CSS_SELECTOR, ".timeline").text
    shot(browser, "run-open")
    browser.find_element(By.ID, "back").click()
    WebDriverWait(browser, 15).until(lambda d: d.current_url.endswith("/web/runs"))
    swept = int(str(served["open"])) - 1  # the demo's run, timed out by its sweep
    Select(browser.find_element(By.ID, "status")).select_by_value("failed")
    browser.find_element(By.ID, "filter").click()
    wait_for(browser, "status=failed")
    statuses = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.runs .status")}
    assert statuses == {"failed"}
    shot(browser, "runs-filtered")
    browser.get(f"{base}/web/runs/{swept}")
    assert "RunTimedOut" in browser.page_source
    shot(browser, "run")
    # the stuck page, and failing the open run through the form
    browser.find_element(By.LINK_TEXT, "Stuck").click()
    wait_for(browser, "/web/stuck")
    assert "night-batch" in browser.page_source
    shot(browser, "stuck")
    form = browser.find_element(By.CSS_SELECTOR, "form.fail")
    form.find_element(By.NAME, "reason").send_keys("its process was killed")
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(browser, "/fail")
    shot(browser, "confirm")
    browser.find_element(By.ID, "confirm-fail").click()
    wait_for(browser, "notice=failed")
    assert f"/web/runs/{served['open']}?notice=failed&failed_at=" in browser.current_url
    assert "its timeline shows the RunTimedOut you appended" in browser.page_source
    assert browser.find_element(By.ID, "run-status").text == "failed"
    assert "operator:oncall" in browser.page_source

    def projected(driver: WebDriver) -> bool:  # serve's projector catches up within seconds
        driver.refresh()
        return not driver.find_elements(By.ID, "projection-behind")

    WebDriverWait(browser, 20, poll_frequency=0.5).until(projected)
    assert "failed" in browser.find_element(By.CSS_SELECTOR, ".legacy").text
    shot(browser, "run-failed")
    browser.get(base + "/web/stuck")
    assert browser.find_elements(By.ID, "no-stuck")
    # the proof and integrity pages, a phone width
    browser.get(base + "/web/proof")
    assert browser.find_elements(By.CSS_SELECTOR, ".conditions .ok")
    shot(browser, "proof")
    browser.get(base + "/web/integrity")
    assert browser.find_element(By.ID, "verify-verdict").text == "OK"
    shot(browser, "integrity")
    browser.get(base + "/web/runs?at_position=5")
    assert browser.find_element(By.ID, "asof-banner").is_displayed()
    shot(browser, "as-of")
    browser.get(base + "/web/integrity?at_position=5")
    assert browser.find_element(By.ID, "verify-verdict").text == "OK"
    assert browser.find_element(By.ID, "anchor").text.startswith("5 ")
    browser.get(base + "/web/proof?at_position=5")
    assert "As the ledger stood at position 5" in browser.find_element(By.TAG_NAME, "main").text
    shot(browser, "proof-as-of")
    browser.set_window_size(390, 844)
    try:
        browser.get(f"{base}/web/runs/{swept}")
        shot(browser, "run-phone")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400  # wide tables scroll inside their box, the page does not
    finally:
        browser.set_window_size(1280, 900)


def test_a_script_in_an_error_message_does_not_run(
    served: dict[str, object], browser: WebDriver
) -> None:
    base = str(served["base"])
    log_in(browser, base, "reader")
    browser.get(f"{base}/web/runs/{served['hostile']}")
    assert SCRIPT in browser.find_element(By.CSS_SELECTOR, ".timeline").text  # shown as text
    assert browser.title != "pwned"
    browser.get(base + "/web/runs?as_of=" + urllib.request.quote(SCRIPT))
    assert SCRIPT in browser.find_element(By.ID, "error-detail").text
    assert browser.title != "pwned"
    shot(browser, "error")


def test_a_link_from_another_site_opens_the_page_of_a_logged_in_reader_in_one_click(
    served: dict[str, object], browser: WebDriver
) -> None:
    """The session cookie is SameSite=Strict: the browser withholds it from a navigation
    another site starts (a link to a run in a ticket), and a reader logged in was sent to the
    login page for a token. That page now offers the page asked for as a link of its own site,
    which the browser opens with the cookie."""
    base = str(served["base"])
    run_page = f"{base}/web/runs/{served['hostile']}"
    log_in(browser, base, "reader")
    # A page of no site of ours (an opaque origin) linking to a run, as a ticket does.
    browser.get(f'data:text/html,<a id="ticket" href="{run_page}">the failed run</a>')
    browser.find_element(By.ID, "ticket").click()
    wait_for(browser, "/web/login")
    notice = browser.find_element(By.ID, "from-another-site")
    assert "Logged in already?" in notice.text
    shot(browser, "login-from-another-site")
    browser.find_element(By.ID, "open-page").click()
    WebDriverWait(browser, 15).until(lambda d: d.current_url == run_page)
    assert "RunFinished" in browser.find_element(By.CSS_SELECTOR, ".timeline").text


def test_a_tampered_ledger_shows_the_red_banner(
    served: dict[str, object], browser: WebDriver
) -> None:
    base = str(served["base"])
    log_in(browser, base, "reader")
    tamper(str(served["url"]))
    browser.get(base + "/web/integrity")
    assert browser.find_element(By.ID, "verify-verdict").text == "PROBLEMS"
    browser.get(base + "/web/runs")
    banner = browser.find_element(By.ID, "verify-banner")
    assert banner.is_displayed()
    assert "Integrity problem" in banner.text
    shot(browser, "tampered")


def test_no_page_scrolls_sideways_at_a_phone_width_with_long_names(
    served: dict[str, object], browser: WebDriver
) -> None:
    """A connector's longest names without a space (a connector name of 100 characters, an
    actor and a run ref of 200) wrap or scroll inside their table: the page itself stays as
    wide as the phone (375 px, and 320 px, the narrowest: the runs page's 308 px day chart,
    an image since the chart became days.svg, scrolled it by 7 px there), its stuck runs in
    the Proof page and a run's transitions included."""
    base = str(served["base"])
    ledger = Ledger.from_url(str(served["url"]))
    try:
        run = (
            ledger.append(
                [
                    RunStarted(
                        source_id=9,
                        connector_name="c" * CONNECTOR_NAME_MAX,
                        run_ref="r" * ACTOR_NAME_MAX,
                        actor="a" * ACTOR_NAME_MAX,
                        occurred_at=utcnow() - timedelta(hours=3),
                    )
                ]
            )
            .events[0]
            .run_id
        )
    finally:
        ledger.close()
    log_in(browser, base, "oncall")

    def projected(driver: WebDriver) -> bool:  # serve's projector catches up within seconds
        driver.get(f"{base}/web/runs/{run}")
        return bool(driver.find_elements(By.CSS_SELECTOR, ".transitions li"))

    WebDriverWait(browser, 20, poll_frequency=0.5).until(projected)
    try:
        for phone in (375, 320):
            browser.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": phone, "height": 800, "deviceScaleFactor": 1, "mobile": False},
            )
            for path in (f"/web/runs/{run}", "/web/runs", "/web/stuck", "/web/proof"):
                browser.get(base + path)
                shot(browser, f"phone-{phone}" + path.replace("/", "-"))
                # Against the width left beside a vertical scroll bar: at 320 px the chart
                # overflowed that by 13 px while the page was still narrower than the phone.
                width, room = browser.execute_script(
                    "const page = document.documentElement;"
                    "return [page.scrollWidth, page.clientWidth]"
                )
                assert width <= room <= phone, (phone, path, width, room)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_api_docs_render_from_this_server(
    served: dict[str, object], browser: WebDriver
) -> None:
    """/docs with a read token (sent as a browser extension or a proxy would): Swagger UI from
    the server's own files draws every operation of the embedded document (no CDN, no second
    request for /openapi.json without the token)."""
    base = str(served["base"])
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders",
        {"headers": {"Authorization": f"Bearer {TOKENS['reader'][0]}"}},
    )
    try:
        browser.get(base + "/docs")
        WebDriverWait(browser, 30).until(
            lambda d: "/v1/events" in d.find_element(By.ID, "swagger-ui").text
        )
        shot(browser, "api-docs")
        text = browser.find_element(By.ID, "swagger-ui").text
        for path in ("/v1/runs/{run_id}/events", "/v1/stuck", "/v1/verify"):
            assert path in text
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
