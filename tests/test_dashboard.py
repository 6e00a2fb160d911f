"""The dashboard in a real browser (Debian's chromium driven by Selenium through chromium-driver),
against a real deployment: Docker, HAProxy, `bluegreen serve`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BLUEGREEN, REPO, Project, Traffic, component_missing, wait_for
from tests.serving import TOKEN, Served

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
OUTPUT = Path(os.environ.get("BLUEGREEN_TEST_OUTPUT", REPO / "tests" / "output"))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        component_missing("chromium and chromium-driver are needed (scripts/provision.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1100", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def text_of(driver: Any, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("id", element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def click(driver: Any, element_id: str) -> None:
    """Click the element, finding it again if the page replaced it in between (it updates itself)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt() -> bool:
        try:
            driver.find_element("id", element_id).click()
            return True
        except StaleElementReferenceException:
            return False

    assert wait_for(attempt, timeout=10), f"#{element_id} kept being replaced"


def sign_in(driver: Any, served: Served, token: str = TOKEN) -> None:
    driver.get(f"{served.url}/")
    driver.find_element("id", "token").send_keys(token)
    driver.find_element("id", "sign-in").click()


def proxy_version(project: Project) -> str:
    return str(httpx.get(f"{project.proxy_url}/version", timeout=5).json()["version"])


def test_an_unauthenticated_browser_sees_the_sign_in_form_and_nothing_else(served: Served, browser: Any) -> None:
    browser.get(f"{served.url}/")
    assert browser.find_element("id", "login").is_displayed()
    page = browser.page_source
    assert "live-color" not in page and "v2" not in page and served.project.name not in page
    for path in ("/ui/rollback", "/ui/stream"):
        assert httpx.get(f"{served.url}{path}", timeout=10).status_code == 401
    refused = httpx.post(f"{served.url}/ui/rollback", data={"from": "v2"}, timeout=10)
    assert refused.status_code == 401
    sign_in(browser, served, "not-the-token-0000000000")
    assert wait_for(lambda: text_of(browser, "login-error") == "Wrong token.", timeout=10)
    assert browser.get_cookie("bluegreen_session") is None
    sign_in(browser, served)
    assert wait_for(lambda: text_of(browser, "live-color") == "green", timeout=20), browser.page_source
    assert text_of(browser, "live-version") == "v2"
    cookie = browser.get_cookie("bluegreen_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert TOKEN not in browser.current_url
    # A signed-in session still needs the form's CSRF token to change anything.
    session = httpx.post(f"{served.url}/ui/rollback", data={"from": "v2"}, timeout=10,
                         cookies={"bluegreen_session": cookie["value"]})
    assert session.status_code == 403
    assert served.live() == ("green", "v2") and proxy_version(served.project) == "v2"  # nothing moved
    click(browser, "sign-out")
    assert wait_for(lambda: bool(browser.find_elements("id", "login")), timeout=10)


def test_the_dashboard_follows_a_release_in_place_and_rolls_back_with_one_click(
        served: Served, browser: Any) -> None:
    project = served.project
    sign_in(browser, served)
    assert wait_for(lambda: text_of(browser, "live-color") == "green", timeout=20)
    browser.execute_script("window.bluegreenMarker = 42;")  # gone if the page reloads
    traffic = Traffic(project.proxy_url)
    release = subprocess.Popen([*BLUEGREEN, "release", "bluegreen-model:v1", "--steps", "25,100", "--bake", "60s"],
                               cwd=project.root, env={**os.environ, **project.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: text_of(browser, "release-step") == "shift-25", timeout=90), browser.page_source
        assert text_of(browser, "release-version") == "v1"
        assert wait_for(lambda: text_of(browser, "bake-left").endswith(" s"), timeout=10)
        first = text_of(browser, "bake-left")
        assert wait_for(lambda: text_of(browser, "bake-left") not in ("", first), timeout=10)  # counting down
        assert browser.execute_script("return window.bluegreenMarker;") == 42  # updated in place
        assert browser.find_element("tag name", "body").get_attribute("data-stream") == "live"
        assert wait_for(lambda: "25 %" in text_of(browser, "weight-blue"), timeout=10)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "dashboard-release.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        click(browser, "abort")
        assert release.wait(timeout=120) != 0  # aborted
        assert wait_for(lambda: "Abort" in text_of(browser, "flash"), timeout=30), browser.page_source
    finally:
        if release.poll() is None:
            release.kill()
        release.communicate(timeout=60)
        traffic.stop()
    assert proxy_version(project) == "v2"
    assert wait_for(lambda: text_of(browser, "release-none") != "", timeout=20)
    # One-click rollback: the confirmation names the version it goes back to.
    assert wait_for(lambda: bool(browser.find_elements("id", "rollback")), timeout=20), browser.page_source
    click(browser, "rollback")
    assert text_of(browser, "confirm-version") == "v1"
    browser.find_element("id", "reason").send_keys("checked in a browser")
    click(browser, "confirm-rollback")
    assert wait_for(lambda: text_of(browser, "flash").startswith("Rolled back: blue serves v1"), timeout=30)
    assert wait_for(lambda: proxy_version(project) == "v1", timeout=10)  # traffic moved, through the proxy
    assert wait_for(lambda: text_of(browser, "live-version") == "v1", timeout=20)
    assert traffic.failed == 0, f"{traffic.failed} of {traffic.sent} requests failed"
    history = served.call("GET", "/api/history").json()["releases"]
    rollback = next(r for r in history if r["kind"] == "rollback")
    assert rollback["reason"] == "checked in a browser" and rollback["actor"].startswith("dashboard@")
    # The same form sent again (a second click, a stale page) names v2 as the version to leave: nothing moves.
    csrf = browser.find_element("name", "csrf").get_attribute("value")
    again = httpx.post(f"{served.url}/ui/rollback", data={"csrf": csrf, "from": "v2"}, timeout=30,
                       cookies={"bluegreen_session": browser.get_cookie("bluegreen_session")["value"]})
    assert again.status_code == 303 and "already done" in again.cookies.get("bluegreen_flash", "")
    assert proxy_version(project) == "v1"
    if shutil.which("file"):
        assert "PNG image" in subprocess.run(["file", str(OUTPUT / "dashboard-release.png")], capture_output=True,
                                             text=True).stdout


def test_a_release_waiting_for_approval_shows_its_checks_and_the_approve_button_lets_it_go_on(
        served: Served, browser: Any) -> None:
    project = served.project
    config = project.root / "bluegreen.toml"
    config.write_text(config.read_text() + '\n[[release.checks]]\nname = "smoke"\nkind = "web"\n'
                      'url = "{candidate}/health"\npointer = "/status"\nequals = "ok"\n'
                      '\n[[release.checks]]\nname = "sign-off"\nkind = "approval"\ntimeout = "5m"\n')
    sign_in(browser, served)
    assert wait_for(lambda: text_of(browser, "live-color") == "green", timeout=20)
    assert not browser.find_elements("id", "approve")  # nothing waits: no Approve button
    release = subprocess.Popen([*BLUEGREEN, "release", "bluegreen-model:v1", "--steps", "100"],
                               cwd=project.root, env={**os.environ, **project.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: "sign-off" in text_of(browser, "awaiting-approval"), timeout=120), \
            browser.page_source
        assert "left, then rollback" in text_of(browser, "awaiting-approval")
        checks = text_of(browser, "checks")
        assert "smoke" in checks and "passed" in checks and "/status is 'ok'" in checks
        assert text_of(browser, "abort") == "Reject (abort)" and not browser.find_elements("id", "promote")
        OUTPUT.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(OUTPUT / "dashboard-approval.png"))
        click(browser, "approve")
        assert wait_for(lambda: text_of(browser, "flash").startswith("Approve"), timeout=30), browser.page_source
        _out, err = release.communicate(timeout=120)
        assert release.returncode == 0, err
    finally:
        if release.poll() is None:
            release.kill()
            release.communicate(timeout=60)
    assert proxy_version(project) == "v1"
    gate = next(s for s in served.call("GET", "/api/history").json()["releases"][0]["steps"] if s["name"] == "gate")
    [check] = [c for c in gate["detail"]["checks"] if c["name"] == "sign-off"]
    assert check["ok"] and check["by"].startswith("dashboard@")
    assert "gate: check sign-off (approval) passed in" in err  # the release's own terminal shows it too
    events = [e["text"] for e in served.call("GET", "/api/events").json()]
    assert any(re.match(r"approved sign-off at gate: release \d+ goes on", text) for text in events)
