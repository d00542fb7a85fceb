"""Circuit breakers around sync and async calls, named, restored after a restart.

The rules (states, windows, rates, the growing wait) are the pure
:class:`~eventcenter.domain.breaker.Breaker`; this module is the shell around it: it times the
call, sorts its error, runs the fallback, applies a timeout to coroutines, and hands every move
to a :class:`~eventcenter.domain.ports.BreakerRecorder`. pybreaker, aiobreaker and purgatory
were the candidates to build on; none has sliding windows, a slow-call rate, several trial
calls in half-open or a growing wait (they count consecutive failures against one fixed reset
timeout), so the rules are our own, checked against resilience4j's state-machine tests.

Letting a call through is local and cheap: a closed breaker is checked without a lock or a
clock read (the state and its epoch are read once each; a move in between makes the call's
outcome land in an old epoch, where it is dropped), and only the outcome takes the lock. No
call waits on the store: moves are queued by the recorder, in order, under the lock.

Which errors count:

- ``ignore_errors``: neither failure nor success (a trial call gives its permit back); so is
  anything that is not an ``Exception`` (cancellation, KeyboardInterrupt). Re-raised.
- ``record_errors`` (default: every ``Exception``): failures. With a fallback, its value is
  returned instead; without one, the error is re-raised.
- any other exception counts as a success of the dependency (it answered; the caller's own
  error is re-raised), as in resilience4j.
- :class:`~eventcenter.domain.errors.CallTimedOut` (``timeout`` ran out, coroutines only) is
  always a failure.

A refused call raises :class:`~eventcenter.domain.errors.CallNotPermitted`, or returns the
fallback's value: the fallback is called with the error (a ``CallNotPermitted`` or the
failure) and may be a coroutine function for ``acall``.

Usage::

    registry = BreakerRegistry(recorder=store_recorder, saved=await store_recorder.load())
    payments = registry.get_or_create("payments", BreakerConfig(window_size=20,
                                      minimum_calls=10), timeout=2.0, fallback=cached_quote)

    @payments
    async def quote(order_id: str) -> Quote: ...

    receipt = payments.call(charge_card, order)          # a sync call
    registry.states()                                    # for the health report
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar, cast

from eventcenter.domain.breaker import (
    CLOSED,
    OPEN,
    Breaker,
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    BreakerTransition,
)
from eventcenter.domain.errors import CallNotPermitted, CallTimedOut, ConfigurationError
from eventcenter.domain.ports import BreakerRecorder
from eventcenter.domain.sources import Clock

log = logging.getLogger("eventcenter.healing")

P = ParamSpec("P")
T = TypeVar("T")

#: Called with the error (``CallNotPermitted`` or the failure); returns the value to give the
#: caller instead (or an awaitable of it, for ``acall``).
Fallback = Callable[[BaseException], Any]
ErrorTypes = tuple[type[BaseException], ...]

_FAILED, _SUCCEEDED, _IGNORED = 0, 1, 2


class CircuitBreaker:
    """One named breaker; see the module docstring.

    ``clock`` gives the monotonic time the rules run on (default ``time.monotonic``; tests pass
    a fake), ``wall`` the epoch seconds stamped on recorded moves (so a wait in open survives a
    restart). ``timeout`` (seconds) applies to coroutines called through :meth:`acall`.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        recorder: BreakerRecorder | None = None,
        fallback: Fallback | None = None,
        timeout: float | None = None,
        record_errors: ErrorTypes = (Exception,),
        ignore_errors: ErrorTypes = (),
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"breaker '{name}': timeout must be positive seconds")
        self.name = name
        self.config = config or BreakerConfig()
        self.timeout = timeout
        self._now: Callable[[], float] = time.monotonic if clock is None else clock.now
        self._wall = wall
        self._recorder = recorder
        self._fallback = fallback
        self._async_fallback = fallback is not None and inspect.iscoroutinefunction(fallback)
        self._record = tuple(record_errors)
        self._ignore = tuple(ignore_errors)
        self._lock = threading.Lock()
        # the lock's own methods: a third cheaper than ``with`` on the path every call takes
        self._hold, self._free = self._lock.acquire, self._lock.release
        self._machine = Breaker(name, self.config)

    # state -------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._machine.state

    def status(self) -> BreakerStatus:
        with self._lock:
            return self._machine.status(self._now())

    def restore(self, saved: BreakerState) -> None:
        """Take the state a log kept (after a restart): an open breaker keeps the rest of its
        wait, measured on the wall clock. Nothing is recorded: the log holds it already."""
        with self._lock:
            self._machine = Breaker.restore(saved, self.config, now=self._now(), wall=self._wall())

    def force_open(self, reason: str = "forced open by an operator") -> None:
        """Refuse every call until :meth:`reset`."""
        with self._lock:
            self._emit(self._machine.force_open(self._now(), reason))

    def disable(self, reason: str = "disabled by an operator") -> None:
        """Let every call through, uncounted, until :meth:`reset`."""
        with self._lock:
            self._emit(self._machine.disable(self._now(), reason))

    def reset(self, reason: str = "reset by an operator") -> None:
        """Closed, with an empty window and the wait started over."""
        with self._lock:
            self._emit(self._machine.reset(self._now(), reason))

    # calls -------------------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a function or a coroutine function: each call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            target = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.acall(target, *args, **kwargs)

            return cast(Callable[P, T], guarded_async)

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return guarded

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` through the breaker (from any thread)."""
        machine = self._machine
        epoch = machine.epoch
        if machine.state is not CLOSED:
            permitted = self._acquire()
            if permitted is None:
                return cast(T, self._fall_back_sync(self._refusal()))
            epoch = permitted
        now = self._now
        start = now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            if self._settle(error, epoch, start) == _FAILED and self._fallback is not None:
                return cast(T, self._fall_back_sync(error))
            raise
        self._succeeded(machine, epoch, start, now())
        return result

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker, within ``timeout`` if set."""
        machine = self._machine
        epoch = machine.epoch
        if machine.state is not CLOSED:
            permitted = self._acquire()
            if permitted is None:
                return cast(T, await self._fall_back(self._refusal()))
            epoch = permitted
        now = self._now
        start = now()
        try:
            if self.timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await self._within_timeout(fn(*args, **kwargs), self.timeout)
        except BaseException as error:
            if self._settle(error, epoch, start) == _FAILED and self._fallback is not None:
                return cast(T, await self._fall_back(error))
            raise
        self._succeeded(machine, epoch, start, now())
        return result

    async def _within_timeout(self, awaitable: Awaitable[T], timeout: float) -> T:
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                return await awaitable
        except TimeoutError as error:
            if limit.expired():
                raise CallTimedOut(self.name, timeout) from error
            raise

    # internals ---------------------------------------------------------------------------------

    def _acquire(self) -> int | None:
        with self._lock:
            epoch, moved = self._machine.acquire(self._now())
            if moved is not None:
                self._emit(moved)
        return epoch

    def _refusal(self) -> CallNotPermitted:
        machine = self._machine
        retry_in = machine.retry_in(self._now()) if machine.state == OPEN else None
        return CallNotPermitted(self.name, machine.state, retry_in)

    def _succeeded(self, machine: Breaker, epoch: int, start: float, end: float) -> None:
        """Count a call that returned."""
        self._hold()
        try:
            moved = machine.record(epoch, False, end - start, end)
            if moved is not None:
                self._emit(moved)
        finally:
            self._free()

    def _settle(self, error: BaseException, epoch: int, start: float) -> int:
        """Count the call that raised ``error``; say how it counted."""
        kind = self._kind(error)
        end = self._now()
        with self._lock:
            if kind == _IGNORED:
                self._machine.release(epoch)
                return kind
            moved = self._machine.record(epoch, kind == _FAILED, end - start, end)
            if moved is not None:
                self._emit(moved)
        return kind

    def _kind(self, error: BaseException) -> int:
        if isinstance(error, CallTimedOut):
            return _FAILED
        if isinstance(error, self._ignore) or not isinstance(error, Exception):
            return _IGNORED
        return _FAILED if isinstance(error, self._record) else _SUCCEEDED

    def _fall_back_sync(self, error: BaseException) -> Any:
        fallback = self._fallback
        if fallback is None:
            raise error
        if self._async_fallback:
            raise ConfigurationError(
                f"breaker '{self.name}': its fallback is a coroutine function; call through"
                " acall (or give the breaker a plain function)"
            ) from error
        value = fallback(error)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise ConfigurationError(
                f"breaker '{self.name}': its fallback returned an awaitable to a sync call;"
                " call through acall"
            ) from error
        return value

    async def _fall_back(self, error: BaseException) -> Any:
        fallback = self._fallback
        if fallback is None:
            raise error
        value = fallback(error)
        if inspect.isawaitable(value):
            value = await value
        return value

    def _emit(self, moved: BreakerTransition | None) -> None:
        """Hand a move to the recorder, stamped with wall-clock time (called under the lock,
        so records keep the order of the moves)."""
        if moved is None:
            return
        level = logging.WARNING if moved.state != CLOSED else logging.INFO
        log.log(level, "breaker %s: %s -> %s: %s", self.name, moved.previous, moved.state,
                moved.reason)  # fmt: skip
        if self._recorder is None:
            return
        try:
            self._recorder.record(replace(moved, at=self._wall()))
        except Exception as error:  # the calls it protects go on; the move is in the log line
            log.error("breaker %s: the move to %s was not recorded: %r", self.name,
                      moved.state, error)  # fmt: skip


class BreakerRegistry:
    """The named breakers of one center: one per name, created on first use, restored from
    the states their logs kept (``saved``, from the store at start)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        recorder: BreakerRecorder | None = None,
        saved: Iterable[BreakerState] = (),
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._recorder = recorder
        self._saved = {state.name: state for state in saved}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get_or_create(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        fallback: Fallback | None = None,
        timeout: float | None = None,
        record_errors: ErrorTypes = (Exception,),
        ignore_errors: ErrorTypes = (),
    ) -> CircuitBreaker:
        """The breaker named ``name``; created with these options the first time (and given
        the state its log kept), returned as it is afterwards. Asking again with another
        ``config`` is refused: two parts of the code would disagree on one breaker's rules."""
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is not None:
                if config is not None and config != breaker.config:
                    raise ConfigurationError(
                        f"breaker '{name}' exists with another configuration"
                        f" ({breaker.config}); use one configuration per name"
                    )
                return breaker
            if not name:
                raise ConfigurationError("a circuit breaker needs a name")
            breaker = CircuitBreaker(
                name,
                config,
                clock=self._clock,
                wall=self._wall,
                recorder=self._recorder,
                fallback=fallback,
                timeout=timeout,
                record_errors=record_errors,
                ignore_errors=ignore_errors,
            )
            saved = self._saved.pop(name, None)
            if saved is not None:
                breaker.restore(saved)
            self._breakers[name] = breaker
            return breaker

    def get(self, name: str) -> CircuitBreaker:
        """The breaker named ``name`` (LookupError if there is none)."""
        try:
            return self._breakers[name]
        except KeyError:
            known = ", ".join(sorted(self._breakers)) or "none"
            raise LookupError(f"no circuit breaker named '{name}' (known: {known})") from None

    def restore(self, saved: Iterable[BreakerState]) -> None:
        """Apply states kept by the logs: at once to breakers that exist, on creation to the
        others."""
        with self._lock:
            for state in saved:
                breaker = self._breakers.get(state.name)
                if breaker is None:
                    self._saved[state.name] = state
                else:
                    breaker.restore(state)

    def names(self) -> list[str]:
        return sorted(self._breakers)

    def states(self) -> list[BreakerStatus]:
        """Every breaker's state and figures, by name: what a health report shows."""
        with self._lock:
            breakers = sorted(self._breakers.items())
        return [breaker.status() for _, breaker in breakers]
