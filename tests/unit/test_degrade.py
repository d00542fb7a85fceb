"""Degradation strategies on a fake clock: tried by priority when the service fails, a cached
value with its staleness, a static degraded answer, and an answer that says it is degraded."""

from __future__ import annotations

import asyncio
import functools

import pytest

from eventcenter.domain.errors import (
    ConfigurationError,
    ServiceUnavailable,
    StrategyDeclined,
    UnknownService,
)
from eventcenter.healing.degrade import (
    Answer,
    CacheFirst,
    Degradation,
    DegradedMode,
    Failure,
    Fallback,
    Offer,
)
from eventcenter.sources.clock import FakeClock


class Flaky:
    """A service the test breaks and mends; it counts its calls."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def prices(self, region: str) -> object:
        self.calls += 1
        if not self.up:
            raise ConnectionError(f"prices for {region}: connection refused")
        return {"region": region, "price": 10 + self.calls}

    def sync_prices(self, region: str) -> object:
        self.calls += 1
        if not self.up:
            raise ConnectionError("refused")
        return {"region": region, "sync": True}


def static(value: object) -> DegradedMode:
    return DegradedMode(value)


async def test_a_service_that_answers_is_not_degraded() -> None:
    clock = FakeClock()
    degradation = Degradation(clock)
    degradation.add("prices", static({}))
    service = Flaky()
    answer = await degradation.call("prices", lambda: service.prices("eu"))
    assert answer == Answer({"region": "eu", "price": 11}, "prices")
    assert not answer.degraded
    assert answer.strategy is None
    assert answer.reason is None


async def test_strategies_are_tried_by_priority_highest_first_then_in_order_added() -> None:
    clock = FakeClock()
    degradation = Degradation(clock)
    tried: list[str] = []

    def declining(name: str) -> Fallback:
        def call(failure: Failure) -> object:
            tried.append(name)
            raise StrategyDeclined(f"{name} has nothing")

        return Fallback(call, name=name)

    degradation.add("prices", declining("low"), priority=1)
    degradation.add("prices", declining("high"), priority=10)
    degradation.add("prices", declining("low-2"), priority=1)
    degradation.add("prices", static({"prices": []}), priority=-5)
    assert degradation.strategies("prices") == ["high", "low", "low-2", "degraded_mode"]
    service = Flaky()
    service.up = False
    answer = await degradation.call("prices", lambda: service.prices("eu"))
    assert tried == ["high", "low", "low-2"]
    assert answer.value == {"prices": []}
    assert answer.degraded
    assert answer.strategy == "degraded_mode"
    assert answer.reason == "ConnectionError: prices for eu: connection refused"
    assert answer.declined == (
        "high: high has nothing",
        "low: low has nothing",
        "low-2: low-2 has nothing",
    )


async def test_fallback_calls_another_callable_sync_or_async_with_the_failure() -> None:
    clock = FakeClock()
    degradation = Degradation(clock)
    seen: list[Failure] = []

    async def mirror(failure: Failure) -> str:
        seen.append(failure)
        return f"mirror for {failure.key}"

    degradation.add("prices", Fallback(mirror, name="mirror"))
    service = Flaky()
    service.up = False
    answer = await degradation.call("prices", lambda: service.prices("eu"), key="eu")
    assert (answer.value, answer.strategy) == ("mirror for eu", "mirror")
    assert isinstance(seen[0].error, ConnectionError)
    assert seen[0].service == "prices"

    degradation.add("quotes", Fallback(lambda failure: "sync fallback"))
    sync_answer = await degradation.call("quotes", functools.partial(service.sync_prices, "us"))
    assert (sync_answer.value, sync_answer.strategy) == ("sync fallback", "fallback")


async def test_a_sync_service_is_wrapped_like_an_async_one() -> None:
    degradation = Degradation(FakeClock())
    degradation.add("prices", static("n/a"))
    service = Flaky()
    assert (await degradation.call("prices", lambda: service.sync_prices("eu"))).value == {
        "region": "eu",
        "sync": True,
    }
    service.up = False
    answer = await degradation.call("prices", lambda: service.sync_prices("eu"))
    assert (answer.value, answer.degraded) == ("n/a", True)


async def test_cache_first_answers_with_the_last_good_value_and_its_staleness() -> None:
    clock = FakeClock(start=1000.0)
    degradation = Degradation(clock)
    degradation.add("prices", CacheFirst(), priority=10)
    degradation.add("prices", static("none"))
    service = Flaky()
    fresh = await degradation.call("prices", lambda: service.prices("eu"), key="eu")
    await clock.advance(42.5)
    service.up = False
    answer = await degradation.call("prices", lambda: service.prices("eu"), key="eu")
    assert answer.value == fresh.value
    assert answer.strategy == "cache"
    assert answer.staleness == pytest.approx(42.5)
    other = await degradation.call("prices", lambda: service.prices("us"), key="us")
    assert other.strategy == "degraded_mode"  # nothing cached for that key
    assert other.declined == ("cache: no good value cached yet",)


async def test_cache_first_declines_a_value_older_than_max_age() -> None:
    clock = FakeClock()
    degradation = Degradation(clock)
    degradation.add("prices", CacheFirst(max_age=60.0), priority=10)
    degradation.add("prices", static("none"))
    service = Flaky()
    await degradation.call("prices", lambda: service.prices("eu"))
    service.up = False
    await clock.advance(60.0)
    assert (await degradation.call("prices", lambda: service.prices("eu"))).strategy == "cache"
    await clock.advance(1.0)
    answer = await degradation.call("prices", lambda: service.prices("eu"))
    assert answer.strategy == "degraded_mode"
    assert answer.declined == ("cache: the cached value is 61s old (at most 60s allowed)",)


async def test_the_cache_keeps_at_most_cache_size_keys_newest_stored_last() -> None:
    degradation = Degradation(FakeClock(), cache_size=2)
    degradation.add("prices", CacheFirst())
    degradation.add("prices", static("none"), priority=-1)
    service = Flaky()
    for region in ("a", "b", "a", "c"):  # storing "a" again makes it the newest
        await degradation.call("prices", functools.partial(service.prices, region), key=region)
    service.up = False
    strategies = {
        region: (await degradation.call("prices", lambda: service.prices("x"), key=region)).strategy
        for region in ("a", "b", "c")
    }
    assert strategies == {"a": "cache", "b": "degraded_mode", "c": "cache"}


async def test_when_no_strategy_answers_the_call_raises_with_every_reason() -> None:
    degradation = Degradation(FakeClock())
    degradation.add("prices", CacheFirst())

    def broken(failure: Failure) -> object:
        raise KeyError("mirror has no region")

    degradation.add("prices", Fallback(broken, name="mirror"))
    service = Flaky()
    service.up = False
    with pytest.raises(ServiceUnavailable) as raised:
        await degradation.call("prices", lambda: service.prices("eu"))
    error = raised.value
    assert error.service == "prices"
    assert error.reasons == [
        "cache: no good value cached yet",
        "mirror: KeyError: 'mirror has no region'",
    ]
    assert isinstance(error.__cause__, ConnectionError)
    assert "service 'prices' is unavailable (ConnectionError" in str(error)
    assert degradation.stats()["prices"]["unavailable"] == 1


async def test_a_timeout_on_the_clock_degrades_a_call_that_does_not_answer() -> None:
    clock = FakeClock()
    degradation = Degradation(clock)
    degradation.add("prices", static("late"))

    async def never() -> str:
        await clock.sleep(3600.0)
        return "too late"

    call = asyncio.create_task(degradation.call("prices", never, timeout=2.0))
    await clock.advance(2.0)
    answer = await call
    assert (answer.value, answer.reason) == ("late", "TimeoutError: no answer within 2s")
    assert clock.sleepers == 0


async def test_a_service_the_health_check_says_is_down_is_not_called_at_all() -> None:
    down = {"prices"}
    degradation = Degradation(FakeClock(), down=lambda service: service in down)
    degradation.add("prices", static("unavailable"))
    service = Flaky()
    answer = await degradation.call("prices", lambda: service.prices("eu"))
    assert service.calls == 0
    assert answer.reason == "service 'prices' is unhealthy (its health check)"
    down.clear()
    assert not (await degradation.call("prices", lambda: service.prices("eu"))).degraded
    assert service.calls == 1


async def test_a_cancelled_call_is_not_degraded() -> None:
    degradation = Degradation(FakeClock())
    degradation.add("prices", static("x"))

    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await degradation.call("prices", cancelled)


async def test_a_strategy_of_ones_own_follows_the_protocol() -> None:
    class Replica:
        name = "replica"

        async def answer(self, failure: Failure) -> Offer:
            return Offer(f"replica of {failure.service}", staleness=3.0)

    degradation = Degradation(FakeClock())
    degradation.add("prices", Replica())
    service = Flaky()
    service.up = False
    answer = await degradation.call("prices", lambda: service.prices("eu"))
    assert (answer.value, answer.staleness) == ("replica of prices", 3.0)


async def test_stats_count_answers_by_strategy() -> None:
    degradation = Degradation(FakeClock())
    degradation.add("prices", CacheFirst(), priority=1)
    degradation.add("prices", static("none"))
    service = Flaky()
    await degradation.call("prices", lambda: service.prices("eu"))
    service.up = False
    await degradation.call("prices", lambda: service.prices("eu"))
    await degradation.call("prices", lambda: service.prices("eu"), key="other")
    assert degradation.stats() == {
        "prices": {
            "calls": 3,
            "answered": 1,
            "degraded": {"cache": 1, "degraded_mode": 1},
            "unavailable": 0,
        }
    }


async def test_names_are_checked() -> None:
    degradation = Degradation(FakeClock())
    degradation.add("prices", static("x"))
    with pytest.raises(UnknownService, match="no degradation named 'price'"):
        await degradation.call("price", lambda: 1)
    with pytest.raises(ConfigurationError, match="already has a strategy named 'degraded_mode'"):
        degradation.add("prices", static("y"))
    with pytest.raises(ConfigurationError, match="cache_size"):
        Degradation(FakeClock(), cache_size=0)
    with pytest.raises(ConfigurationError, match="max_age"):
        CacheFirst(max_age=-1)
    with pytest.raises(ConfigurationError, match="callable"):
        Fallback("nope")  # type: ignore[arg-type]
