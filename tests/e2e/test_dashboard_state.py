"""``GET /dashboard/state`` and the page's files, as the dashboard reads them: the real app on
a real center whose source switched, whose processor moved and whose handlers decided.

In-process through ``httpx.ASGITransport``; the browser test of the page is
tests/e2e/test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from eventcenter.center.app import EventCenter
from eventcenter.center.dashboard import CONTENT_SECURITY_POLICY, Viewer, dashboard_router
from eventcenter.center.http import create_app
from eventcenter.center.settings import HttpSettings
from eventcenter.domain.event import Event
from eventcenter.domain.source_modes import HYBRID
from eventcenter.handlers.context import Context
from tests.e2e.test_http import GUARD_S, Recorder, settings_for
from tests.source_center import FakeTimeCenter, center_settings
from tests.unit.source_fakes import SOURCE, TENANT, connection_lost

SPIKE_REASON = "latency of checkout at 900ms > 200ms"


async def spike(event: Event, ctx: Context) -> None:
    """What the built-in spike handler does, kept small: move to adjusting, decide."""
    if ctx.state.state == "stable":
        await ctx.state.fire(
            "begin_adjustment", reason=SPIKE_REASON, correlation_id=event.correlation_id
        )
    await ctx.decide("frequency.reduce", f"latency over threshold for {event.tenant}", event)


async def state(app: FastAPI) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        answer = await http.get("/dashboard/state")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, Any] = answer.json()
    return body


def viewing(center: EventCenter, tenant: str | None) -> FastAPI:
    """An app with the dashboard routes of ``center`` as ``tenant`` sees them."""
    app = FastAPI()
    app.include_router(dashboard_router(center, caller=lambda: Viewer(tenant)))
    return app


async def busy_center(w: FakeTimeCenter) -> None:
    """A spike handled (adjusting, a decision) for acme and globex, three orders held by a
    paused subscription, and the source's push path failing until it falls back to hybrid."""
    center = w.center
    for tenant in (TENANT, "globex"):  # one after the other: the trail's order is known
        await center.publish("latency.spike", {"service": "checkout"}, tenant=tenant)
        await asyncio.wait_for(center.processor.join(), GUARD_S)
    center.processor.pause("orders")
    for n in range(3):
        await center.publish("order.created", {"order": n}, tenant=TENANT)
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(10)
    assert w.runner.mode == HYBRID, w.runner.recent


def center_with_handlers(database_url: str, tmp_path: Path) -> FakeTimeCenter:
    w = FakeTimeCenter(center_settings(database_url, tmp_path))
    w.center.processor.subscribe("latency.spike", spike, name="spikes")
    w.center.processor.subscribe("order.#", Recorder(), name="orders")
    return w


async def test_the_state_shows_sources_switches_processor_queues_and_decisions(
    database_url: str, tmp_path: Path
) -> None:
    w = center_with_handlers(database_url, tmp_path)
    async with w:
        await busy_center(w)
        shown = await state(create_app(w.center, settings=HttpSettings(port=0, auth="none")))
        switch = w.runner.recent[-1]
        health = w.runner.status().health
        w.center.processor.resume("orders")

    assert shown["tenant"] is None
    assert shown["center"] == {"name": "default", "status": "running"}
    assert shown["poll_interval"] == 1.0
    assert shown["problems"] == []

    processor = shown["processor"]
    assert processor["state"] == "adjusting"
    assert processor["states"] == ["stable", "adjusting", "load_testing"]
    assert processor["last_transition"]["change"] == "stable -> adjusting (begin_adjustment)"
    assert processor["last_transition"]["reason"] == SPIKE_REASON

    [source] = shown["sources"]
    assert (source["key"], source["mode"]) == (f"{TENANT}/{SOURCE}", "hybrid")
    assert source["paths"] == ["push", "poll", "reconcile"]
    assert source["thresholds"] == {"failure": 3, "success": 5}
    assert source["health"]["score"] == round(health.score, 3)
    assert source["health"]["score"] <= 0.8, "hybrid is a degraded mode"
    assert source["health"]["items_pushed"] == health.items_pushed

    [shown_switch] = shown["switches"]
    assert shown_switch == {
        "tenant": TENANT,
        "source": SOURCE,
        "key": f"{TENANT}/{SOURCE}",
        "at": switch["at"],
        "previous": "event_only",
        "to": "hybrid",
        "reason": switch["reason"],
    }
    assert shown_switch["reason"].startswith("3 consecutive push failures")

    queues = {sub["name"]: sub for sub in shown["queues"]["subscriptions"]}
    assert queues["orders"]["queued"] == 3
    assert queues["orders"]["paused"] is True
    assert queues["orders"]["in_memory"] + queues["orders"]["in_store"] == 3
    assert queues["spikes"]["queued"] == 0

    decisions = shown["decisions"]
    kinds = [(row["kind"], row["tenant"]) for row in decisions]
    assert kinds == [
        ("frequency.reduce", "globex"),
        ("frequency.reduce", TENANT),
        ("transition", ""),
    ], "newest first"
    assert decisions[1]["reason"] == f"latency over threshold for {TENANT}"
    assert decisions[2]["summary"] == "stable -> adjusting (begin_adjustment)"
    assert processor["holder"] == decisions[2]["correlation_id"], "the spike moved it"
    assert shown["rca_cases"] == [], "healing is off in this center"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_tenant_sees_its_own_sources_and_decisions_and_no_center_wide_figures(
    database_url: str, tmp_path: Path
) -> None:
    w = center_with_handlers(database_url, tmp_path)
    async with w:
        await busy_center(w)
        acme = await state(viewing(w.center, TENANT))
        globex = await state(viewing(w.center, "globex"))
        w.center.processor.resume("orders")

    assert acme["tenant"] == TENANT
    assert [source["key"] for source in acme["sources"]] == [f"{TENANT}/{SOURCE}"]
    assert [switch["to"] for switch in acme["switches"]] == ["hybrid"]
    assert [(row["kind"], row["tenant"]) for row in acme["decisions"]] == [
        ("frequency.reduce", TENANT)
    ]

    assert globex["tenant"] == "globex"
    assert globex["sources"] == []
    assert globex["switches"] == []
    assert [(row["kind"], row["tenant"]) for row in globex["decisions"]] == [
        ("frequency.reduce", "globex")
    ]
    for view in (acme, globex):
        assert view["processor"]["state"] == "adjusting", "one word, the same for everyone"
        assert view["processor"]["last_transition"] is None, "its reason may name a tenant"
        assert view["processor"]["holder"] is None, "another tenant's correlation id"
        assert view["queues"] is None, "center-wide"
        assert SPIKE_REASON not in str(view)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_open_rca_case_is_listed_once_a_handler_gave_up(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path))

    async def broken(event: Event, ctx: Context) -> None:
        raise KeyError("amount")

    center.processor.subscribe("payment.captured", broken, name="payments-sync")
    app = create_app(center)
    await center.start()
    try:
        await center.publish("payment.captured", {"order": "o-2"}, tenant=TENANT)
        await asyncio.wait_for(center.processor.join(), GUARD_S)
        cases: list[dict[str, Any]] = []

        async def listed() -> bool:
            cases[:] = (await state(app))["rca_cases"]
            return bool(cases)

        await until(listed)
        globex = await state(viewing(center, "globex"))
    finally:
        await center.stop()
        center.close()

    [case] = cases
    assert (case["tenant"], case["source"], case["category"]) == (
        TENANT,
        "payments-sync",
        "handler_bug",
    )
    assert case["status"] != "closed"
    assert case["failures"] >= 1
    assert globex["rca_cases"] == [], "another tenant's case"


async def until(check: Callable[[], Awaitable[bool]], limit: float = GUARD_S) -> None:
    """Bounded polling of what another task does (the RCA runner works in its own task)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"still false after {limit} s")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_caller_that_refuses_refuses_the_state_but_not_the_page(
    database_url: str, tmp_path: Path
) -> None:
    def refuse() -> Viewer:
        raise HTTPException(401, "an API key is needed")

    center = EventCenter(settings_for(database_url, tmp_path))
    app = FastAPI()
    app.include_router(dashboard_router(center, caller=refuse))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        refused = await http.get("/dashboard/state")
        page = await http.get("/dashboard")
        script = await http.get("/dashboard/assets/dashboard.js")
        style = await http.get("/dashboard/assets/dashboard.css")
        missing = await http.get("/dashboard/assets/secrets.txt")
        climbing = await http.get("/dashboard/assets/..%2Fdashboard.py")
    center.close()

    assert refused.status_code == 401
    assert refused.json() == {"detail": "an API key is needed"}
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert 'data-testid="processor-state"' in page.text
    for text in (page.text, script.text, style.text):  # nothing loaded from elsewhere
        assert "http://" not in text
        assert "https://" not in text
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?//""", text)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "Authorization" in script.text
    assert style.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404
    assert missing.json()["field"] == "name"
    assert climbing.status_code == 404


def test_the_settings_of_the_router_are_checked(tmp_path: Path) -> None:
    center = EventCenter(settings_for(f"sqlite:///{tmp_path}/center.db", tmp_path))
    try:
        with pytest.raises(ValueError, match="poll_interval"):
            dashboard_router(center, poll_interval=0)
        with pytest.raises(ValueError, match="decisions at least 1"):
            dashboard_router(center, decisions=0)
    finally:
        center.close()


async def test_what_cannot_be_read_is_named_and_the_rest_still_served(tmp_path: Path) -> None:
    # A center that never started: no store file yet, and its writer takes no reads.
    center = EventCenter(settings_for(f"sqlite:///{tmp_path}/center.db", tmp_path))
    app = FastAPI()
    app.include_router(dashboard_router(center, read_timeout=0.2))
    try:
        shown = await state(app)
    finally:
        center.close()

    problems = {problem["part"]: problem["reason"] for problem in shown["problems"]}
    assert problems == {
        "decisions": f"no store at {tmp_path / 'center.db'} (check --data-dir / --database-url)",
        "rca_cases": "the RCA cases: the store did not answer within 0.2 s",
    }
    assert shown["decisions"] == []
    assert shown["rca_cases"] == []
    assert shown["processor"]["state"] == "stable"
    assert shown["center"]["status"] == "new"
