"""The dashboard in headless Chromium, against ``eventcenter run`` as a user starts it.

The center runs a source declared in its config file: a webhook push path nobody posts to, and
an HTTP poll path this test serves. Silence is a push failure, so the source falls back to
``hybrid`` and then to ``polling_only``; a latency spike posted to ``/events`` moves the
processor to ``adjusting``. The page must show all of it by itself, without a reload.

Chromium is Debian's (``apt-get install -y chromium chromium-driver``, which .ci/run does when
it is missing), driven by playwright's sync API; ``playwright install`` is never used. Without
it the tests are skipped, under ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import unavailable
from tests.e2e.test_http import GUARD_S, JSON, SCRIPT, Running

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = GUARD_S * 1000  # turns a page that never shows something into a failure


@dataclass
class Feed:
    """The source's poll path: an HTTP feed with nothing new; counts the polls it answered."""

    port: int = 0
    polls: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/orders?since={{cursor}}"


@pytest.fixture
def feed() -> Iterator[Feed]:
    state = Feed()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.polls.append(self.path)
            body = json.dumps({"items": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test asserts on what the dashboard shows."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(GUARD_S)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; skipped (failed under CI=true) when it or playwright is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        found = shutil.which("chromium")
        elsewhere = f", found {found} instead" if found else ""
        unavailable(
            "chromium",
            f"not at {CHROMIUM}{elsewhere}: apt-get install -y chromium chromium-driver"
            " (.ci/run does when it is missing)",
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        unavailable("playwright", str(error))
    return CHROMIUM


@pytest.fixture
def page(chromium: str, tmp_path: Path) -> Iterator[Any]:
    """A tab of a fresh headless Chromium (its own profile in tmp_path)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            tab = context.pages[0] if context.pages else context.new_page()
            yield tab
        finally:
            context.close()


@pytest.fixture
def center(tmp_path: Path, feed: Feed) -> Iterator[Running]:
    """``eventcenter run --config center.toml`` with the silent source; stopped by its pid."""
    config = tmp_path / "center.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[http]\nport = 0\n"
        '[tuning]\ntester = "none"\nsettle_after = 600\n'
        '[[sources]]\ntenant = "acme"\nname = "orders"\n'
        'events = { kind = "webhook" }\n'
        f'poll = {{ kind = "http_poll", url = "{feed.url}" }}\n'
        'failure_threshold = 1\nevent_timeout = "1s"\npolling_interval = "1s"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCENTER_")}
    child = Running(config, {**env, "COLUMNS": "200", "NO_COLOR": "1"}, tmp_path)
    try:
        yield child
    finally:
        child.kill()


@pytest.fixture
def keys(center: Running, tmp_path: Path) -> dict[str, str]:
    """An admin key and a key of tenant acme, made with ``eventcenter keys create``."""
    made = {}
    for who, scope in (("admin", ["--admin"]), ("acme", ["--tenant", "acme"])):
        created = subprocess.run(
            [
                str(SCRIPT),
                "keys",
                "create",
                *scope,
                "--json",
                "--config",
                str(tmp_path / "center.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=GUARD_S,
            check=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("EVENTCENTER_")},
        )
        made[who] = json.loads(created.stdout.strip().splitlines()[-1])["key"]
    return made


def url_of(child: Running) -> str:
    started = child.line_with("running on")
    return started.split("HTTP on ", 1)[1].split(";", 1)[0]


def test_the_dashboard_shows_the_source_falling_back_and_the_processor_adjusting(
    center: Running, keys: dict[str, str], page: Any, feed: Feed, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    url = url_of(center)
    page.goto(f"{url}/dashboard#key={keys['admin']}")
    expect(page.get_by_test_id("connection")).to_have_text("live", timeout=WAIT_MS)
    expect(page.get_by_test_id("processor-state")).to_have_text("stable")

    with httpx.Client(base_url=url, timeout=GUARD_S) as client:
        posted = client.post(
            "/events",
            content=orjson.dumps(
                {
                    "type": "latency.spike",
                    "tenant": "acme",
                    "payload": {"service": "checkout", "observed_ms": 900, "threshold_ms": 200},
                }
            ),
            headers={**JSON, "Authorization": f"Bearer {keys['acme']}"},
        )
    assert posted.status_code == 202, posted.text

    source = page.locator('[data-testid="source"][data-source="acme/orders"]')
    expect(source.get_by_test_id("source-mode")).to_have_text("polling_only", timeout=WAIT_MS)
    first = page.locator('[data-testid="switch"][data-source="acme/orders"][data-to="hybrid"]')
    expect(first.get_by_test_id("switch-change")).to_have_text("event_only → hybrid")
    expect(first.get_by_test_id("switch-reason")).to_have_text(
        "1 consecutive push failures (last: no push outcome for 1s)"
    )
    expect(
        page.locator('[data-testid="switch"][data-source="acme/orders"][data-to="polling_only"]')
    ).to_have_count(1)
    expect(source.get_by_test_id("source-health")).to_have_attribute(
        "data-verdict",
        re.compile("^(degraded|unhealthy)$"),  # polling_only: at most 0.6
    )
    expect(page.get_by_test_id("processor-state")).to_have_text("adjusting", timeout=WAIT_MS)
    expect(page.get_by_test_id("processor-state-adjusting")).to_have_attribute(
        "data-current", "true"
    )
    expect(page.get_by_test_id("processor-state-stable")).to_have_attribute("data-current", "false")
    reduce = page.locator('[data-testid="decision"][data-kind="frequency.reduce"]')
    expect(reduce.get_by_test_id("decision-reason")).to_contain_text(
        "latency 900.0ms over threshold 200.0ms", timeout=WAIT_MS
    )
    transition = page.locator('[data-testid="decision"][data-kind="transition"]')
    expect(transition.get_by_test_id("decision-summary")).to_have_text(
        "stable -> adjusting (begin_adjustment)"
    )
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    code, out, err = center.stop(signal.SIGTERM)

    assert feed.polls, "the source polled its feed once in hybrid"
    assert code == 0, err
    assert "Traceback" not in err
    [stopped] = [line for line in out.splitlines() if line.startswith("stopped on SIGTERM")]
    assert ", sources, " in stopped


def test_the_key_in_the_fragment_is_sent_as_a_bearer_token_and_kept_out_of_the_address_bar(
    center: Running, keys: dict[str, str], page: Any
) -> None:
    from playwright.sync_api import expect

    url = url_of(center)

    def asks_state(request: Any) -> bool:
        return bool(request.url.endswith("/dashboard/state"))

    with page.expect_request(asks_state, timeout=WAIT_MS) as asked:
        page.goto(f"{url}/dashboard#key={keys['acme']}")
    first = asked.value.all_headers().get("authorization")
    expect(page.get_by_test_id("connection")).to_have_text("live", timeout=WAIT_MS)
    address = page.url
    kept = page.evaluate("() => sessionStorage.getItem('eventcenter.dashboard.key')")
    with page.expect_request(asks_state, timeout=WAIT_MS) as asked:
        page.reload()
    after_reload = asked.value.all_headers().get("authorization")

    assert first == f"Bearer {keys['acme']}"
    assert address == f"{url}/dashboard", "the key left the address bar"
    assert kept == keys["acme"]
    assert after_reload == f"Bearer {keys['acme']}", "kept for the tab's session"


def test_a_refused_key_is_said_on_the_page(
    center: Running, keys: dict[str, str], page: Any
) -> None:
    from playwright.sync_api import expect

    url = url_of(center)
    page.goto(f"{url}/dashboard#key=wrong")
    notice = page.get_by_test_id("auth-needed")
    expect(notice).to_be_visible(timeout=WAIT_MS)  # refused by the center itself
    # Then a refusal with a known text, and a good key after it.
    page.route(
        "**/dashboard/state",
        lambda route: route.fulfill(
            status=401, content_type="application/json", body='{"detail": "unknown API key"}'
        ),
    )
    page.goto(f"{url}/dashboard#key={keys['acme']}")
    page.reload()

    expect(notice).to_be_visible(timeout=WAIT_MS)
    expect(notice).to_have_text(
        "this API key was refused: unknown API key. Open /dashboard#key=YOUR_KEY"
    )
    expect(page.get_by_test_id("connection")).to_have_attribute("data-status", "refused")
    page.unroute("**/dashboard/state")
    expect(page.get_by_test_id("connection")).to_have_text("live", timeout=WAIT_MS)
    expect(notice).to_be_hidden()
