"""How one load-test step is offered and measured: user sizing, pacing, the step's figures.

Pure functions and small classes of plain values (times are passed in): the locustfile calls
them inside the Locust process, and the tests call them here without Locust (importing Locust
monkey-patches the standard library; see LIBRARIES.md).

**Open model with Locust's users.** A Locust user waits for each answer before it sends again,
so a fixed number of users is a closed model: a slow target would lower the offered rate and
hide its own overload. The users are therefore sized with head-room and paced by a schedule:
``users = ceil(rate * slo_p95 * head_room)`` and each starts a request every ``users / rate``
seconds (about ``slo_p95 * head_room``). An answer slower than that interval delays the user's
next start, which the schedule then catches up (it starts at once until it is back on time),
so the offered rate holds until the target's answers take longer than ``head_room`` times the
SLO, by which point the step fails on latency anyway.

**A step's figures** (:meth:`StepMeter.measure`) come from its steady window ``[start, end]``
(after the warm-up): ``achieved`` is the requests completed inside the window per second (the
target's throughput, failed answers included), the percentiles and the error rate are those of
the requests that *started* inside the window. A request still unanswered when the step is
measured counts with the time it has waited so far (a lower bound), so an overloaded target's
p95 is not flattered by the answers it never gave.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventcenter.domain.knee import Step

#: Share of one core the generator may use during a step before the step is marked as the
#: generator's (Locust runs its users on one core: past this, it cannot keep its schedule).
CPU_SATURATION = 0.9

#: Least loop lateness (s) that marks a step as the generator's, whatever the SLO.
MIN_LAG_LIMIT = 0.01

#: Seconds the generator's loop probe sleeps between two measures of its lateness.
LAG_PROBE_S = 0.05

#: Most scheduled starts a user that fell behind catches up at once (after a long stall it
#: resumes its schedule rather than firing a burst of every start it missed).
MAX_BACKLOG = 10


def users_for(rate: float, slo_p95: float, head_room: float, max_users: int) -> int:
    """Users needed to offer ``rate`` req/s while answers take up to ``head_room`` times the
    SLO: ``ceil(rate * slo_p95 * head_room)``, at least 1 and at most ``max_users``."""
    if rate <= 0 or slo_p95 <= 0 or head_room <= 0:
        raise ValueError("rate, slo_p95 and head_room must be positive")
    return max(1, min(max_users, math.ceil(rate * slo_p95 * head_room)))


def interval_for(rate: float, users: int) -> float:
    """Seconds between two starts of one user, so that ``users`` together offer ``rate``."""
    return users / rate


class Pacer:
    """One user's schedule: when its next request starts.

    A new step (``epoch``) starts the schedule afresh at a random phase within one interval, so
    the users' starts spread evenly instead of arriving together. After that each start is one
    interval after the previous *scheduled* start, however long the answer took: a user behind
    schedule starts at once (at most :data:`MAX_BACKLOG` starts are caught up).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._epoch: int | None = None
        self._next: float = 0.0

    def delay(self, now: float, interval: float, epoch: int) -> float:
        """Seconds to wait before the next request (0: start now)."""
        if epoch != self._epoch:
            self._epoch = epoch
            self._next = now + self._rng.random() * interval
        else:
            self._next = max(self._next + interval, now - MAX_BACKLOG * interval)
        return max(0.0, self._next - now)


def lag_limit(slo_p95: float) -> float:
    """Loop lateness (p95, s) past which the generator's own delay blurs the latencies it
    measures: a tenth of the SLO, at least :data:`MIN_LAG_LIMIT`."""
    return max(MIN_LAG_LIMIT, 0.1 * slo_p95)


def generator_saturated(
    cpu_seconds: float, wall_seconds: float, lag_p95: float, slo_p95: float
) -> bool:
    """True when the generator could not be trusted over a step: it used more than
    :data:`CPU_SATURATION` of a core, or its event loop woke late by more than
    :func:`lag_limit` (out of CPU itself, or starved of it by other processes)."""
    busy = wall_seconds > 0 and cpu_seconds / wall_seconds > CPU_SATURATION
    return busy or lag_p95 > lag_limit(slo_p95)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 for an empty one)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Answer:
    """One completed request: when it started and ended (epoch s), its latency (s), whether
    it failed."""

    start: float
    end: float
    latency: float
    failed: bool


@dataclass
class StepMeter:
    """Requests of the current step: those in flight (by token) and those answered.

    :meth:`begin` when a user starts a request (it returns the token the request carries),
    :meth:`end` when the answer (or the failure) comes back. :meth:`reset` at a step's start
    forgets the previous step."""

    open: dict[int, float] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    lags: list[tuple[float, float]] = field(default_factory=list)
    _tokens: int = 0

    def begin(self, now: float) -> int:
        self._tokens += 1
        self.open[self._tokens] = now
        return self._tokens

    def end(self, token: int, now: float, latency: float, failed: bool) -> None:
        start = self.open.pop(token, None)
        if start is not None:
            self.answers.append(Answer(start, now, latency, failed))

    def lagged(self, now: float, lag: float) -> None:
        """The generator's event loop woke ``lag`` seconds late at ``now`` (see
        :func:`loop_lagging`)."""
        self.lags.append((now, lag))

    def lag_p95(self, start: float, end: float) -> float:
        """p95 of the loop's lateness over ``[start, end]`` (0 without samples)."""
        return percentile(sorted(lag for at, lag in self.lags if start <= at <= end), 0.95)

    def reset(self) -> None:
        """Start a new step: forget the answers and the requests in flight (a request of an
        earlier step never counts in a later one; its answer is ignored when it comes)."""
        self.answers = []
        self.open = {}
        self.lags = []

    def measure(
        self,
        offered: float,
        start: float,
        end: float,
        now: float,
        *,
        generator_saturated: bool = False,
    ) -> Step:
        """The step offered at ``offered`` req/s over the window ``[start, end]``, measured at
        ``now`` (>= ``end``); see the module docstring."""
        window = end - start
        if window <= 0:
            raise ValueError("a steady window lasts a positive time")
        completed = sum(1 for a in self.answers if start <= a.end <= end)
        started = [a for a in self.answers if start <= a.start <= end]
        waiting = [now - s for s in self.open.values() if start <= s <= end]
        latencies = sorted([a.latency for a in started] + waiting)
        failures = sum(1 for a in started if a.failed)
        return Step(
            offered=offered,
            achieved=completed / window,
            p50=percentile(latencies, 0.50),
            p95=percentile(latencies, 0.95),
            p99=percentile(latencies, 0.99),
            error_rate=failures / len(started) if started else 0.0,
            duration=window,
            generator_saturated=generator_saturated,
        )
