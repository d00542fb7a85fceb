"""``GET /metrics`` as Prometheus scrapes it: the real app on a real center (SQLite).

The text is parsed with prometheus_client's own parser, and the figures are compared with what
the test published and what the handlers did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from eventcenter.center.app import EventCenter
from eventcenter.center.http import create_app
from eventcenter.center.settings import HttpSettings
from eventcenter.domain.event import Event
from eventcenter.handlers.context import Context
from tests.e2e.test_http import GUARD_S, JSON, Recorder, settings_for
from tests.source_center import FakeTimeCenter, center_settings
from tests.unit.source_fakes import SOURCE, TENANT

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

#: Every caller is admin: these tests are about the figures (keys: tests/e2e/test_api_keys.py).
OPEN = HttpSettings(auth="none")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def refuse(event: Event, ctx: Context) -> None:
    raise RuntimeError("payment refused by the test")


async def scrape(center: EventCenter) -> tuple[httpx.Response, Samples]:
    transport = httpx.ASGITransport(app=create_app(center, settings=OPEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text
    return answer, parse(answer.text)


async def publish(center: EventCenter, *events: dict[str, object]) -> None:
    transport = httpx.ASGITransport(app=create_app(center, settings=OPEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        answer = await http.post("/events", content=orjson.dumps(list(events)), headers=JSON)
    assert answer.status_code == 202, answer.text
    await asyncio.wait_for(center.processor.join(), GUARD_S)


@pytest.fixture
async def center(database_url: str, tmp_path: Path) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(database_url, tmp_path))
    await built.start()
    yield built
    await built.stop()
    built.close()


def envelope(type: str, tenant: str) -> dict[str, object]:
    return {"type": type, "tenant": tenant, "payload": {"order": 1}}


async def test_the_counts_by_type_and_tenant_are_what_was_published_and_handled(
    center: EventCenter,
) -> None:
    recorder = Recorder()
    center.processor.subscribe(["order.#"], recorder, name="orders")
    center.processor.subscribe(["payment.#"], refuse, name="payments")
    await publish(
        center,
        *[envelope("order.created", "acme")] * 3,
        *[envelope("order.shipped", "globex")] * 2,
        envelope("payment.refused", "acme"),
    )
    assert len(recorder.seen) == 5

    answer, samples = await scrape(center)

    assert answer.headers["content-type"].startswith("text/plain; version=")
    by_type = {
        name: value(samples, f"eventcenter_type_events_{name}_total", type="order.created")
        for name in ("published", "handled", "failed", "retried", "dead_lettered")
    }
    assert by_type == {"published": 3, "handled": 3, "failed": 0, "retried": 0, "dead_lettered": 0}
    assert value(samples, "eventcenter_type_events_published_total", type="order.shipped") == 2
    assert value(samples, "eventcenter_type_events_handled_total", type="order.shipped") == 2
    assert value(samples, "eventcenter_tenant_events_published_total", tenant="acme") == 4
    assert value(samples, "eventcenter_tenant_events_published_total", tenant="globex") == 2
    assert value(samples, "eventcenter_tenant_events_handled_total", tenant="globex") == 2
    # The refused payment: every attempt failed (max_attempts 2), then it was dead-lettered.
    refused = {
        name: value(samples, f"eventcenter_type_events_{name}_total", type="payment.refused")
        for name in ("published", "handled", "failed", "retried", "dead_lettered")
    }
    assert refused == {"published": 1, "handled": 0, "failed": 2, "retried": 1, "dead_lettered": 1}
    assert value(samples, "eventcenter_tenant_events_dead_lettered_total", tenant="acme") == 1

    assert value(samples, "eventcenter_subscription_deliveries_queued", subscription="orders") == 0
    assert value(samples, "eventcenter_processor_state", state="stable") == 1
    assert value(samples, "eventcenter_processor_state", state="load_testing") == 0
    assert value(samples, "eventcenter_tuning_busy") == 0


async def test_deliveries_waiting_for_a_subscription_are_shown_as_queued(
    center: EventCenter,
) -> None:
    recorder = Recorder()
    center.processor.subscribe(["order.#"], recorder, name="orders")
    center.processor.pause("orders")
    transport = httpx.ASGITransport(app=create_app(center, settings=OPEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        body = orjson.dumps([envelope("order.created", "acme")] * 4)
        assert (await http.post("/events", content=body, headers=JSON)).status_code == 202
        _, samples = await scrape(center)
        queued = value(samples, "eventcenter_subscription_deliveries_queued", subscription="orders")
        assert queued == 4
    center.processor.resume("orders")
    await asyncio.wait_for(center.processor.join(), GUARD_S)
    _, samples = await scrape(center)
    assert value(samples, "eventcenter_subscription_deliveries_queued", subscription="orders") == 0
    assert len(recorder.seen) == 4


async def test_two_centers_in_one_process_do_not_share_metrics(
    database_url: str, tmp_path: Path
) -> None:
    first = EventCenter(settings_for(f"sqlite:///{tmp_path}/first.db", tmp_path / "first"))
    second = EventCenter(settings_for(f"sqlite:///{tmp_path}/second.db", tmp_path / "second"))
    for built in (first, second):
        built.processor.subscribe(["order.#"], Recorder(), name="orders")
        await built.start()
    try:
        await publish(first, *[envelope("order.created", "acme")] * 2)
        await publish(second, envelope("order.shipped", "globex"))

        _, one = await scrape(first)
        _, two = await scrape(second)
    finally:
        for built in (first, second):
            await built.stop()
            built.close()

    assert value(one, "eventcenter_type_events_published_total", type="order.created") == 2
    assert value(one, "eventcenter_type_events_published_total", type="order.shipped") is None
    assert value(two, "eventcenter_type_events_published_total", type="order.shipped") == 1
    assert value(two, "eventcenter_type_events_published_total", type="order.created") is None
    # Nothing went to the process-wide default registry.
    assert not [f for f in REGISTRY.collect() if f.name.startswith("eventcenter_")]


async def test_each_breaker_shows_its_current_state(center: EventCenter) -> None:
    center.healing.breakers.get_or_create("payments")
    center.healing.breakers.get_or_create("billing").force_open("the test")

    _, samples = await scrape(center)

    def states(breaker: str) -> dict[str, float | None]:
        return {
            state: value(samples, "eventcenter_breaker_state", breaker=breaker, state=state)
            for state in ("closed", "open", "half_open", "forced_open", "disabled")
        }

    assert states("payments") == {
        "closed": 1,
        "open": 0,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 0,
    }
    assert states("billing") == {
        "closed": 0,
        "open": 0,
        "half_open": 0,
        "forced_open": 1,
        "disabled": 0,
    }


def modes(samples: Samples) -> dict[str, float | None]:
    return {
        mode: value(samples, "eventcenter_source_mode", tenant=TENANT, source=SOURCE, mode=mode)
        for mode in ("event_only", "hybrid", "polling_only", "transition")
    }


async def test_a_data_source_shows_its_mode_and_its_recorded_switches(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    switches = "eventcenter_source_mode_switches_total"
    async with FakeTimeCenter(settings) as w:
        _, before = await scrape(w.center)
        assert await w.runner.force_mode("hybrid", "the test") == "hybrid"
        await w.settled()
        _, after = await scrape(w.center)
    async with FakeTimeCenter(settings) as w:  # the count comes back with the source's log
        _, restarted = await scrape(w.center)

    assert modes(before) == {"event_only": 1, "hybrid": 0, "polling_only": 0, "transition": 0}
    assert value(before, switches, tenant=TENANT, source=SOURCE) == 0
    assert modes(after) == {"event_only": 0, "hybrid": 1, "polling_only": 0, "transition": 0}
    assert value(after, switches, tenant=TENANT, source=SOURCE) == 1
    assert value(restarted, switches, tenant=TENANT, source=SOURCE) == 1


async def test_a_paused_source_shows_as_paused_in_the_mode_it_resumes_in(
    database_url: str, tmp_path: Path
) -> None:
    paused = "eventcenter_source_paused"
    async with FakeTimeCenter(center_settings(database_url, tmp_path)) as w:
        _, running = await scrape(w.center)
        await w.center.pause_source(TENANT, SOURCE, reason="maintenance", by="the test")
        _, stopped = await scrape(w.center)
        await w.center.resume_source(TENANT, SOURCE, by="the test")
        _, resumed = await scrape(w.center)

    assert value(running, paused, tenant=TENANT, source=SOURCE) == 0
    assert value(stopped, paused, tenant=TENANT, source=SOURCE) == 1
    assert modes(stopped)["event_only"] == 1
    assert value(resumed, paused, tenant=TENANT, source=SOURCE) == 0
