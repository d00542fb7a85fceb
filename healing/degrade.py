"""Graceful degradation: when a service does not answer, answer anyway, and say so.

Usage::

    degradation = Degradation(clock, down=monitor.is_down)
    degradation.add("prices", CacheFirst(max_age=300), priority=20)
    degradation.add("prices", Fallback(lambda failure: other_source.prices()), priority=10)
    degradation.add("prices", DegradedMode({"prices": [], "note": "unavailable"}))

    answer = await degradation.call("prices", lambda: fetch_prices(region), key=region)
    answer.value, answer.degraded, answer.strategy, answer.reason, answer.staleness

A call runs the service (sync or async); if it raises (or ``timeout`` passes, or ``down``
says the service is unhealthy, in which case it is not called at all), the service's
strategies are tried by priority, highest first (equal priorities in the order they were
added), until one answers. The :class:`Answer` says whether it is degraded, which strategy
answered, why the service did not, how old a cached value is, and why the strategies before
it declined. When none answers, :class:`~eventcenter.domain.errors.ServiceUnavailable` is
raised with every reason and the service's own error as its cause.

Strategies:

- :class:`Fallback`: call another callable (sync or async), which gets the :class:`Failure`;
- :class:`CacheFirst`: the last value the service answered for this ``key`` (kept only for
  services with this strategy, at most ``cache_size`` keys each), with its staleness in
  seconds; it declines when there is none or it is older than ``max_age``;
- :class:`DegradedMode`: a static value.

A strategy of one's own has a ``name`` and ``async answer(failure) -> Offer``, and raises
:class:`~eventcenter.domain.errors.StrategyDeclined` (or any error) when it cannot answer.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, overload

from eventcenter.domain.errors import (
    ConfigurationError,
    ServiceUnavailable,
    StrategyDeclined,
    UnknownService,
)
from eventcenter.domain.sources import Clock
from eventcenter.healing.checkers import describe
from eventcenter.healing.timing import within

__all__ = [
    "Answer",
    "CacheFirst",
    "Cached",
    "Degradation",
    "DegradationStrategy",
    "DegradedMode",
    "Failure",
    "Fallback",
    "Offer",
]

T = TypeVar("T")

DEFAULT_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """What a degraded call returns: the value, and whether (and how) it is degraded.

    ``strategy`` is None when the service itself answered. ``reason`` says why it did not
    (its error, a timeout, an unhealthy check); ``staleness`` is the age in seconds of a
    cached value; ``declined`` lists the strategies tried before, each with why it declined.
    """

    value: T
    service: str
    degraded: bool = False
    strategy: str | None = None
    reason: str | None = None
    staleness: float | None = None
    declined: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cached:
    """The last value a service answered for one key, and when (clock time)."""

    value: Any
    stored_at: float


@dataclass(frozen=True, slots=True)
class Failure:
    """What a strategy is told: which service and key failed, why, at what time, and the last
    good value cached for that key (None when the service has no :class:`CacheFirst`)."""

    service: str
    key: Hashable
    reason: str
    error: BaseException | None
    now: float
    cached: Cached | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """A strategy's answer; ``staleness`` in seconds when the value is an old one."""

    value: Any
    staleness: float | None = None


class DegradationStrategy(Protocol):
    """One way to answer for a service that did not (see the module docstring)."""

    @property
    def name(self) -> str: ...

    async def answer(self, failure: Failure) -> Offer: ...


class Fallback:
    """Answer with another callable (sync or async); it receives the :class:`Failure`."""

    def __init__(self, call: Callable[[Failure], Any], *, name: str = "fallback") -> None:
        if not callable(call):
            raise ConfigurationError(f"a fallback must be callable, got {call!r}")
        self.call = call
        self.name = name

    async def answer(self, failure: Failure) -> Offer:
        value = self.call(failure)
        if inspect.isawaitable(value):
            value = await value
        return Offer(value)


class CacheFirst:
    """Answer with the last good value of the same key, if it is at most ``max_age`` old."""

    def __init__(self, *, max_age: float | None = None, name: str = "cache") -> None:
        if max_age is not None and not max_age >= 0:
            raise ConfigurationError(f"max_age must be >= 0 seconds or None, got {max_age!r}")
        self.max_age = max_age
        self.name = name

    async def answer(self, failure: Failure) -> Offer:
        cached = failure.cached
        if cached is None:
            raise StrategyDeclined("no good value cached yet")
        age = max(0.0, failure.now - cached.stored_at)
        if self.max_age is not None and age > self.max_age:
            raise StrategyDeclined(
                f"the cached value is {age:.3g}s old (at most {self.max_age:g}s allowed)"
            )
        return Offer(cached.value, staleness=age)


class DegradedMode:
    """Answer with a static value (a reduced response the caller knows how to show)."""

    def __init__(self, value: Any, *, name: str = "degraded_mode") -> None:
        self.value = value
        self.name = name

    async def answer(self, failure: Failure) -> Offer:
        return Offer(self.value)


@dataclass(eq=False)
class _Service:
    """One service's strategies (by priority), its cache, and its counts."""

    name: str
    strategies: list[tuple[int, int, DegradationStrategy]] = field(default_factory=list)
    cache: OrderedDict[Hashable, Cached] | None = None
    calls: int = 0
    answered: int = 0
    unavailable: int = 0
    by_strategy: dict[str, int] = field(default_factory=dict)

    def ordered(self) -> list[DegradationStrategy]:
        return [strategy for _, _, strategy in self.strategies]


class Degradation:
    """Degradation strategies per service, and the call that uses them.

    ``down(service)``, when given, is asked before each call: True skips the service (the
    monitor's :meth:`~eventcenter.healing.health.HealthMonitor.is_down` fits). ``cache_size``
    bounds the keys cached per service (least recently stored go first).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        down: Callable[[str], bool] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if cache_size < 1:
            raise ConfigurationError(f"cache_size must be at least 1, got {cache_size}")
        self._clock = clock
        self._down = down
        self._cache_size = cache_size
        self._services: dict[str, _Service] = {}
        self._order = 0

    def add(self, service: str, strategy: DegradationStrategy, *, priority: int = 0) -> None:
        """Add ``strategy`` for ``service``; higher ``priority`` is tried first."""
        entry = self._services.setdefault(service, _Service(service))
        if any(existing.name == strategy.name for existing in entry.ordered()):
            raise ConfigurationError(
                f"service {service!r} already has a strategy named {strategy.name!r}: "
                "give the second one another name"
            )
        self._order += 1
        entry.strategies.append((-priority, self._order, strategy))
        entry.strategies.sort(key=lambda item: (item[0], item[1]))
        if isinstance(strategy, CacheFirst) and entry.cache is None:
            entry.cache = OrderedDict()

    def strategies(self, service: str) -> list[str]:
        """``service``'s strategy names, in the order they are tried."""
        return [strategy.name for strategy in self._get(service).ordered()]

    @overload
    async def call(
        self,
        service: str,
        call: Callable[[], Awaitable[T]],
        *,
        key: Hashable = None,
        timeout: float | None = None,
    ) -> Answer[T]: ...

    @overload
    async def call(
        self,
        service: str,
        call: Callable[[], T],
        *,
        key: Hashable = None,
        timeout: float | None = None,
    ) -> Answer[T]: ...

    async def call(
        self,
        service: str,
        call: Callable[[], Any],
        *,
        key: Hashable = None,
        timeout: float | None = None,
    ) -> Answer[Any]:
        """Run ``call`` (sync or async, no arguments: bind them with a lambda or partial) for
        ``service``; degrade as the module docstring says. ``key`` selects the cached value
        (the call's arguments, say); ``timeout`` (clock seconds) bounds an async call."""
        entry = self._get(service)
        entry.calls += 1
        if self._down is not None and self._down(service):
            reason, error = f"service {service!r} is unhealthy (its health check)", None
        else:
            try:
                value = await self._run(call, timeout)
            except Exception as failure:  # the service failed: this is what degrades
                reason, error = describe(failure), failure
            else:
                entry.answered += 1
                self._store(entry, key, value)
                return Answer(value, service)
        return await self._degrade(entry, key, reason, error)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per service: calls, answered by the service, degraded answers by strategy, and
        calls nothing answered."""
        return {
            name: {
                "calls": entry.calls,
                "answered": entry.answered,
                "degraded": dict(sorted(entry.by_strategy.items())),
                "unavailable": entry.unavailable,
            }
            for name, entry in sorted(self._services.items())
        }

    async def _run(self, call: Callable[[], Any], timeout: float | None) -> Any:
        value = call()
        if inspect.isawaitable(value):
            if timeout is None:
                value = await value
            else:
                value = await within(self._clock, timeout, value)
        return value

    async def _degrade(
        self, entry: _Service, key: Hashable, reason: str, error: BaseException | None
    ) -> Answer[Any]:
        cached = entry.cache.get(key) if entry.cache is not None else None
        failure = Failure(entry.name, key, reason, error, self._clock.now(), cached)
        declined: list[str] = []
        for strategy in entry.ordered():
            try:
                offer = await strategy.answer(failure)
            except StrategyDeclined as refusal:
                declined.append(f"{strategy.name}: {refusal}")
                continue
            except Exception as failed:  # a broken strategy must not hide the next one
                declined.append(f"{strategy.name}: {describe(failed)}")
                continue
            entry.by_strategy[strategy.name] = entry.by_strategy.get(strategy.name, 0) + 1
            return Answer(
                offer.value,
                entry.name,
                degraded=True,
                strategy=strategy.name,
                reason=reason,
                staleness=offer.staleness,
                declined=tuple(declined),
            )
        entry.unavailable += 1
        raise ServiceUnavailable(entry.name, reason, declined) from error

    def _store(self, entry: _Service, key: Hashable, value: Any) -> None:
        cache = entry.cache
        if cache is None:
            return
        cache[key] = Cached(value, self._clock.now())
        cache.move_to_end(key)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _get(self, service: str) -> _Service:
        try:
            return self._services[service]
        except KeyError:
            raise UnknownService("degradation", service, list(self._services)) from None
