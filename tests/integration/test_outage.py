"""A short PostgreSQL outage under a running center: work waits, nothing is lost or burned.

The center's every connection (the writer's and the lease's) goes through a TCP proxy
(tests/faults.py); mid-stream the test cuts it (or stalls it: a silent network) for about two
seconds, then restores it.

What a caller sees meanwhile: ``publish`` waits until the store answers again and then
returns (it does not fail: the writer keeps each batch and retries it with back-off until the
store answers; a caller that cannot wait puts its own timeout around the call). Handlers that
write (decisions) wait the same way; one that runs past its timeout while the store is
unavailable is retried without counting an attempt, so a store outage never dead-letters an
event. Dead letters decided meanwhile wait in the writer's queue and are stored after the
restore, with the deliveries they end.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings, RecordingSettings
from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.domain.errors import CenterLocked, LeaseLost, PermanentFailure
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.inbox import deliveries
from eventcenter.storage.lease import Lease, advisory_key
from tests.faults import ProxiedPostgres

pytestmark = pytest.mark.postgres

OUTAGE_S = 2.0
WAIT_S = 30.0  # only turns a hang into a failure
POLL_S = 0.01
BEFORE, AFTER = 60, 60  # events accepted before the cut, published after the restore


def settings_for(url: str, tmp_path: Path) -> CenterSettings:
    return CenterSettings(
        database_url=url,
        data_dir=tmp_path,
        processor=ProcessorSettings(
            max_attempts=2,  # one counted failure too many would dead-letter
            backoff_base=0.005,
            backoff_max=0.02,
            handler_timeout=0.5,  # shorter than the outage: attempts time out during it
            memory_window=16,
        ),
        recording=RecordingSettings(snapshot_interval=20),
    )


@dataclass
class Published:
    """What each publish call did, and when."""

    accepted: dict[str, bool] = field(default_factory=dict)  # event id -> published to fail
    errors: list[BaseException] = field(default_factory=list)


async def until(condition: object, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(POLL_S)


@pytest.fixture
async def center(pg_proxy: ProxiedPostgres, tmp_path: Path) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(pg_proxy.url, tmp_path), builtin_handlers=False)
    yield built
    if built.processor.status == "running":
        await built.stop()
    built.close()


async def publish_stream(center: EventCenter, published: Published, stop: asyncio.Event) -> None:
    """One event at a time, every few ms, until told to stop; a fifth of them fail."""
    n = 0
    while not stop.is_set():
        fail = n % 5 == 4
        try:
            event_id = await center.publish(
                "work.item", {"n": n, "fail": fail}, tenant=("acme", "beta")[n % 2]
            )
        except Exception as error:
            published.errors.append(error)
        else:
            published.accepted[event_id] = fail
        n += 1
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_a_short_outage_delays_work_and_loses_burns_or_duplicates_nothing(
    center: EventCenter, pg_proxy: ProxiedPostgres, fault: str
) -> None:
    """``cut``: connections are closed and refused (the writer sees errors and says it is
    unavailable). ``stall``: a silent network, connections hang and nothing reports a fault;
    handlers whose timeout fires while they wait for a write are not charged for it either."""
    handled: Counter[str] = Counter()

    @center.processor.on("work.#", name="recorder")
    async def record(event: Event, ctx: Context) -> None:
        await ctx.decide("work.seen", f"event {event.payload['n']}", event)
        if event.payload["fail"]:
            raise PermanentFailure("published to fail")
        handled[str(event.id)] += 1

    await center.start()
    published = Published()
    stop = asyncio.Event()
    stream = asyncio.create_task(publish_stream(center, published, stop))
    await until(lambda: len(published.accepted) >= BEFORE, "events accepted before the cut")

    cut_at = time.monotonic()
    if fault == "cut":
        pg_proxy.proxy.cut()
        await until(lambda: not center.writer.available, "the writer notices the outage")
    else:
        pg_proxy.proxy.stall()
    accepted_at_cut = len(published.accepted)
    during = asyncio.create_task(center.publish("work.item", {"n": -1, "fail": False}))
    await asyncio.sleep(OUTAGE_S - (time.monotonic() - cut_at))
    assert not during.done(), "a publish returned while the store was unreachable"
    assert len(published.accepted) <= accepted_at_cut + 1, "publishes returned with no store"
    pg_proxy.proxy.restore()
    published.accepted[await asyncio.wait_for(during, WAIT_S)] = False

    await until(lambda: len(published.accepted) >= accepted_at_cut + AFTER, "events after")
    stop.set()
    await asyncio.wait_for(stream, WAIT_S)
    await asyncio.wait_for(center.processor.join(), WAIT_S)

    assert center.writer.available
    assert published.errors == [], "a publish during the outage waits, then succeeds"
    assert center.processor.unrecorded_dead_letters() == []

    letters = await asyncio.to_thread(center.dead_letters)
    dead = Counter(str(row.event["id"]) for row in letters)
    failing = {event_id for event_id, fail in published.accepted.items() if fail}
    assert {row.error_type for row in letters} == {"PermanentFailure"}, "no attempt burned"
    assert dict(dead) == dict.fromkeys(failing, 1), "each failing event dead-lettered once"
    assert dict(handled) == {
        event_id: 1 for event_id, fail in published.accepted.items() if not fail
    }, "every other event handled once, as without an outage"
    counts = center.processor.snapshot().totals
    assert counts.get("failed", 0) == len(failing), "timeouts during the outage are not counted"

    causes = await asyncio.to_thread(recorded_causes, pg_proxy.direct_url)
    assert set(causes.values()) == {1}, "a decision recorded twice for one cause"
    assert set(causes) == {f"{event_id}/recorder/work.seen/1" for event_id in published.accepted}
    assert await asyncio.to_thread(stored_deliveries, pg_proxy.direct_url) == 0

    # The lease's own connection was cut too; nobody took over, so the center took its lock
    # again: a second center still cannot start.
    await until(lambda: lock_holders(pg_proxy.direct_url) == 1, "the lease's lock taken again")
    with pytest.raises(CenterLocked):
        Lease(pg_proxy.direct_url, "default").acquire(wait=0)
    assert center.lease.held
    print(
        f"\n{len(published.accepted)} accepted, writer retries {center.writer.retries},"
        f" retried deliveries {counts.get('retried', 0)}"
    )


async def test_a_center_that_lost_its_lease_during_an_outage_stops_and_its_work_moves_on(
    center: EventCenter, pg_proxy: ProxiedPostgres, tmp_path: Path
) -> None:
    """Another center took over while the store was cut off from this one: once it can reach
    the store again, this center finds out (LeaseLost), stops taking work and refuses
    publishes with LeaseLost; what it left unfinished is the new holder's, and nothing of it
    is lost."""
    handled: dict[str, list[str]] = {"old": [], "new": []}
    stuck = asyncio.Event()  # the old center's handler hangs on odd events

    @center.processor.on("work.#", name="recorder", timeout=None, max_in_flight=20)
    async def old(event: Event, ctx: Context) -> None:
        await ctx.decide("work.seen", "old", event)
        if event.payload["n"] % 2:
            await stuck.wait()
        handled["old"].append(str(event.id))

    await center.start()
    ids = [await center.publish("work.item", {"n": n}) for n in range(20)]
    await until(lambda: len(handled["old"]) == 10, "the even events handled")
    await center.deliveries.flush()  # their ends are committed: only the odd ones are left

    pg_proxy.proxy.cut()  # the server ends the old center's sessions, and its lock
    newer = EventCenter(
        settings_for(pg_proxy.direct_url, tmp_path / "new").model_copy(
            update={"standby_wait": WAIT_S}
        ),
        builtin_handlers=False,
    )

    @newer.processor.on("work.#", name="recorder")
    async def new(event: Event, ctx: Context) -> None:
        await ctx.decide("work.seen", "new", event)
        handled["new"].append(str(event.id))

    try:
        await newer.start()
        pg_proxy.proxy.restore()
        await until(lambda: center.lease_lost is not None, "the old center sees it lost")
        with pytest.raises(LeaseLost, match="no longer current"):
            await center.publish("work.item", {"n": 99})
        await until(lambda: center.processor.status == "stopped", "the old center stops")
        report = await center.stop()
        await asyncio.wait_for(newer.processor.join(), WAIT_S)
        assert newer.processor.queue_depths()["redelivered_at_start"] == 10
        letters = await asyncio.to_thread(newer.dead_letters)
    finally:
        await newer.stop()
    assert report.left_in_store == 10
    assert sorted(handled["old"] + handled["new"]) == sorted(ids), "each handled once"
    assert letters == []
    causes = await asyncio.to_thread(recorded_causes, pg_proxy.direct_url)
    assert set(causes.values()) == {1}


def lock_holders(url: str) -> int:
    """Sessions holding the advisory lock of the center named 'default' in the URL's schema."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
            unsigned = advisory_key(schema, "default") & 0xFFFF_FFFF_FFFF_FFFF
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid)"
                    ),
                    {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def recorded_causes(url: str) -> Counter[str]:
    app = CenterApplication(url, cache_size=0, create_tables=False)
    try:
        return Counter(
            domain_event.cause
            for _, domain_event in app.read_events()
            if isinstance(domain_event, ProcessorLog.DecisionRecorded)  # type: ignore[attr-defined]
        )
    finally:
        app.close()


def stored_deliveries(url: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            query = select(func.count()).select_from(deliveries)
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()
