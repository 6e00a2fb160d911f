"""The fleet's dashboard in a real browser (Debian's chromium through chromium-driver): the overview of
every deployment and each deployment's page, against a real fleet (one HAProxy, three deployments'
colours on Docker) and `bluegreen fleet serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Traffic, free_ports, wait_for
from tests.serving import TOKEN, stop
from tests.test_dashboard import OUTPUT, browser, click, text_of  # noqa: F401 - browser is a fixture
from tests.test_fleet import Fleet, FleetServe, fleet, start_fleet_serve  # noqa: F401 - fleet is a fixture


def version_through_proxy(f: Fleet, role: str) -> str:
    path, host = {"fraud": ("/predict", "fraud.example.com"), "churn": ("/churn/predict", None),
                  "ranker": ("/ranker/predict", "ml.example.com")}[role]
    return str(f.predict(path, host=host).json()["model_version"])


@pytest.fixture(scope="module")
def broken_serve(fleet: Fleet) -> Iterator[FleetServe]:  # noqa: F811 - the imported fixture
    """fleet serve started while ranker's settings do not validate (a key it does not know)."""
    settings = fleet.root / "ranker" / "bluegreen.toml"
    good = settings.read_text()
    settings.write_text(good.replace("[proxy]", "[proxy]\nbogus = 1", 1))
    (port,) = free_ports(1)
    proc = start_fleet_serve(fleet, port)
    try:
        yield FleetServe(f"http://127.0.0.1:{port}", proc)
    finally:
        settings.write_text(good)
        stop(proc)


def sign_in(driver: Any, url: str, token: str = TOKEN) -> None:
    driver.get(f"{url}/")
    driver.find_element("id", "token").send_keys(token)
    driver.find_element("id", "sign-in").click()


def test_the_overview_lists_every_deployment_a_broken_one_with_its_error_and_rolls_one_back_from_its_page(
        fleet: Fleet, broken_serve: FleetServe, browser: Any) -> None:  # noqa: F811 - imported fixtures
    """Sign in with the fleet's token; the overview shows each deployment's live version and the broken
    one's error; fixed, it is taken in again; a deployment's page under /d/NAME/ streams in place,
    rolls that deployment back with one click and a confirmation and drills it, and no other
    deployment moves."""
    url = broken_serve.url
    fraud, churn, ranker = fleet.names["fraud"], fleet.names["churn"], fleet.names["ranker"]
    # Nothing without a session: the overview is the sign-in form; a deployment's page and stream refuse.
    browser.get(f"{url}/")
    assert browser.find_element("id", "login").is_displayed() and fraud not in browser.page_source
    for path in (f"/d/{fraud}/", f"/d/{fraud}/ui/rollback", f"/d/{fraud}/ui/stream", "/ui/stream"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 401, path
    assert httpx.post(f"{url}/d/{fraud}/ui/rollback", data={"from": "v1"}, timeout=10).status_code == 401

    for name in (fraud, churn):  # both on v2, v1 warm: each has a rollback to offer
        released = fleet.run("-d", name, "release", "bluegreen-model:v2", "--steps", "100")
        assert released.code == 0, released.err
    loads = {"fraud": Traffic(fleet.url, headers={"Host": "fraud.example.com"}),
             "churn": Traffic(f"{fleet.url}/churn")}
    settings = fleet.root / "ranker" / "bluegreen.toml"
    try:
        sign_in(browser, url)
        assert wait_for(lambda: text_of(browser, f"version-{fraud}") == "v2", timeout=30), browser.page_source
        assert text_of(browser, f"version-{churn}") == "v2"
        assert "unknown key proxy.bogus" in text_of(browser, f"error-{ranker}")
        assert browser.find_element("tag name", "body").get_attribute("data-stream") in ("live", None)
        assert wait_for(lambda: browser.find_element("tag name", "body").get_attribute("data-stream") == "live",
                        timeout=20)
        assert wait_for(lambda: text_of(browser, f"errors-{fraud}") == "0.00 %", timeout=30)  # traffic read
        for _ in range(2):  # two more readings, so that the figures are a window's under this traffic
            read = text_of(browser, "updated")
            assert wait_for(lambda: text_of(browser, "updated") not in ("", read), timeout=20)  # noqa: B023
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "fleet-dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        cookie = browser.get_cookie("bluegreen_session")
        assert cookie["httpOnly"] is True and TOKEN not in cookie["value"]

        # Fixed, the broken deployment is served again, and the overview says so in place.
        settings.write_text(settings.read_text().replace("[proxy]\nbogus = 1", "[proxy]", 1))
        assert wait_for(lambda: text_of(browser, f"version-{ranker}") == "v1", timeout=40), browser.page_source

        # A deployment's page: today's page, under its prefix, updated in place by its own stream.
        click(browser, f"link-{churn}")
        assert wait_for(lambda: text_of(browser, "live-version") == "v2", timeout=20), browser.page_source
        assert browser.current_url == f"{url}/d/{churn}/"
        assert wait_for(lambda: browser.find_element("tag name", "body").get_attribute("data-stream") == "live",
                        timeout=20)
        # A session alone changes nothing: the form's CSRF token is needed.
        forged = httpx.post(f"{url}/d/{churn}/ui/rollback", data={"from": "v2"}, timeout=10,
                            cookies={"bluegreen_session": cookie["value"]})
        assert forged.status_code == 403 and version_through_proxy(fleet, "churn") == "v2"
        unknown = httpx.get(f"{url}/d/nobody/", timeout=10, cookies={"bluegreen_session": cookie["value"]})
        assert unknown.status_code == 404 and "no deployment &#x27;nobody&#x27; in the fleet" in unknown.text

        assert wait_for(lambda: bool(browser.find_elements("id", "rollback")), timeout=20), browser.page_source
        click(browser, "rollback")
        assert text_of(browser, "confirm-version") == "v1" and text_of(browser, "confirm-project") == churn
        browser.find_element("id", "reason").send_keys("one deployment, from the fleet's dashboard")
        click(browser, "confirm-rollback")
        assert wait_for(lambda: text_of(browser, "flash").startswith("Rolled back: blue serves v1"), timeout=30), \
            browser.page_source
        assert browser.current_url == f"{url}/d/{churn}/"
        assert wait_for(lambda: text_of(browser, "live-version") == "v1", timeout=20)
        assert wait_for(lambda: version_through_proxy(fleet, "churn") == "v1", timeout=10)

        # The page's drill button drills churn only.
        click(browser, "drill")
        assert wait_for(lambda: text_of(browser, "flash").startswith("Drill: "), timeout=120), browser.page_source
        assert len(broken_serve.call("GET", f"/api/deployments/{churn}/drills").json()) == 1
        assert broken_serve.call("GET", f"/api/deployments/{fraud}/drills").json() == []

        # Only churn moved: fraud still serves v2 and ranker v1, through the proxy and in the overview.
        assert version_through_proxy(fleet, "fraud") == "v2" and version_through_proxy(fleet, "ranker") == "v1"
        assert broken_serve.live(fraud) == ("green", "v2")
        click(browser, "overview-link")
        assert wait_for(lambda: text_of(browser, f"version-{churn}") == "v1", timeout=20), browser.page_source
        assert text_of(browser, f"version-{fraud}") == "v2" and text_of(browser, f"version-{ranker}") == "v1"
    finally:
        for load in loads.values():
            load.stop()
    assert {k: v.failed for k, v in loads.items()} == {"fraud": 0, "churn": 0}, {k: v.sent for k, v in loads.items()}
    history = broken_serve.call("GET", f"/api/deployments/{churn}/history").json()["releases"]
    rollback = next(r for r in history if r["kind"] == "rollback")
    assert rollback["reason"] == "one deployment, from the fleet's dashboard"
    assert rollback["actor"].startswith("dashboard@")
    fraud_history = broken_serve.call("GET", f"/api/deployments/{fraud}/history").json()["releases"]
    assert fraud_history[0]["kind"] == "release"  # no rollback of fraud
    assert fleet.run("-d", fraud, "rollback").code == 0  # the module's fleet is left on v1 everywhere
    status = json.loads(fleet.run("fleet", "status", "--json").out)
    assert {m["name"]: m["version"] for m in status["members"]} == {fraud: "v1", churn: "v1", ranker: "v1"}
