"""The built-in healing strategies against a real SourceManager running fake paths on a fake
clock: each acts through the source's controls and passes its re-check only on the source's
own evidence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from eventcenter.domain.rca import CaseSummary
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID
from eventcenter.domain.sources import SourceError, SourceErrorKind
from eventcenter.healing.health import HealthMonitor
from eventcenter.healing.strategies import (
    ForcePolling,
    NoSourceToHeal,
    Reconnect,
    RecoverService,
    ReduceFrequency,
    RerunReconciliation,
    RestartStream,
    builtin_limits,
    builtin_strategies,
    clear_cache,
)
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.manager import SourceManager
from eventcenter.sources.source import DataSource
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakeListing,
    FakePoll,
    FakePushPath,
    FakeSource,
    FixedJitter,
    MemoryRecorder,
    MemorySink,
    connection_lost,
)
from tests.unit.test_health_monitor import Switchable, settings
from tests.unit.test_source_manager import World

START = 1_000_000.0


def case(source: str | None = SOURCE, component: str = "source_push", **fields: Any) -> CaseSummary:
    values: dict[str, Any] = {
        "case_id": "c-1",
        "tenant": TENANT,
        "source": source,
        "category": "event_timeout",
        "status": "healing",
        "confidence": 0.8,
        "evidence": (),
        "strategies": (),
        "opened_at": START,
        "failures": 1,
        "first_failure": {"component": component},
        "last_failure": {"component": component},
        "correlation_id": "",
    }
    return CaseSummary(**{**values, **fields})


@pytest.fixture
async def w() -> AsyncIterator[World]:
    clock = FakeClock(START)
    source = FakeSource()
    sink = MemorySink()
    recorder = MemoryRecorder()
    push, poll = FakePushPath(source, clock, sink), FakePoll(source)
    spec = DataSource(
        tenant=TENANT,
        name=SOURCE,
        events=push,
        poll=poll,
        reconcile=FakeListing(source),
        event_timeout=30,
        polling_interval=60,
        reconciliation_interval="1h",
    )
    manager = SourceManager(sink, recorder, clock=clock, wall=clock.now, rng=FixedJitter(0.0))
    runner = manager.register(spec)
    await manager.start()
    built = World(clock, source, sink, recorder, push, poll, manager, runner)
    yield built
    await manager.stop()


async def verified(w: World, check: Any, seconds: float) -> bool:
    """Run the re-check while the fake time advances up to ``seconds`` (as the runner would
    bound it by its verify timeout)."""
    task = asyncio.ensure_future(check)
    elapsed = 0.0
    while not task.done() and elapsed < seconds:
        await w.clock.advance(0.5)
        elapsed += 0.5
    if not task.done():
        task.cancel()
        return False
    return bool(task.result())


async def restarted(w: World) -> SourceManager:
    """The same source started again by a new manager on the same store (its log)."""
    await w.manager.stop()
    manager = SourceManager(w.sink, w.recorder, clock=w.clock, wall=w.clock.now)
    manager.register(w.runner.spec)
    await manager.start()
    return manager


async def test_a_longer_timeout_outlives_a_restart_until_its_decay_period_ends(w: World) -> None:
    strategy = RestartStream(w.manager, w.clock, w.clock.now)
    config = w.runner.spec.hysteresis
    await strategy.apply(case(category="event_timeout"))
    assert w.recorder.events()[-1] == "TimeoutExtended"
    started = w.clock.now()

    manager = await restarted(w)
    try:
        policy = manager.runner(TENANT, SOURCE).policy
        assert policy is not None
        assert policy.event_timeout == 1.5 * config.event_timeout
        assert policy.state.extended_until == started + config.decay_period
    finally:
        await manager.stop()

    # once the decay period is over, a restart starts with the configured timeout again
    await w.clock.advance(config.decay_period + 1)
    again = await restarted(w)
    try:
        policy = again.runner(TENANT, SOURCE).policy
        assert policy is not None
        assert policy.event_timeout == config.event_timeout
        assert policy.state.extended_until is None
    finally:
        await again.stop()


async def test_restart_stream_reopens_push_and_passes_once_push_delivers(w: World) -> None:
    strategy = RestartStream(w.manager, w.clock, w.clock.now)
    await w.run(1)
    opened = len(w.push.opened)
    said = await strategy.apply(case())
    assert said.startswith("restarted the push path from its stored position")
    w.source.change("o-1")
    assert await verified(w, strategy.verify(case()), 15)
    assert len(w.push.opened) == opened + 1


async def test_restart_stream_of_a_timeout_gives_the_stream_a_longer_timeout(w: World) -> None:
    strategy = RestartStream(w.manager, w.clock, w.clock.now)
    policy = w.runner.policy
    assert policy is not None
    configured = policy.config.event_timeout

    said = await strategy.apply(case(category="event_timeout"))
    assert said == (
        f"restarted the push path from its stored position, event_timeout now {1.5 * configured:g}s"
    )
    assert policy.event_timeout == 1.5 * configured
    w.runner._flush_outcomes()
    [extend] = [row for row in w.recorder.rows[(TENANT, SOURCE)] if row[1] == "extend"]
    assert "restart the stream with a longer timeout" in extend[3]

    # a connection failure is restarted as it is: the timeout says nothing about it
    said = await strategy.apply(case(category="connection_failure"))
    assert said == "restarted the push path from its stored position"
    assert policy.event_timeout == 1.5 * configured


async def test_restart_stream_fails_its_recheck_while_push_stays_quiet(w: World) -> None:
    strategy = RestartStream(w.manager, w.clock, w.clock.now)
    await strategy.apply(case())
    assert not await verified(w, strategy.verify(case()), 20)


async def test_reconnect_waits_a_growing_back_off_before_reopening(w: World) -> None:
    strategy = Reconnect(w.manager, w.clock, w.clock.now, jitter=lambda: 0.0)
    first = asyncio.ensure_future(strategy.apply(case()))
    await w.clock.advance(0.7)
    assert not first.done()
    await w.clock.advance(0.2)
    assert first.done()
    assert first.result() == "waited 0.8s, then reopened the push path"
    again = case(attempts=({"strategy": "reconnect", "at": START},))
    second = asyncio.ensure_future(strategy.apply(again))
    await w.clock.advance(1.7)
    assert second.done()
    assert second.result() == "waited 1.6s, then reopened the push path"


async def test_reconnect_of_a_poll_failure_polls_again_and_rechecks_the_poll(w: World) -> None:
    await w.runner.force_mode(HYBRID, "test")
    strategy = Reconnect(w.manager, w.clock, w.clock.now, jitter=lambda: 0.0)
    polls = len(w.poll.cursors)
    poll_case = case(component="source_poll", category="polling_failure")
    task = asyncio.ensure_future(strategy.apply(poll_case))
    await w.clock.advance(1.0)
    assert task.result() == "waited 0.8s, then polled again"
    assert await verified(w, strategy.verify(poll_case), 5)
    assert len(w.poll.cursors) > polls


async def test_force_polling_moves_down_and_passes_when_a_poll_answers(w: World) -> None:
    strategy = ForcePolling(w.manager, w.clock, w.clock.now)
    assert await strategy.apply(case()) == "forced polling: the source is in hybrid"
    assert w.runner.mode == HYBRID
    assert await verified(w, strategy.verify(case()), 5)
    assert w.runner.recent[-1]["reason"].startswith("forced: rca case c-1 (event_timeout)")


async def test_force_polling_fails_its_recheck_when_polling_fails_too(w: World) -> None:
    w.poll.errors.extend([SourceError(SourceErrorKind.CONNECTION, "poll refused")] * 50)
    strategy = ForcePolling(w.manager, w.clock, w.clock.now)
    await strategy.apply(case())
    assert w.runner.mode == EVENT_ONLY  # the first poll failed: the move was rolled back
    assert not await verified(w, strategy.verify(case()), 10)


async def test_rerun_reconciliation_corrects_then_rechecks_with_a_clean_second_run(
    w: World,
) -> None:
    w.push.muted = True
    w.source.change("o-1")
    w.source.change("o-2")
    strategy = RerunReconciliation(w.manager, w.clock, w.clock.now)
    data_case = case(category="data_inconsistency")
    assert (
        await strategy.apply(data_case) == "reconciled: 2 missing, 0 changed, 0 deleted corrected"
    )
    assert {key for key, _ in w.sink.identities()} == {"o-1", "o-2"}
    assert await strategy.verify(data_case)


async def test_rerun_reconciliation_is_offered_only_for_a_source_with_a_listing(
    w: World,
) -> None:
    """Offered to a source without one, each attempt would fail and its cool-down would hold
    the case open before it escalates."""
    data_case = case(category="data_inconsistency")
    assert RerunReconciliation(w.manager, w.clock, w.clock.now).applies_to(data_case)
    unlisted = SourceManager(w.sink, MemoryRecorder(), clock=w.clock, wall=w.clock.now)
    unlisted.register(DataSource(tenant=TENANT, name=SOURCE, poll=FakePoll(w.source)))
    strategy = RerunReconciliation(unlisted, w.clock, w.clock.now)
    assert not strategy.applies_to(data_case)
    assert not strategy.applies_to(case(source="unknown", category="data_inconsistency"))


async def test_reduce_frequency_doubles_the_interval_up_to_its_bound(w: World) -> None:
    await w.runner.force_mode(HYBRID, "test")
    strategy = ReduceFrequency(w.manager, w.clock, w.clock.now, max_factor=4.0)
    limited = case(category="rate_limited", component="source_poll")
    assert await strategy.apply(limited) == "polling load factor set to 2"
    assert await strategy.apply(limited) == "polling load factor set to 4"
    assert await strategy.apply(limited) == "polling load factor set to 4"
    assert w.runner.load_factor == 4.0
    assert await verified(w, strategy.verify(limited), 5)


async def test_reduce_frequency_wears_off_once_the_server_stopped_refusing(w: World) -> None:
    """One burst of 429s must not slow the source for the rest of the process's life."""
    await w.runner.force_mode(HYBRID, "test")
    strategy = ReduceFrequency(w.manager, w.clock, w.clock.now, relax_after=60.0)
    limited = case(category="rate_limited", component="source_poll")
    await strategy.apply(limited)
    await strategy.apply(limited)
    assert w.runner.load_factor == 4.0  # polls every 240 s instead of 60
    await w.clock.advance(245.0)  # the next poll answers, after a quiet minute: one step back
    assert w.runner.load_factor == 2.0
    await w.clock.advance(125.0)  # and the one 120 s later
    assert w.runner.load_factor == 1.0


async def test_a_case_without_a_source_is_refused_clearly(w: World) -> None:
    for strategy in builtin_strategies(w.manager, w.clock, w.clock.now):
        with pytest.raises(NoSourceToHeal, match="names no source"):
            await strategy.apply(case(source=None, category="handler_bug"))


async def test_the_recheck_after_a_restart_looks_after_the_recorded_attempt(w: World) -> None:
    """A restarted center re-checks an interrupted attempt: evidence older than the attempt
    does not count."""
    w.source.change("o-1")
    await w.run(5)
    strategy = RestartStream(w.manager, w.clock, w.clock.now)
    later = case(attempts=({"strategy": "restart_stream", "at": w.clock.now() + 1},))
    assert not await verified(w, strategy.verify(later), 3)
    assert await verified(w, strategy.verify(replace(later, attempts=())), 3)
    w.push.receive_errors.append(connection_lost())
    await w.run(6)  # the receive under way ends, the next one fails
    assert not await verified(w, strategy.verify(replace(later, attempts=())), 3)


async def test_user_strategies_get_the_names_the_rules_recommend() -> None:
    async def apply(summary: CaseSummary) -> str:
        return "cleared"

    async def verify(summary: CaseSummary) -> bool:
        return True

    strategy = clear_cache(apply, verify)
    assert strategy.name == "clear_cache"
    assert "handler_bug" in strategy.categories
    assert await strategy.apply(case()) == "cleared"


async def test_recover_service_rechecks_until_the_service_is_healthy_again() -> None:
    clock = FakeClock(START)
    monitor = HealthMonitor(clock, settings=settings(unhealthy_after=2, healthy_after=2))
    service = Switchable(clock, "cache", up=False)
    monitor.add(service)
    strategy = RecoverService(monitor, None, clock, check_every=1.0)
    health_case = case(source="cache", component="health_check", category="connection_failure")
    assert strategy.applies_to(health_case)
    assert not strategy.applies_to(case())  # a data source's case
    assert not RestartStream(SourceManagerStub(), clock).applies_to(health_case)
    assert await strategy.apply(health_case) == "cache is degraded on a fresh check"
    check = asyncio.ensure_future(strategy.verify(health_case))
    await clock.advance(3.0)
    assert not check.done()
    service.up = True
    await clock.advance(3.0)  # two green checks: healthy
    assert check.done()
    assert check.result() is True


class SourceManagerStub:
    def control(self, tenant: str, source: str) -> Any:
        raise AssertionError("not called")


async def test_a_failed_reconciliation_is_reported_to_the_watcher(w: World) -> None:
    seen: list[Any] = []
    w.manager.on_failure = seen.append
    listing = w.runner.spec.reconcile
    assert isinstance(listing, FakeListing)
    listing.errors.append(SourceError(SourceErrorKind.CONNECTION, "listing refused (test)"))
    with pytest.raises(SourceError):
        await w.runner.reconcile_now()
    await w.run(1)
    assert [(f.path, f.kind) for f in seen] == [("reconcile", "connection")]
    assert w.runner.mode == EVENT_ONLY, "a listing's failure is no evidence against push"


async def test_configured_limits_replace_a_strategys_attempts_and_cool_down(w: World) -> None:
    built = builtin_strategies(
        w.manager,
        w.clock,
        w.clock.now,
        limits={"reconnect": {"max_attempts": 5}, "force_polling": {"cooldown": 600.0}},
    )
    by_name = {s.name: s for s in built}
    assert (by_name["reconnect"].max_attempts, by_name["reconnect"].cooldown) == (5, 60.0)
    assert (by_name["force_polling"].max_attempts, by_name["force_polling"].cooldown) == (1, 600.0)
    assert (by_name["restart_stream"].max_attempts, by_name["restart_stream"].cooldown) == (2, 60.0)
    # the defaults they fell back to are the ones the settings document
    assert builtin_limits()["restart_stream"] == (2, 60.0)
    assert builtin_limits()["recover_service"] == (3, 30.0)
