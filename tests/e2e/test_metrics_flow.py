"""``GET /metrics`` while work flows: latency histograms, the subscriptions' lag, RCA cases, the
store's errors and the projections' lag change as events are published, handled, failed and
refused. A real center on SQLite, scraped through the real app and parsed with
prometheus_client's parser; every figure is compared before and after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from eventcenter.center.app import EventCenter
from eventcenter.center.http import create_app
from eventcenter.domain.errors import PermanentFailure, RecordingFailed
from eventcenter.domain.event import Event
from eventcenter.handlers.context import Context
from eventcenter.handlers.metrics import LATENCY_BUCKETS
from tests.e2e.test_http import GUARD_S, Recorder, settings_for
from tests.e2e.test_metrics import Samples, envelope, publish, scrape, value
from tests.source_center import FakeTimeCenter, center_settings
from tests.unit.source_fakes import SOURCE, TENANT, connection_lost

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

HISTOGRAM = "eventcenter_handler_duration_seconds"


@pytest.fixture
async def center(database_url: str, tmp_path: Path) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(database_url, tmp_path, memory_window=2))
    yield built
    if built.processor.status == "running":
        await built.stop()
    built.close()


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """The histogram's cumulative buckets as (upper bound, count), in bound order."""
    found = [
        (float(dict(key)["le"]), count)
        for (sample, key), count in samples.items()
        if sample == f"{name}_bucket" and {k: v for k, v in key if k != "le"} == labels
    ]
    return sorted(found)


async def test_handler_durations_are_a_histogram_per_subscription_that_grows_with_each_attempt(
    center: EventCenter,
) -> None:
    center.processor.subscribe(["order.#"], Recorder(), name="orders")

    async def refuse(event: Event, ctx: Context) -> None:
        raise PermanentFailure("no such customer")

    center.processor.subscribe(["payment.#"], refuse, name="payments")
    await center.start()
    _, before = await scrape(center)

    await publish(center, *[envelope("order.created", "acme")] * 5)
    await publish(center, envelope("payment.made", "acme"))
    _, after = await scrape(center)

    assert value(before, f"{HISTOGRAM}_count", subscription="orders") == 0
    assert value(after, f"{HISTOGRAM}_count", subscription="orders") == 5
    assert value(after, f"{HISTOGRAM}_count", subscription="payments") == 1  # failed: counted
    orders = buckets(after, HISTOGRAM, subscription="orders")
    assert [bound for bound, _ in orders] == [*LATENCY_BUCKETS, float("inf")]
    counts = [count for _, count in orders]
    assert counts == sorted(counts), "cumulative"
    assert counts[-1] == 5
    total = value(after, f"{HISTOGRAM}_sum", subscription="orders")
    assert total is not None
    assert 0 < total < 5 * GUARD_S
    # Every delivery's first attempt waited some time between admission and its start.
    waited = value(after, "eventcenter_dispatch_wait_seconds_count")
    earlier = value(before, "eventcenter_dispatch_wait_seconds_count")
    assert waited is not None
    assert earlier is not None
    assert waited - earlier == 6


async def test_a_paused_subscription_shows_its_lag_in_memory_and_in_the_store(
    center: EventCenter,
) -> None:
    recorder = Recorder()
    center.processor.subscribe(["order.#"], recorder, name="orders")
    await center.start()
    center.processor.pause("orders")
    transport = httpx.ASGITransport(app=create_app(center))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        body = [envelope("order.created", "acme")] * 6
        answer = await http.post("/events", json=body)
        assert answer.status_code == 202, answer.text
    _, paused = await scrape(center)
    center.processor.resume("orders")
    await asyncio.wait_for(center.processor.join(), GUARD_S)
    _, resumed = await scrape(center)

    def figures(samples: Samples) -> dict[str, float | None]:
        return {
            name: value(samples, f"eventcenter_subscription_{name}", subscription="orders")
            for name in (
                "deliveries_queued",
                "deliveries_in_store",
                "deliveries_in_flight",
                "paused",
            )
        }

    # A memory window of 2: the other 4 deliveries wait in the store only.
    assert figures(paused) == {
        "deliveries_queued": 6,
        "deliveries_in_store": 4,
        "deliveries_in_flight": 0,
        "paused": 1,
    }
    assert figures(resumed) == {
        "deliveries_queued": 0,
        "deliveries_in_store": 0,
        "deliveries_in_flight": 0,
        "paused": 0,
    }
    assert len(recorder.seen) == 6


async def wait_for_scrape(
    center: EventCenter, name: str, expected: float, **labels: str
) -> Samples:
    """Scrape until the sample reaches ``expected`` (another task gets there; bounded)."""
    deadline = time.monotonic() + GUARD_S
    while True:
        _, samples = await scrape(center)
        if value(samples, name, **labels) == expected:
            return samples
        assert time.monotonic() < deadline, f"{name}{labels} never reached {expected}"
        await asyncio.sleep(0.02)


async def test_a_dead_lettered_delivery_becomes_an_rca_case_counted_until_a_person_resolves_it(
    center: EventCenter,
) -> None:
    async def broken(event: Event, ctx: Context) -> None:
        raise PermanentFailure("the handler has a bug")

    center.processor.subscribe(["order.#"], broken, name="orders")
    await center.start()
    _, before = await scrape(center)

    await publish(center, envelope("order.created", "acme"))
    opened = await wait_for_scrape(
        center, "eventcenter_rca_cases_total", 1, category="handler_bug", outcome="opened"
    )
    case_id = center.healing.runner.open_case("acme", "orders", "handler_bug")
    assert case_id is not None
    await center.healing.runner.resolve(case_id, "fixed the handler", by="ops")
    _, resolved = await scrape(center)

    cases = "eventcenter_rca_cases_total"
    assert value(before, cases, category="handler_bug", outcome="opened") is None
    assert value(before, "eventcenter_rca_cases_open", category="handler_bug") is None
    assert value(opened, "eventcenter_rca_cases_open", category="handler_bug") == 1
    assert value(opened, "eventcenter_rca_failures_total", category="handler_bug") == 1
    assert value(resolved, cases, category="handler_bug", outcome="resolved") == 1
    assert value(resolved, cases, category="handler_bug", outcome="opened") == 1
    assert value(resolved, "eventcenter_rca_cases_open", category="handler_bug") is None


async def test_a_write_the_store_refuses_is_counted_as_a_store_error(
    center: EventCenter, database_url: str
) -> None:
    center.processor.subscribe(["order.#"], Recorder(), name="orders")
    await center.start()
    _, before = await scrape(center)
    engine = create_engine(database_url)
    with engine.begin() as connection:  # the store itself refuses every new delivery row
        connection.execute(
            text(
                "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON center_deliveries"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        )
    try:
        with pytest.raises(RecordingFailed, match="refused by the test"):
            await center.publish("order.created", {"order": 1}, tenant="acme")
        _, refused = await scrape(center)
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse_deliveries"))
        engine.dispose()
    await center.publish("order.created", {"order": 2}, tenant="acme")
    await asyncio.wait_for(center.processor.join(), GUARD_S)
    _, after = await scrape(center)

    errors = "eventcenter_store_errors_total"
    assert value(before, errors, kind="refused") == 0
    assert value(refused, errors, kind="refused") == 1
    assert value(refused, errors, kind="unavailable") == 0
    assert value(refused, "eventcenter_store_available") == 1
    assert value(after, errors, kind="refused") == 1
    commits = "eventcenter_store_transactions_total"
    after_commits, before_commits = value(after, commits), value(before, commits)
    assert after_commits is not None
    assert before_commits is not None
    assert after_commits > before_commits
    assert value(after, "eventcenter_tenant_events_published_total", tenant="acme") == 1


async def test_the_read_models_lag_grows_while_it_is_stopped_and_is_gone_after_catching_up(
    center: EventCenter,
) -> None:
    async def decide(event: Event, ctx: Context) -> None:
        await ctx.decide("order.seen", "counted", event)

    center.processor.subscribe(["order.#"], decide, name="orders")
    await center.start()
    projections = center.projections
    await asyncio.to_thread(projections.stop)  # the read model stops following the log
    await asyncio.to_thread(projections.catch_up)
    _, caught_up = await scrape(center)

    await publish(center, *[envelope("order.created", "acme")] * 4)
    await center.deliveries.flush()  # the four decisions are committed
    await asyncio.to_thread(projections.refresh)  # what a pass would find
    _, behind = await scrape(center)
    await asyncio.to_thread(projections.catch_up)
    _, again = await scrape(center)

    lag, position = "eventcenter_projection_lag_events", "eventcenter_projection_position"
    assert value(caught_up, lag) == 0
    assert value(caught_up, "eventcenter_projection_running") == 0
    assert value(caught_up, "eventcenter_projection_errors_total") == 0
    behind_by = value(behind, lag)
    assert behind_by is not None
    assert behind_by >= 4, "four decisions at least are not in the read model yet"
    assert value(behind, position) == value(caught_up, position)
    assert value(again, lag) == 0
    moved_to, moved_from = value(again, position), value(caught_up, position)
    assert moved_to is not None
    assert moved_from is not None
    assert moved_to - moved_from == behind_by


async def test_every_family_follows_the_naming_conventions(center: EventCenter) -> None:
    """Counters end in _total, durations are histograms in seconds, nothing in milliseconds."""
    center.processor.subscribe(["order.#"], Recorder(), name="orders")
    await center.start()
    await publish(center, envelope("order.created", "acme"))
    answer, _ = await scrape(center)

    families = list(text_string_to_metric_families(answer.text))
    assert len(families) > 20
    for family in families:
        assert family.name.startswith("eventcenter_"), family.name
        assert "_ms" not in family.name, family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


async def test_a_data_source_shows_its_health_and_the_items_each_path_brought(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeTimeCenter(center_settings(database_url, tmp_path)) as w:
        _, before = await scrape(w.center)
        await w.deliver(3)  # three items by push
        _, delivered = await scrape(w.center)
        w.push.receive_errors.extend([connection_lost()] * 3)  # push fails: hybrid
        await w.run(10)
        _, failing = await scrape(w.center)

    items = "eventcenter_source_items_total"
    health = "eventcenter_source_health"
    for path, counts in {"push": (0, 3), "poll": (0, 0)}.items():
        assert (
            value(before, items, tenant=TENANT, source=SOURCE, path=path),
            value(delivered, items, tenant=TENANT, source=SOURCE, path=path),
        ) == counts
    healthy = value(delivered, health, tenant=TENANT, source=SOURCE)
    hurt = value(failing, health, tenant=TENANT, source=SOURCE)
    assert healthy is not None
    assert hurt is not None
    assert 0 <= hurt < healthy <= 1, "hybrid mode and push failures lower the score"
    assert value(failing, "eventcenter_source_mode", tenant=TENANT, source=SOURCE, mode="hybrid")
