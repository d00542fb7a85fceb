"""How a service's request rate follows what the service does: four strategies, as pure code.

Each strategy is its validated configuration with two pure methods: :meth:`start` gives the
state to begin from at a rate, :meth:`update` takes one :class:`Observation` (one control
period: what the agents' traffic achieved, its latency and error rate, at ``now``) and returns
the next state (its ``rate`` is the new target, requests per second) with the reason. State is
a :class:`RateState` of plain values, so it can be recorded, restored after a restart, and
handed to another strategy (hot swap: the new one starts from the current rate).

Every update is bounded by :class:`Bounds`: the measured capacity and the lowest and highest
rate the coordinator allows.

- :class:`Headroom`: ``capacity * utilisation``. Trusts the load test; a latency above
  ``latency_limit`` scales it down by ``limit / latency`` (at most to ``floor`` of it).
- :class:`Aimd`: additive increase (``increase`` times the capacity per period) while latency
  and errors stay within their limits, multiplicative decrease (``backoff``) when not; no
  increase while the agents use less than half the allowance (app-limited).
- :class:`Gradient`: Netflix concurrency-limits' Gradient2 applied to a rate. ``gradient =
  clamp(tolerance * long / short, 0.5, 1)`` where short is this period's latency and long its
  exponential average over ``long_window`` periods (a plain average for the first ``warmup``);
  ``new = rate * gradient + queue * rate``, smoothed ``rate * (1 - smoothing) + new *
  smoothing``. A long latency more than twice the short one (recovering from prolonged
  overload) is cut by 5 % per period. Three departures, because a rate is not a concurrency
  (a concurrency limit bounds the queue it can build, a rate does not, and Gradient2 alone
  follows a latency that climbs slowly enough, its long average climbing with it: on the
  simulated 4 x 20 ms target it ran 21 % past capacity into a full backlog). Latency above
  ``latency_limit`` (required: the SLO) caps the gradient at ``limit / latency``; errors above
  ``max_error_rate`` count as the steepest gradient (Gradient2 ignores drops; a target that
  sheds load answers fast); and the queue allowance is a share of the rate (a fixed number of
  requests/s is too coarse for a small service and too slow for a large one). ``tolerance``
  (1.5) and ``warmup`` (10) are Gradient2's; ``long_window`` is 20 periods rather than 600
  samples, since one observation already aggregates a whole period.
- :class:`Pid`: a PID controller holding latency at ``latency_target``. Its error is
  ``(target - latency) / target`` clipped to [-1, 1] (errors above the limit count as -1), its
  output is in units of the capacity; the derivative acts on the measurement (no kick when the
  target changes); the output is clamped to the bounds and the integral stops growing while
  the output is at a limit in the direction of the error (anti-windup: it integrates only as
  far as the output can follow), so leaving a limit takes no unwinding. Gains are per second
  of ``now``: with a control period of T seconds one update moves the integral by up to
  ``ki * T`` capacities, so keep ``ki * T`` small (the default 0.05 suits 1 s periods).

The figures each strategy reaches on a simulated queueing target are in
``tests/unit/test_rate_strategies.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from eventcenter.domain.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration: a number of seconds or text like ``"200ms"``."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One control period of a service as the agents' traffic showed it: ``throughput``
    (requests/s completed), ``latency`` (seconds: the latency signal the strategies compare,
    p95 unless configured otherwise), ``error_rate`` (share) at ``at`` (seconds, now)."""

    at: float
    throughput: float
    latency: float
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("at", "throughput", "latency", "error_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"observation {name} must be a number, got {value!r}")
            if not math.isfinite(value) or (name != "at" and value < 0):
                raise ValueError(f"observation {name} must be finite and >= 0, got {value!r}")
        if self.error_rate > 1:
            raise ValueError(f"observation error_rate is a share (0..1), got {self.error_rate}")


@dataclass(frozen=True, slots=True)
class Bounds:
    """The measured ``capacity`` and the ``low`` and ``high`` rate a strategy stays within."""

    capacity: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (self.capacity > 0 and 0 <= self.low <= self.high):
            raise ValueError(
                f"bounds need capacity > 0 and 0 <= low <= high, got {self.capacity},"
                f" {self.low}, {self.high}"
            )

    def clamp(self, rate: float) -> float:
        return min(self.high, max(self.low, rate))


@dataclass(frozen=True, slots=True)
class RateState:
    """A strategy's state: the target ``rate`` decided at ``at``, and what the strategy
    remembers (``memory``: plain floats, e.g. the PID integral or the long latency)."""

    rate: float
    at: float
    memory: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "at": self.at, "memory": dict(self.memory)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RateState:
        return cls(float(values["rate"]), float(values["at"]), dict(values.get("memory", {})))


@dataclass(frozen=True, slots=True)
class Move:
    """An update's result: the next state (``state.rate`` is the target) and why."""

    state: RateState
    reason: str

    @property
    def rate(self) -> float:
        return self.state.rate


class _Strategy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start_share: float = Field(
        0.5, gt=0, le=2, description="share of the capacity a reset strategy starts from"
    )

    def initial_rate(self, bounds: Bounds) -> float:
        """The rate a strategy starts from when it is not handed one (a reset)."""
        return bounds.clamp(bounds.capacity * self.start_share)

    def start(self, rate: float, at: float, bounds: Bounds) -> RateState:
        """The state to begin from at ``rate`` (clamped to the bounds)."""
        return RateState(bounds.clamp(rate), at)


class Headroom(_Strategy):
    """Target ``capacity * utilisation``: the load test decides, feedback only brakes."""

    strategy: Literal["headroom"] = "headroom"
    utilisation: float = Field(0.8, gt=0, le=1, description="share of the capacity to use")
    latency_limit: Seconds | None = Field(
        None, gt=0, description="latency above which the target is scaled down (None: never)"
    )
    floor: float = Field(0.25, gt=0, le=1, description="the most one scale-down takes away")

    def initial_rate(self, bounds: Bounds) -> float:
        return bounds.clamp(bounds.capacity * self.utilisation)

    def update(self, state: RateState, seen: Observation, bounds: Bounds) -> Move:
        target = bounds.capacity * self.utilisation
        limit = self.latency_limit
        if limit is not None and seen.latency > limit:
            factor = max(self.floor, limit / seen.latency)
            rate = bounds.clamp(target * factor)
            why = f"latency {seen.latency:.3g}s over {limit:g}s: {factor:.2f} of the headroom"
        else:
            rate = bounds.clamp(target)
            why = f"{self.utilisation:.0%} of the capacity {bounds.capacity:.4g} req/s"
        return Move(RateState(rate, seen.at), why)


class Aimd(_Strategy):
    """Additive increase while the service keeps up, multiplicative decrease when it does
    not; the rate saws just below the point where latency crosses its limit."""

    strategy: Literal["aimd"] = "aimd"
    latency_limit: Seconds = Field(gt=0, description="latency above which the rate backs off")
    max_error_rate: float = Field(0.01, ge=0, lt=1, description="error share that backs off")
    increase: float = Field(0.01, gt=0, le=1, description="share of the capacity added per period")
    backoff: float = Field(0.95, ge=0.5, lt=1, description="factor applied on overload")

    def update(self, state: RateState, seen: Observation, bounds: Bounds) -> Move:
        if seen.latency > self.latency_limit or seen.error_rate > self.max_error_rate:
            rate = bounds.clamp(state.rate * self.backoff)
            why = (
                f"latency {seen.latency:.3g}s / errors {seen.error_rate:.2%} over the limits:"
                f" x{self.backoff:g}"
            )
        elif seen.throughput < state.rate / 2:
            rate, why = state.rate, "the agents use less than half the allowance: hold"
        else:
            step = self.increase * bounds.capacity
            rate = bounds.clamp(state.rate + step)
            why = f"within the limits: +{step:.3g} req/s"
        return Move(RateState(rate, seen.at), why)


class Gradient(_Strategy):
    """Gradient2 on a rate: grow by a queue allowance while latency holds, shrink by the
    ratio of long to short latency when it climbs past the tolerance."""

    strategy: Literal["gradient"] = "gradient"
    smoothing: float = Field(0.2, gt=0, le=1, description="weight of the new estimate")
    tolerance: float = Field(
        1.5, ge=1, le=10, description="latency growth over the long average that is accepted"
    )
    long_window: int = Field(20, ge=2, le=10_000, description="periods in the long latency average")
    warmup: int = Field(
        10, ge=1, le=1000, description="periods averaged plainly before the long average decays"
    )
    queue: float = Field(0.04, ge=0, le=1, description="share of the rate added as queue allowance")
    max_error_rate: float = Field(0.01, ge=0, lt=1, description="error share that counts as 0.5")
    latency_limit: Seconds = Field(
        gt=0, description="latency above which the gradient is at most limit / latency"
    )

    def update(self, state: RateState, seen: Observation, bounds: Bounds) -> Move:
        memory = dict(state.memory)
        short = max(seen.latency, 1e-9)
        samples = memory.get("samples", 0.0)
        if samples < self.warmup:
            long = (memory.get("long", 0.0) * samples + short) / (samples + 1)
        else:
            factor = 2.0 / (self.long_window + 1)
            long = memory["long"] * (1 - factor) + short * factor
        if long / short > 2:
            long *= 0.95
        memory.update(long=long, samples=samples + 1)
        if seen.throughput < state.rate / 2:
            why = "the agents use less than half the allowance: hold"
            return Move(RateState(state.rate, seen.at, memory), why)
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        if short > self.latency_limit:
            gradient = min(gradient, max(0.5, self.latency_limit / short))
        if seen.error_rate > self.max_error_rate:
            gradient = 0.5
        estimate = state.rate * gradient + self.queue * state.rate
        rate = bounds.clamp(state.rate * (1 - self.smoothing) + estimate * self.smoothing)
        why = f"gradient {gradient:.3f} (long {long:.3g}s, short {short:.3g}s)"
        return Move(RateState(rate, seen.at, memory), why)


class Pid(_Strategy):
    """Hold latency at ``latency_target``: PID on the relative latency error, output in units
    of the capacity, clamped, with conditional integration against windup."""

    strategy: Literal["pid"] = "pid"
    latency_target: Seconds = Field(gt=0, description="the latency to hold (setpoint)")
    kp: float = Field(0.05, ge=0, le=10, description="proportional gain (capacity per unit)")
    ki: float = Field(0.05, ge=0, le=10, description="integral gain (capacity per unit-second)")
    kd: float = Field(0.0, ge=0, le=10, description="derivative gain (capacity per unit/s)")
    max_error_rate: float = Field(0.01, ge=0, lt=1, description="error share that counts as -1")

    def start(self, rate: float, at: float, bounds: Bounds) -> RateState:
        """Bumpless: the integral holds the starting rate, so the output starts there."""
        rate = bounds.clamp(rate)
        return RateState(rate, at, {"integral": rate / bounds.capacity})

    def update(self, state: RateState, seen: Observation, bounds: Bounds) -> Move:
        memory = dict(state.memory)
        integral = memory.get("integral", state.rate / bounds.capacity)
        error = max(-1.0, min(1.0, (self.latency_target - seen.latency) / self.latency_target))
        if seen.error_rate > self.max_error_rate:
            error = -1.0
        dt = seen.at - state.at
        derivative = 0.0
        if dt > 0:
            last = memory.get("latency")
            if last is not None:
                derivative = -(seen.latency - last) / self.latency_target / dt
            candidate = integral + self.ki * error * dt
        else:
            candidate = integral  # no time passed: nothing to integrate
        low, high = bounds.low / bounds.capacity, bounds.high / bounds.capacity
        fixed = self.kp * error + self.kd * derivative
        # anti-windup: integrate only as far as the output can follow, never past a limit in
        # the direction the error pushes (and never back because of it)
        if error > 0:
            integral = min(candidate, max(integral, high - fixed))
        elif error < 0:
            integral = max(candidate, min(integral, low - fixed))
        integral = min(high, max(low, integral))
        saturated = integral != candidate
        output = fixed + integral
        rate = bounds.clamp(output * bounds.capacity)
        memory.update(integral=integral, latency=seen.latency)
        why = (
            f"latency {seen.latency:.3g}s vs target {self.latency_target:g}s: error {error:+.3f}"
            + (" (output at its limit: integral held)" if saturated else "")
        )
        return Move(replace(state, rate=rate, at=seen.at, memory=memory), why)


RateStrategy = Annotated[Headroom | Aimd | Gradient | Pid, Field(discriminator="strategy")]
"""One strategy's configuration, told apart by its ``strategy`` key."""

STRATEGIES = ("headroom", "aimd", "gradient", "pid")
