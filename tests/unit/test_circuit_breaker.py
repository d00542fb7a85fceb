"""The runtime breaker around real sync and async calls, on a fake clock: refusals and
fallbacks, which errors count, the per-call timeout, recording with wall-clock times, restoring,
the registry, and several threads calling one breaker."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

import pytest

from eventcenter.domain.breaker import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    BreakerState,
    BreakerTransition,
)
from eventcenter.domain.errors import CallNotPermitted, CallTimedOut, ConfigurationError
from eventcenter.healing.breaker import BreakerRegistry, CircuitBreaker

CONFIG = BreakerConfig(
    window_size=4,
    minimum_calls=4,
    slow_call_duration=2.0,
    slow_call_rate_threshold=50,
    permitted_calls_in_half_open=2,
    wait_in_open=30.0,
    wait_multiplier=2.0,
    max_wait_in_open=100.0,
)


class Clocks:
    """A monotonic clock and a wall clock that the test moves together."""

    def __init__(self) -> None:
        self.t = 5.0  # monotonic: starts near zero, like a fresh process
        self.wall_t = 1_700_000_000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:  # the Clock protocol; unused here
        self.t += seconds

    def wall(self) -> float:
        return self.wall_t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall_t += seconds


class Recorder:
    def __init__(self) -> None:
        self.moves: list[BreakerTransition] = []

    def record(self, transition: BreakerTransition) -> None:
        self.moves.append(transition)


class Boom(Exception):
    pass


class NotFound(Exception):
    pass


def ok() -> str:
    return "ok"


def boom() -> str:
    raise Boom("dependency down")


async def aok() -> str:
    return "ok"


async def aboom() -> str:
    raise Boom("dependency down")


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def breaker(clocks: Clocks, recorder: Recorder | None = None, **options: Any) -> CircuitBreaker:
    return CircuitBreaker(
        "payments", CONFIG, clock=clocks, wall=clocks.wall, recorder=recorder, **options
    )


def trip(guarded: CircuitBreaker) -> None:
    for _ in range(4):
        with pytest.raises(Boom):
            guarded.call(boom)
    assert guarded.state == OPEN


def test_calls_pass_through_a_closed_breaker(clocks: Clocks) -> None:
    guarded = breaker(clocks)

    def add(a: int, b: int = 0) -> int:
        return a + b

    assert guarded.call(add, 1, b=2) == 3
    assert guarded.status().calls == 1


def test_an_open_breaker_refuses_calls_saying_when_to_retry(clocks: Clocks) -> None:
    guarded = breaker(clocks)
    trip(guarded)
    clocks.advance(10)
    called: list[int] = []
    with pytest.raises(CallNotPermitted, match=r"open; calls are tried again in 20\.0s") as refused:
        guarded.call(called.append, 1)
    assert called == [], "a refused call is not made"
    assert (refused.value.breaker, refused.value.retry_in) == ("payments", 20.0)
    assert guarded.status().not_permitted == 1


def test_after_the_wait_trial_calls_close_the_breaker_again(clocks: Clocks) -> None:
    guarded = breaker(clocks)
    trip(guarded)
    clocks.advance(30)
    assert guarded.call(ok) == "ok"
    assert guarded.state == HALF_OPEN
    assert guarded.call(ok) == "ok"
    assert guarded.state == CLOSED


def test_a_failed_trial_opens_it_for_longer(clocks: Clocks, recorder: Recorder) -> None:
    guarded = breaker(clocks, recorder)
    trip(guarded)
    clocks.advance(30)
    with pytest.raises(Boom):
        guarded.call(boom)
    with pytest.raises(Boom):
        guarded.call(boom)
    assert guarded.state == OPEN
    assert [(m.state, m.wait) for m in recorder.moves] == [(OPEN, 30.0), (HALF_OPEN, None),
                                                           (OPEN, 60.0)]  # fmt: skip


def test_slow_calls_are_measured_on_the_clock(clocks: Clocks) -> None:
    guarded = breaker(clocks)

    def slow() -> str:
        clocks.advance(3.0)
        return "late"

    for call in (slow, ok, ok, slow):
        guarded.call(call)
    assert guarded.state == OPEN, "2 of 4 calls took longer than 2s"


def test_the_fallback_answers_refused_and_failed_calls_with_the_error(clocks: Clocks) -> None:
    seen: list[BaseException] = []

    def fallback(error: BaseException) -> str:
        seen.append(error)
        return "cached"

    guarded = breaker(clocks, fallback=fallback)
    assert [guarded.call(boom) for _ in range(4)] == ["cached"] * 4
    assert guarded.state == OPEN
    assert guarded.call(ok) == "cached"
    assert [type(e) for e in seen] == [Boom] * 4 + [CallNotPermitted]


async def test_an_async_fallback_is_awaited(clocks: Clocks) -> None:
    async def fallback(error: BaseException) -> str:
        await asyncio.sleep(0)
        return f"degraded: {type(error).__name__}"

    guarded = breaker(clocks, fallback=fallback)
    assert await guarded.acall(aboom) == "degraded: Boom"
    for _ in range(3):
        await guarded.acall(aboom)
    assert await guarded.acall(aok) == "degraded: CallNotPermitted"
    with pytest.raises(ConfigurationError, match="its fallback is a coroutine function"):
        guarded.call(ok)


def test_a_sync_fallback_returning_an_awaitable_is_refused_for_a_sync_call(
    clocks: Clocks,
) -> None:
    async def later() -> str:
        return "x"

    guarded = breaker(clocks, fallback=lambda error: later())
    with pytest.raises(ConfigurationError, match="returned an awaitable to a sync call"):
        guarded.call(boom)


async def test_a_call_past_its_timeout_is_cancelled_and_counts_as_a_failure(
    clocks: Clocks,
) -> None:
    guarded = breaker(clocks, timeout=0.001)
    never = asyncio.Event()
    for _ in range(4):
        with pytest.raises(CallTimedOut, match=r"ran longer than its 0\.001s timeout"):
            await guarded.acall(never.wait)
    assert guarded.state == OPEN


async def test_a_timeout_error_of_the_call_itself_is_its_own(clocks: Clocks) -> None:
    async def gives_up() -> None:
        raise TimeoutError("upstream said so")

    guarded = breaker(clocks, timeout=60.0)
    with pytest.raises(TimeoutError, match="upstream said so") as raised:
        await guarded.acall(gives_up)
    assert not isinstance(raised.value, CallTimedOut)
    assert guarded.status().failures == 1


def test_ignored_errors_count_neither_way_and_other_errors_as_successes(
    clocks: Clocks,
) -> None:
    guarded = breaker(clocks, record_errors=(Boom,), ignore_errors=(NotFound,))

    def missing() -> None:
        raise NotFound("no such order")

    def bad() -> None:
        raise ValueError("caller's mistake")

    with pytest.raises(NotFound):
        guarded.call(missing)
    with pytest.raises(ValueError, match="caller's mistake"):
        guarded.call(bad)
    with pytest.raises(Boom):
        guarded.call(boom)
    status = guarded.status()
    assert (status.calls, status.failures) == (2, 1), "the ignored call is not in the window"


async def test_a_cancelled_trial_call_gives_its_permit_back(clocks: Clocks) -> None:
    guarded = breaker(clocks)
    trip(guarded)
    clocks.advance(30)
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(guarded.acall(hangs))
    await started.wait()
    assert guarded.state == HALF_OPEN
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await guarded.acall(aok) == "ok"
    assert await guarded.acall(aok) == "ok", "two trial permits, none lost to the cancellation"
    assert guarded.state == CLOSED


async def test_the_decorator_guards_functions_and_coroutine_functions(clocks: Clocks) -> None:
    guarded = breaker(clocks)

    @guarded
    def add(a: int, b: int) -> int:
        return a + b

    @guarded
    async def aadd(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert await aadd(2, 3) == 5
    assert (add.__name__, aadd.__name__) == ("add", "aadd")
    assert guarded.status().calls == 2


def test_moves_are_recorded_with_wall_clock_times(clocks: Clocks, recorder: Recorder) -> None:
    guarded = breaker(clocks, recorder)
    trip(guarded)
    [opened] = recorder.moves
    assert opened.at == clocks.wall_t
    assert opened.open_until == clocks.wall_t + 30.0
    assert (opened.failure_rate, opened.calls, opened.reopens) == (100.0, 4, 1)


def test_operators_moves_are_recorded(clocks: Clocks, recorder: Recorder) -> None:
    guarded = breaker(clocks, recorder)
    guarded.force_open("maintenance window")
    with pytest.raises(CallNotPermitted, match="forced open; reset it"):
        guarded.call(ok)
    guarded.disable()
    for _ in range(10):
        with pytest.raises(Boom):
            guarded.call(boom)
    assert guarded.state == DISABLED
    guarded.reset()
    assert [(m.previous, m.state, m.reason) for m in recorder.moves] == [
        (CLOSED, FORCED_OPEN, "maintenance window"),
        (FORCED_OPEN, DISABLED, "disabled by an operator"),
        (DISABLED, CLOSED, "reset by an operator"),
    ]


def test_a_recorder_that_fails_does_not_stop_the_breaker(
    clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def record(self, transition: BreakerTransition) -> None:
            raise RuntimeError("writer closed")

    guarded = CircuitBreaker("payments", CONFIG, clock=clocks, wall=clocks.wall, recorder=Broken())
    with caplog.at_level(logging.ERROR, logger="eventcenter.healing"):
        trip(guarded)
    assert "the move to open was not recorded" in caplog.text
    with pytest.raises(CallNotPermitted):
        guarded.call(ok)


def test_a_restored_breaker_waits_out_the_rest_on_the_wall_clock(clocks: Clocks) -> None:
    guarded = breaker(clocks)
    guarded.restore(BreakerState("payments", OPEN, clocks.wall_t + 12.0, reopens=1))
    with pytest.raises(CallNotPermitted, match=r"in 12\.0s"):
        guarded.call(ok)
    clocks.advance(12.0)
    assert guarded.call(ok) == "ok"
    assert guarded.state == HALF_OPEN


def test_a_timeout_must_be_positive(clocks: Clocks) -> None:
    with pytest.raises(ConfigurationError, match="timeout must be positive"):
        breaker(clocks, timeout=0)


# the registry -------------------------------------------------------------------------------------


def test_the_registry_keeps_one_breaker_per_name(clocks: Clocks) -> None:
    registry = BreakerRegistry(clock=clocks, wall=clocks.wall)
    first = registry.get_or_create("payments", CONFIG)
    assert registry.get_or_create("payments") is first
    assert registry.get_or_create("payments", CONFIG) is first
    assert registry.get("payments") is first
    with pytest.raises(ConfigurationError, match="exists with another configuration"):
        registry.get_or_create("payments", BreakerConfig())
    with pytest.raises(LookupError, match="no circuit breaker named 'billing'"):
        registry.get("billing")


def test_the_registry_restores_breakers_from_their_saved_states(
    clocks: Clocks, recorder: Recorder
) -> None:
    saved = [BreakerState("payments", OPEN, clocks.wall_t + 20.0, 2)]
    registry = BreakerRegistry(clock=clocks, wall=clocks.wall, recorder=recorder, saved=saved)
    payments = registry.get_or_create("payments", CONFIG)
    billing = registry.get_or_create("billing", CONFIG)
    assert (payments.state, billing.state) == (OPEN, CLOSED)
    registry.restore([BreakerState("billing", FORCED_OPEN)])
    assert billing.state == FORCED_OPEN
    assert recorder.moves == [], "restoring records nothing: the logs hold it"


def test_the_registry_reports_every_breaker_for_health(clocks: Clocks) -> None:
    registry = BreakerRegistry(clock=clocks, wall=clocks.wall)
    registry.get_or_create("search", CONFIG).call(ok)
    trip(registry.get_or_create("payments", CONFIG))
    report = {status.name: status for status in registry.states()}
    assert list(report) == ["payments", "search"]
    assert (report["payments"].state, report["payments"].retry_in) == (OPEN, 30.0)
    assert (report["search"].state, report["search"].calls) == (CLOSED, 1)
    assert report["payments"].as_dict()["reopens"] == 1


# threads ----------------------------------------------------------------------------------------


def test_calls_from_several_threads_are_all_counted(clocks: Clocks) -> None:
    config = BreakerConfig(window_size=10_000, minimum_calls=10_000)
    guarded = CircuitBreaker("shared", config, clock=clocks, wall=clocks.wall)
    failed = threading.Event()

    def work(n: int) -> None:
        try:
            for i in range(2_000):
                if i % 4 == 0:
                    with pytest.raises(Boom):
                        guarded.call(boom)
                else:
                    guarded.call(ok)
        except BaseException:
            failed.set()
            raise

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failed.is_set()
    status = guarded.status()
    assert (status.calls, status.failures) == (8_000, 2_000)
