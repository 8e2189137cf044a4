"""The operator page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): it renders real data, its retry button makes a real delivery, users are kept apart, and
a forged cross-site form is refused.

Each user reaches the page through their own port, where a small middleware sets the user header
the way an authenticating proxy would. ``SAVE_SCREENSHOT=1`` writes docs/operator-page.png.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import peewee
import pytest
import requests

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.web import create_app, operator_mounts
from pacifica.dispatcher.storage import DeliveryStatus, EventStatus, utcnow
from pacifica.dispatcher.storage.schema import Delivery, EventRecord
from pacifica.dispatcher.subscriptions.delivery import attempt
from tests.conftest import StubRequest, StubServer, service_required
from tests.operations_data import Population, ops_router, populate, receive

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parents[2] / "docs"


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        del args


def as_user(app: Callable[..., Any], user: str) -> Callable[..., Any]:
    """What an authenticating proxy does: every request names this user."""

    def with_user(environ: dict[str, Any], start_response: Any) -> Any:
        environ["HTTP_HTTP_REMOTE_USER"] = user
        return app(environ, start_response)

    return with_user


@dataclass
class Site:
    url: str
    server: WSGIServer


def serve(app: Callable[..., Any]) -> Site:
    server = make_server("127.0.0.1", 0, app, ThreadingWSGIServer, QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Site(f"http://127.0.0.1:{server.server_address[1]}", server)


def poll(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def target() -> Iterator[StubServer]:
    server = StubServer(lambda request: request.answer(200)).start()
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        service_required(
            "Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService
    except ImportError:
        service_required("selenium (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1360,1500",
    ):
        options.add_argument(flag)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"i15-chromium-{uuidlib.uuid4().hex}"
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Deployment:
    sites: dict[str, Site]
    population: Population
    sent: list[int]


@pytest.fixture
def deployment(
    sqlite_db: peewee.Database, tmp_path: Path, target: StubServer
) -> Iterator[Deployment]:
    settings = Settings.from_env(
        {
            "DISPATCHER_DATA_DIR": str(tmp_path),
            "ADMIN_USERS": "root",
            "ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
            "REQUEST_TIMEOUT": "5",
        }
    )
    population = populate(f"{target.url}/hook")
    spread_over_the_day()
    sent: list[int] = []
    session = requests.Session()

    def send(ids: list[int]) -> None:
        """The deliveries' worker, in process: attempt each one now (in the background)."""
        sent.extend(ids)

        def run() -> None:
            for key in ids:
                attempt(key, settings, session)

        threading.Thread(target=run, daemon=True).start()

    mounts = operator_mounts(settings, ["index", "archive"], send, None)
    app = create_app(settings, lambda events: [], mounts)
    sites = {user: serve(as_user(app, user)) for user in ("root", "alice", "bob")}
    sites["evil"] = serve(evil_site)
    yield Deployment(sites, population, sent)
    for site in sites.values():
        site.server.shutdown()
        site.server.server_close()


def spread_over_the_day() -> None:
    """Move the events back over the last hours, so the charts have a shape; add recent traffic."""
    dispatch.process_many(receive(range(100, 400)), ops_router())
    now = utcnow()
    waiting = EventRecord.status == int(EventStatus.ACCEPTED)
    for number, record in enumerate(EventRecord.select(EventRecord.uuid).where(~waiting)):
        back = timedelta(minutes=(number * 37) % 1380 + 2 + (number % 5) * (number % 3))
        EventRecord.update(
            created=now - back, finished=now - back + timedelta(seconds=number % 7 + 0.2)
        ).where(EventRecord.uuid == record.uuid).execute()
    receive(range(1000, 1012))  # recent arrivals still waiting


def evil_site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Another origin whose page POSTs a form to the dispatcher as soon as it loads."""
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    page = (
        f'<form id="f" method="post" action="{query["action"]}"><input name="token" '
        f'value="{query.get("token", "")}"></form><script>document.getElementById("f").submit()'
        "</script>"
    )
    start_response("200 OK", [("Content-Type", "text/html")])
    return [page.encode()]


def test_the_page_renders_real_data_with_charts(browser: Any, deployment: Deployment) -> None:
    from selenium.webdriver.common.by import By

    browser.get(deployment.sites["root"].url + "/ui/")
    assert "operations" in browser.title
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 2
    for chart in charts:
        size = chart.size
        assert size["width"] > 300
        assert size["height"] > 100
        assert chart.find_elements(By.TAG_NAME, "rect"), "bars drawn"
    text = browser.find_element(By.TAG_NAME, "body").text
    for expected in ("archive feed", "bob hook", "ConnectionError", "Re-enable", "Retry dead"):
        assert expected in text
    if os.environ.get("SAVE_SCREENSHOT"):
        DOCS.mkdir(exist_ok=True)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1360, "height": int(height) + 20, "deviceScaleFactor": 1, "mobile": False},
        )
        browser.save_screenshot(str(DOCS / "operator-page.png"))


def test_the_retry_button_delivers_a_dead_delivery_again(
    browser: Any, deployment: Deployment, target: StubServer
) -> None:
    from selenium.webdriver.common.by import By

    key = deployment.population.alice["archive feed"]
    browser.get(deployment.sites["alice"].url + "/ui/")
    before = len(target.seen("/hook"))
    row = browser.find_element(By.ID, f"sub-{key}")
    row.find_element(By.XPATH, ".//button[text()='Retry dead']").click()
    poll(lambda: browser.current_url.endswith(f"/ui/#sub-{key}"))
    poll(lambda: len(target.seen("/hook")) == before + 1)
    poll(
        lambda: (
            Delivery.get(Delivery.id == deployment.sent[0]).status == int(DeliveryStatus.DELIVERED)
        )
    )
    delivered: StubRequest = target.seen("/hook")[-1]
    assert delivered.json()["data"] == {"transaction": 1}


def test_a_user_cannot_see_or_act_on_another_users_subscription(
    browser: Any, deployment: Deployment
) -> None:
    from selenium.webdriver.common.by import By

    bob = deployment.sites["bob"].url
    browser.get(bob + "/ui/")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "bob hook" in text
    assert "archive feed" not in text
    # Bob's own (valid) token, posted from his own page's origin, on Alice's subscription:
    from pacifica.dispatcher.service.operations import form_token

    key = deployment.population.alice["archive feed"]
    answer = requests.post(
        f"{bob}/ui/subscriptions/{key}/retry",
        data={"token": form_token("bob")},
        headers={"Origin": bob},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 404
    assert deployment.sent == []


def test_a_forged_cross_site_post_is_refused(browser: Any, deployment: Deployment) -> None:
    from selenium.webdriver.common.by import By

    from pacifica.dispatcher.service.operations import form_token

    key = deployment.population.alice["archive feed"]
    action = f"{deployment.sites['alice'].url}/ui/subscriptions/{key}/retry"
    # Even holding Alice's real token, a form from another origin is refused.
    browser.get(f"{deployment.sites['evil'].url}/?action={action}&token={form_token('alice')}")
    poll(lambda: browser.current_url.startswith(action))
    assert "403" in browser.find_element(By.TAG_NAME, "body").text
    assert deployment.sent == []
    dead = Delivery.get(
        Delivery.subscription == uuidlib.UUID(key), Delivery.status == int(DeliveryStatus.DEAD)
    )
    assert dead.attempts == 1
