"""The circuit breaker's state logic, as pure code: states as a table, sliding windows, rates.

The semantics are resilience4j's (its CircuitBreaker documentation and state-machine tests),
plus a wait in open that grows each time the breaker opens again without having closed:

- **closed**: every call is let through and its outcome goes into a sliding window, either the
  last ``window_size`` calls (``window="count"``) or the calls of the last ``window_size``
  seconds (``window="time"``, one bucket per second). Once the window holds at least
  ``minimum_calls`` calls, a failure rate (failed calls in percent) at or above
  ``failure_rate_threshold``, or a slow-call rate (calls longer than ``slow_call_duration``,
  failed or not) at or above ``slow_call_rate_threshold``, trips the breaker. With a count
  window, ``minimum_calls`` is at most ``window_size`` (as in resilience4j).
- **open**: no call is let through for the wait; the first call asked for after it moves the
  breaker to half-open (nothing runs on a timer). The wait is ``wait_in_open`` the first time,
  times ``wait_multiplier`` for each further opening in a row (half-open failing again), at
  most ``max_wait_in_open``; closing starts the count over.
- **half_open**: exactly ``permitted_calls_in_half_open`` trial calls are let through. When
  all of them have completed, the same two rates over them decide: open again (a longer wait)
  or closed (a fresh window). A call whose error is ignored gives its permit back. With
  ``max_wait_in_half_open`` set, trial calls that have not all completed by then (a call stuck
  without a timeout) open the breaker again rather than leave it half-open for ever.
- **forced_open** and **disabled**: set by an operator; they refuse every call, or let every
  call through without counting it, until an operator resets the breaker to closed.

Every state entered starts a new *epoch*; a call carries the epoch it was permitted in, and its
outcome counts only if the breaker is still in that epoch: a slow call permitted while closed
that returns after the breaker opened (and maybe half-opened) cannot vote in the trial.

A move returns a :class:`BreakerTransition`, the record of what happened (from, to, trigger,
reason and the figures that decided it); the runtime hands it to a
:class:`~eventcenter.domain.ports.BreakerRecorder`, and :class:`~eventcenter.domain.
breaker_log.BreakerLog` keeps it. Times are the caller's ``now`` in seconds, passed in
everywhere, so every rule is tested on plain numbers.

The moves are the table :data:`TRANSITIONS` (the rows the ``transitions`` library takes); the
breaker looks them up in a dict rather than run a ``Machine``: no move has a condition or a
callback the table would have to carry, and the check costs one lookup on a path that is taken
only when the state changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from eventcenter.domain.errors import BreakerRefused, ConfigurationError

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FORCED_OPEN = "forced_open"
DISABLED = "disabled"
STATES = (CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED)

TRANSITIONS: list[dict[str, Any]] = [
    # a rate reached its threshold: over the window while closed, over the trial when half-open
    # (or the trial did not complete within max_wait_in_half_open)
    {"trigger": "trip", "source": [CLOSED, HALF_OPEN], "dest": OPEN},
    # the wait in open is over: the next call asked for is the first trial call
    {"trigger": "probe", "source": OPEN, "dest": HALF_OPEN},
    # every trial call completed and both rates stayed below their thresholds
    {"trigger": "close", "source": HALF_OPEN, "dest": CLOSED},
    # an operator's moves
    {"trigger": "force_open", "source": [CLOSED, OPEN, HALF_OPEN, DISABLED], "dest": FORCED_OPEN},
    {"trigger": "disable", "source": [CLOSED, OPEN, HALF_OPEN, FORCED_OPEN], "dest": DISABLED},
    {"trigger": "reset", "source": list(STATES), "dest": CLOSED},
]


def _moves(table: Sequence[dict[str, Any]]) -> dict[tuple[str, str], str]:
    moves: dict[tuple[str, str], str] = {}
    for row in table:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for source in sources:
            moves[(row["trigger"], source)] = row["dest"]
    return moves


#: (trigger, state) -> the state it leads to; a pair not in it is a refused move.
MOVES = _moves(TRANSITIONS)
TRIGGERS = tuple(dict.fromkeys(row["trigger"] for row in TRANSITIONS))


def next_state(breaker: str, trigger: str, state: str) -> str:
    """Where ``trigger`` leads from ``state``; :class:`BreakerRefused` if nowhere."""
    dest = MOVES.get((trigger, state))
    if dest is None:
        if trigger not in TRIGGERS:
            why = f"unknown trigger; known: {', '.join(TRIGGERS)}"
        else:
            allowed = [t for (t, s) in MOVES if s == state]
            why = f"not a move from {state} (allowed here: {', '.join(allowed)})"
        raise BreakerRefused(breaker, trigger, state, why)
    return dest


#: The largest windows accepted: a count window keeps one small int per call, a time window
#: three ints per second.
MAX_COUNT_WINDOW = 100_000
MAX_TIME_WINDOW = 3_600


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """How a breaker decides (seconds for times, percent for rates). The defaults are
    resilience4j's, plus a wait that doubles on each re-opening up to ten minutes."""

    window: Literal["count", "time"] = "count"
    window_size: int = 100
    minimum_calls: int = 100
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration: float = 60.0
    permitted_calls_in_half_open: int = 10
    wait_in_open: float = 60.0
    wait_multiplier: float = 2.0
    max_wait_in_open: float = 600.0
    max_wait_in_half_open: float = 0.0

    def __post_init__(self) -> None:
        if self.window not in ("count", "time"):
            raise ConfigurationError(
                f"window must be 'count' (the last N calls) or 'time' (the last N seconds),"
                f" got {self.window!r}"
            )
        biggest = MAX_COUNT_WINDOW if self.window == "count" else MAX_TIME_WINDOW
        _whole("window_size", self.window_size, 1, biggest)
        _whole("minimum_calls", self.minimum_calls, 1)
        _whole("permitted_calls_in_half_open", self.permitted_calls_in_half_open, 1)
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = _number(name, getattr(self, name), "a percentage")
            if not 0.0 < value <= 100.0:
                raise ConfigurationError(f"{name} must be above 0 and at most 100, got {value}")
        for name in ("slow_call_duration", "wait_in_open", "max_wait_in_open"):
            if _number(name, getattr(self, name), "a number of seconds") <= 0.0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if _number("max_wait_in_half_open", self.max_wait_in_half_open, "seconds") < 0.0:
            raise ConfigurationError(
                "max_wait_in_half_open must be 0 (wait for the trial calls) or positive seconds"
            )
        if _number("wait_multiplier", self.wait_multiplier, "a factor") < 1.0:
            raise ConfigurationError(
                f"wait_multiplier must be at least 1 (the wait never shrinks when the breaker"
                f" opens again), got {self.wait_multiplier}"
            )
        if self.max_wait_in_open < self.wait_in_open:
            raise ConfigurationError(
                f"max_wait_in_open ({self.max_wait_in_open}) must be at least wait_in_open"
                f" ({self.wait_in_open}): it bounds the growing wait"
            )

    @property
    def effective_minimum_calls(self) -> int:
        """``minimum_calls``, at most the window's size for a count window."""
        if self.window == "count":
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls

    def wait(self, opening: int) -> float:
        """Seconds open for the ``opening``-th opening in a row (1 = the first)."""
        if opening < 1:
            raise ValueError(f"opening must be >= 1, got {opening}")
        try:
            grown = self.wait_in_open * self.wait_multiplier ** (opening - 1)
        except OverflowError:
            return self.max_wait_in_open
        return min(grown, self.max_wait_in_open)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BreakerConfig:
        return cls(**values)


def _whole(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"{name} must be {bounds}, got {value}")


def _number(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be {what}, got {value!r}")
    return float(value)


# sliding windows ---------------------------------------------------------------------------------


class CountWindow:
    """The outcomes of the last ``size`` calls: a ring of codes (bit 1 failed, bit 2 slow) and
    running totals, updated by subtracting the outcome a new one overwrites: O(1) per call."""

    __slots__ = ("_i", "_ring", "_size", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring: list[int] = [-1] * size  # -1: no call there yet
        self._i = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def add(self, failed: bool, slow: bool, now: float) -> None:
        i = self._i
        old = self._ring[i]
        if old < 0:
            self.calls += 1
        else:
            if old & 1:
                self.failures -= 1
            if old & 2:
                self.slow -= 1
        code = 0
        if failed:
            self.failures += 1
            code = 1
        if slow:
            self.slow += 1
            code |= 2
        self._ring[i] = code
        i += 1
        self._i = 0 if i == self._size else i

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window."""
        return self.calls, self.failures, self.slow


class TimeWindow:
    """The outcomes of the calls of the last ``seconds`` seconds: one bucket per second (the
    second ``floor(now)``), running totals, and buckets older than the window emptied as time
    moves on (whenever the window is used), so reading the totals costs O(1) on average.

    A ``now`` earlier than the newest bucket's second (a clock stepped back) counts in the
    newest bucket."""

    __slots__ = ("_calls", "_fails", "_head", "_size", "_slow", "calls", "failures", "slow")

    def __init__(self, seconds: int) -> None:
        self._size = seconds
        self._calls = [0] * seconds
        self._fails = [0] * seconds
        self._slow = [0] * seconds
        self._head: int | None = None  # the second of the newest bucket
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def _advance(self, now: float) -> int:
        second = math.floor(now)
        head = self._head
        if head is None:
            self._head = second
            return second % self._size
        if second <= head:
            return head % self._size
        for s in range(head + 1, head + 1 + min(second - head, self._size)):
            i = s % self._size
            if self._calls[i]:
                self.calls -= self._calls[i]
                self.failures -= self._fails[i]
                self.slow -= self._slow[i]
                self._calls[i] = self._fails[i] = self._slow[i] = 0
        self._head = second
        return second % self._size

    def add(self, failed: bool, slow: bool, now: float) -> None:
        i = self._advance(now)
        self._calls[i] += 1
        self.calls += 1
        if failed:
            self._fails[i] += 1
            self.failures += 1
        if slow:
            self._slow[i] += 1
            self.slow += 1

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window that ends at ``now``."""
        self._advance(now)
        return self.calls, self.failures, self.slow


Window = CountWindow | TimeWindow


def new_window(config: BreakerConfig) -> Window:
    if config.window == "count":
        return CountWindow(config.window_size)
    return TimeWindow(config.window_size)


def rate(part: int, calls: int) -> float:
    """``part`` of ``calls`` in percent (0 for no calls)."""
    return 100.0 * part / calls if calls else 0.0


# records ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """What happened: breaker ``name`` moved from ``previous`` to ``state`` by ``trigger``.

    ``failure_rate``, ``slow_rate`` (percent) and ``calls`` are the figures the move was decided
    on (the window's when it tripped while closed, the trial's when half-open decided; None for
    an operator's move or a wait that ended). ``wait`` is how long it stays open (set when it
    opened), ``reopens`` how many times in a row it has opened (0 once closed).

    ``at`` is when it happened. The breaker decides on the caller's clock; the runtime stamps
    the record with wall-clock time (epoch seconds) before recording it, so ``at + wait``
    (:attr:`open_until`) stays meaningful after a restart, when monotonic time starts over.
    """

    name: str
    trigger: str
    previous: str
    state: str
    reason: str
    at: float
    failure_rate: float | None = None
    slow_rate: float | None = None
    calls: int | None = None
    wait: float | None = None
    reopens: int = 0

    @property
    def open_until(self) -> float | None:
        return None if self.wait is None else self.at + self.wait


@dataclass(frozen=True, slots=True)
class BreakerState:
    """What a breaker needs to resume after a restart (its log holds it): the state, when its
    wait in open ends in wall-clock seconds (None unless open), and the openings in a row so
    the next wait keeps growing. Windows and trial counts start over."""

    name: str
    state: str = CLOSED
    open_until: float | None = None
    reopens: int = 0


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A breaker as a health report shows it: the state and the window's figures now."""

    name: str
    state: str
    calls: int
    failures: int
    slow: int
    failure_rate: float | None  # None until the window holds the minimum number of calls
    slow_rate: float | None
    not_permitted: int
    reopens: int
    retry_in: float | None  # seconds left of the wait in open

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# the breaker ------------------------------------------------------------------------------------


class Breaker:
    """The state of one breaker and the rules that move it. Not thread-safe: the runtime holds
    a lock around it.

    A call asks :meth:`acquire` (None: refused; else the epoch it was permitted in), then
    reports its outcome with :meth:`record` (failed or not, its duration) or, when its error is
    ignored, :meth:`release`. Each returns the transition it caused, if any.
    """

    __slots__ = (
        "_fail_pct",
        "_half_open_since",
        "_min_calls",
        "_open_until",
        "_permits",
        "_slow_after",
        "_slow_pct",
        "_trial",
        "_wait",
        "_window",
        "config",
        "epoch",
        "name",
        "not_permitted",
        "reopens",
        "state",
    )

    def __init__(self, name: str, config: BreakerConfig | None = None) -> None:
        self.name = name
        self.config = config = config or BreakerConfig()
        self._fail_pct = config.failure_rate_threshold
        self._slow_pct = config.slow_call_rate_threshold
        self._slow_after = config.slow_call_duration
        self._min_calls = config.effective_minimum_calls
        self.state = CLOSED
        self.epoch = 0
        self.reopens = 0
        self.not_permitted = 0
        self._window: Window = new_window(config)
        self._open_until = 0.0
        self._wait = 0.0
        self._half_open_since = 0.0
        self._permits = 0
        self._trial = [0, 0, 0]  # calls, failures, slow calls completed in half-open

    @classmethod
    def restore(
        cls, saved: BreakerState, config: BreakerConfig | None, *, now: float, wall: float
    ) -> Breaker:
        """The breaker as ``saved`` left it, at ``now`` on the caller's clock and ``wall``
        (epoch seconds): an open one keeps the rest of its wait (none if it ended while the
        process was down: the next call is then a trial); a half-open one starts a new trial."""
        breaker = cls(saved.name, config)
        if saved.state not in STATES:
            raise BreakerRefused(saved.name, "restore", saved.state, "not a breaker state")
        state = STATES[STATES.index(saved.state)]  # the constant itself (compared by identity)
        if state != CLOSED:
            breaker._enter(state, now)
        breaker.reopens = saved.reopens
        if state == OPEN:
            remaining = max(0.0, (saved.open_until or wall) - wall)
            breaker._wait = min(remaining, breaker.config.max_wait_in_open)
            breaker._open_until = now + breaker._wait
        return breaker

    # calls -------------------------------------------------------------------------------------

    def acquire(self, now: float) -> tuple[int | None, BreakerTransition | None]:
        """Ask to make a call at ``now``: (its epoch, or None if refused; the transition the
        request caused: open -> half_open when the wait is over, half_open -> open when the
        trial took longer than ``max_wait_in_half_open``)."""
        state = self.state
        if state in (CLOSED, DISABLED):
            return self.epoch, None
        moved = None
        if state == OPEN:
            if now < self._open_until:
                self.not_permitted += 1
                return None, None
            moved = self._move("probe", now, f"the wait of {self._wait:g}s in open is over")
        elif state == HALF_OPEN:
            limit = self.config.max_wait_in_half_open
            if limit and now >= self._half_open_since + limit:
                moved = self._trip(
                    now, f"the trial calls did not all complete within {limit:g}s", None
                )
                self.not_permitted += 1
                return None, moved
        if self.state == HALF_OPEN and self._permits > 0:
            self._permits -= 1
            return self.epoch, moved
        self.not_permitted += 1
        return None, moved

    def release(self, epoch: int) -> None:
        """A call permitted in ``epoch`` ended with an ignored error: it neither failed nor
        succeeded, and a trial call's permit is given back."""
        if epoch == self.epoch and self.state == HALF_OPEN:
            self._permits += 1

    def record(
        self, epoch: int, failed: bool, duration: float, now: float
    ) -> BreakerTransition | None:
        """A call permitted in ``epoch`` completed at ``now`` after ``duration`` seconds."""
        if epoch != self.epoch:
            return None  # permitted in an earlier state: its outcome no longer counts
        state = self.state
        slow = duration > self._slow_after
        if state == CLOSED:
            window = self._window
            window.add(failed, slow, now)
            calls = window.calls
            if calls >= self._min_calls and (
                window.failures * 100.0 >= self._fail_pct * calls
                or window.slow * 100.0 >= self._slow_pct * calls
            ):
                return self._decide(now, calls, window.failures, window.slow, "over the last")
            return None
        if state == HALF_OPEN:
            trial = self._trial
            trial[0] += 1
            if failed:
                trial[1] += 1
            if slow:
                trial[2] += 1
            if trial[0] >= self.config.permitted_calls_in_half_open:
                return self._decide(now, trial[0], trial[1], trial[2], "over the trial's")
        return None

    # operators ---------------------------------------------------------------------------------

    def force_open(self, now: float, reason: str) -> BreakerTransition | None:
        """Refuse every call until reset (None: it is forced open already)."""
        return None if self.state == FORCED_OPEN else self._move("force_open", now, reason)

    def disable(self, now: float, reason: str) -> BreakerTransition | None:
        """Let every call through, uncounted, until reset (None: it is disabled already)."""
        return None if self.state == DISABLED else self._move("disable", now, reason)

    def reset(self, now: float, reason: str) -> BreakerTransition:
        """Back to closed with an empty window, the wait and the counts started over."""
        self.not_permitted = 0
        return self._move("reset", now, reason)

    # figures -----------------------------------------------------------------------------------

    def status(self, now: float) -> BreakerStatus:
        if self.state == HALF_OPEN:
            calls, failures, slow = self._trial
            enough = calls >= self.config.permitted_calls_in_half_open
        else:
            calls, failures, slow = self._window.totals(now)
            enough = calls >= self._min_calls
        retry_in = max(0.0, self._open_until - now) if self.state == OPEN else None
        return BreakerStatus(
            name=self.name,
            state=self.state,
            calls=calls,
            failures=failures,
            slow=slow,
            failure_rate=rate(failures, calls) if enough and calls else None,
            slow_rate=rate(slow, calls) if enough and calls else None,
            not_permitted=self.not_permitted,
            reopens=self.reopens,
            retry_in=retry_in,
        )

    def retry_in(self, now: float) -> float | None:
        """Seconds left of the wait in open (None unless open)."""
        return max(0.0, self._open_until - now) if self.state == OPEN else None

    # moves -------------------------------------------------------------------------------------

    def _decide(
        self, now: float, calls: int, failures: int, slow: int, over: str
    ) -> BreakerTransition:
        """The rates over ``calls`` decide: trip if either reached its threshold, else close
        (only reached from half-open: a closed breaker asks only when one did)."""
        failure_rate, slow_rate = rate(failures, calls), rate(slow, calls)
        figures = (failure_rate, slow_rate, calls)
        what = f"{over} {calls} calls"
        if failures * 100.0 >= self._fail_pct * calls:
            why = f"failure rate {failure_rate:.1f}% >= {self._fail_pct:g}% {what}"
            return self._trip(now, why, figures)
        if slow * 100.0 >= self._slow_pct * calls:
            why = (
                f"slow-call rate {slow_rate:.1f}% >= {self._slow_pct:g}% {what}"
                f" (slower than {self._slow_after:g}s)"
            )
            return self._trip(now, why, figures)
        why = (
            f"failure rate {failure_rate:.1f}% < {self._fail_pct:g}% and slow-call rate"
            f" {slow_rate:.1f}% < {self._slow_pct:g}% {what}"
        )
        return self._move("close", now, why, figures)

    def _trip(
        self, now: float, reason: str, figures: tuple[float, float, int] | None
    ) -> BreakerTransition:
        return self._move("trip", now, reason, figures)

    def _move(
        self,
        trigger: str,
        now: float,
        reason: str,
        figures: tuple[float, float, int] | None = None,
    ) -> BreakerTransition:
        previous = self.state
        dest = next_state(self.name, trigger, previous)
        self._enter(dest, now, reset=trigger == "reset")
        failure_rate, slow_rate, calls = figures if figures is not None else (None, None, None)
        return BreakerTransition(
            name=self.name,
            trigger=trigger,
            previous=previous,
            state=dest,
            reason=reason,
            at=now,
            failure_rate=failure_rate,
            slow_rate=slow_rate,
            calls=calls,
            wait=self._wait if dest == OPEN else None,
            reopens=self.reopens,
        )

    def _enter(self, state: str, now: float, *, reset: bool = False) -> None:
        """Start ``state`` (a new epoch): what the state needs is set up fresh."""
        if state == OPEN:
            self.reopens += 1
            self._wait = self.config.wait(self.reopens)
            self._open_until = now + self._wait
        elif state == HALF_OPEN:
            self._permits = self.config.permitted_calls_in_half_open
            self._trial = [0, 0, 0]
            self._half_open_since = now
        elif state == CLOSED:
            self.reopens = 0
            self._window = new_window(self.config)
        elif state == DISABLED:
            self.reopens = 0
        if reset:
            self.reopens = 0
        self.state = state
        self.epoch += 1
