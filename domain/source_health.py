"""How healthy a data source is: a score in [0, 1] from plain values, and the record behind it.

The score multiplies four factors, each in [0, 1], so any one problem is enough to pull it
down and a perfect score needs all four::

    score = mode_factor * freshness * streak * (1 - error_rate)

- ``mode_factor``: 1.0 in the source's normal mode (``event_only``, or ``polling_only`` for a
  source without a push path); 0.8 in ``hybrid``, 0.6 in ``polling_only`` when push exists
  (delivering, but with polling's latency), 0.7 in ``transition``.
- ``freshness``: 1.0 while the last success of a delivering path is at most one expected
  interval old (``event_timeout`` in ``event_only``, ``polling_interval`` when polling); beyond,
  ``expected / age``: 0.5 at twice the interval, 0.1 at ten times.
- ``streak``: ``failure_threshold / (failure_threshold + consecutive_failures)``: 1.0 with no
  failure, 0.5 when the failures reach the threshold, towards 0 as they go on. It is what makes
  a push-only source whose push keeps failing (it has nowhere to fall back to) unhealthy.
- ``error_rate``: the share of recent outcomes that failed (an exponentially weighted mean, so
  a burst fades).

Rule of thumb for an operator: >= 0.8 healthy, 0.5-0.8 degraded, < 0.5 unhealthy.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID, POLLING_ONLY, TRANSITION

#: Weight of the newest outcome in the error rate (about the last 10 outcomes count).
ERROR_RATE_WEIGHT = 0.1

DEGRADED_MODE_FACTOR = {HYBRID: 0.8, POLLING_ONLY: 0.6, TRANSITION: 0.7}


@dataclass(frozen=True, slots=True)
class HealthFactors:
    """The four factors of the score (each in [0, 1]): what ``sources show`` prints so an
    operator sees which one pulls the score down. ``reliability`` is ``1 - error_rate``."""

    mode: float
    freshness: float
    streak: float
    reliability: float

    @property
    def score(self) -> float:
        return self.mode * self.freshness * self.streak * self.reliability


def health_factors(
    *,
    mode: str,
    has_push: bool,
    consecutive_failures: int,
    failure_threshold: int,
    last_success_age: float,
    expected_interval: float,
    error_rate: float,
) -> HealthFactors:
    """The factors of the module docstring's formula (see :func:`health_score`)."""
    if failure_threshold < 1 or expected_interval <= 0:
        raise ValueError("failure_threshold and expected_interval must be positive")
    normal = mode == EVENT_ONLY or (mode == POLLING_ONLY and not has_push)
    age = max(last_success_age, 0.0)
    return HealthFactors(
        mode=1.0 if normal else DEGRADED_MODE_FACTOR.get(mode, 0.0),
        freshness=1.0 if age <= expected_interval else expected_interval / age,
        streak=failure_threshold / (failure_threshold + max(consecutive_failures, 0)),
        reliability=1.0 - min(max(error_rate, 0.0), 1.0),
    )


def health_score(
    *,
    mode: str,
    has_push: bool,
    consecutive_failures: int,
    failure_threshold: int,
    last_success_age: float,
    expected_interval: float,
    error_rate: float,
) -> float:
    """The score of the module docstring. ``last_success_age``: seconds since a delivering
    path last succeeded (since registration if it never did)."""
    return health_factors(
        mode=mode,
        has_push=has_push,
        consecutive_failures=consecutive_failures,
        failure_threshold=failure_threshold,
        last_success_age=last_success_age,
        expected_interval=expected_interval,
        error_rate=error_rate,
    ).score


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """What ``sources list|show`` prints about a source's health at one moment."""

    mode: str
    score: float
    last_success: float | None
    last_failure: float | None
    consecutive_failures: int
    successes: int
    failures: int
    items_pushed: int  # items that arrived by the push path
    items_polled: int  # items that arrived by polling
    polls: int  # poll calls made
    error_rate: float
    mean_lag: float | None  # seconds from the source's own timestamp to admission
    factors: HealthFactors | None = None  # what the score is made of


class HealthTally:
    """Counters the runtime keeps per source, turned into a :class:`SourceHealth` on demand.

    Cheap to update (a few additions per outcome). Consecutive failures are kept per path: the
    score looks at the paths that deliver in the current mode (push in ``event_only``, polling
    in ``polling_only``, whichever does better in ``hybrid``).
    """

    def __init__(self, registered_at: float) -> None:
        self.registered_at = registered_at
        self.last_success: dict[str, float] = {}
        self.last_failure: float | None = None
        self.consecutive: dict[str, int] = {"push": 0, "poll": 0}
        self.successes = 0
        self.failures = 0
        self.items_pushed = 0
        self.items_polled = 0
        self.polls = 0
        self.error_rate = 0.0
        self._lag_total = 0.0
        self._lag_count = 0

    def succeeded(
        self, path: str, now: float, items: int = 0, lags: tuple[float, ...] = ()
    ) -> None:
        """A ``push`` or ``poll`` call worked and brought ``items`` (with their lags)."""
        self._outcome(path, ok=True)
        self.last_success[path] = now
        self.successes += 1
        if path == "push":
            self.items_pushed += items
        else:
            self.items_polled += items
        self._lag_total += sum(lags)
        self._lag_count += len(lags)

    def failed(self, path: str, now: float) -> None:
        """A ``push`` or ``poll`` call (or a silent timeout of push) failed."""
        self._outcome(path, ok=False)
        self.last_failure = now
        self.failures += 1

    def _outcome(self, path: str, *, ok: bool) -> None:
        if path not in self.consecutive:
            raise ValueError(f"path must be 'push' or 'poll', got {path!r}")
        if path == "poll":
            self.polls += 1
        self.consecutive[path] = 0 if ok else self.consecutive[path] + 1
        self.error_rate += ERROR_RATE_WEIGHT * ((0.0 if ok else 1.0) - self.error_rate)

    def health(
        self,
        *,
        now: float,
        mode: str,
        has_push: bool,
        failure_threshold: int,
        event_timeout: float,
        polling_interval: float,
    ) -> SourceHealth:
        paths = {EVENT_ONLY: ("push",), POLLING_ONLY: ("poll",)}.get(mode, ("push", "poll"))
        consecutive = min(self.consecutive[path] for path in paths)
        seen = [self.last_success[path] for path in paths if path in self.last_success]
        age = now - (max(seen) if seen else self.registered_at)
        expected = event_timeout if mode == EVENT_ONLY else polling_interval
        factors = health_factors(
            mode=mode,
            has_push=has_push,
            consecutive_failures=consecutive,
            failure_threshold=failure_threshold,
            last_success_age=age,
            expected_interval=expected,
            error_rate=self.error_rate,
        )
        return SourceHealth(
            mode=mode,
            score=factors.score,
            last_success=max(self.last_success.values(), default=None),
            last_failure=self.last_failure,
            consecutive_failures=consecutive,
            successes=self.successes,
            failures=self.failures,
            items_pushed=self.items_pushed,
            items_polled=self.items_polled,
            polls=self.polls,
            error_rate=self.error_rate,
            mean_lag=self._lag_total / self._lag_count if self._lag_count else None,
            factors=factors,
        )
