"""The AdjustmentCoordinator: from a service's capacity and behaviour to each agent's request
frequency and polling interval.

One :class:`ServiceControl` per service holds its strategy (:mod:`rate_strategies`, chosen per
service in :class:`TuningConfig`), the strategy's state, the measured capacity, the agents and
what was last published. The coordinator:

- **starts** a service when its capacity is measured (:meth:`AdjustmentCoordinator.
  capacity_measured`): a new measurement is a new plant, so the strategy starts over from its
  initial rate within the new bounds;
- **follows** it, one control period at a time (:meth:`~AdjustmentCoordinator.observe`); a
  latency spike is an observation like any other: the strategy says how far to come down;
- **reduces** it when healing asks (:meth:`~AdjustmentCoordinator.reduce`: a source the service
  drives is rate limited): the strategy starts again from the current rate divided by a factor,
  and the rate *holds* at or below that until the service is observed recovered (its quiet
  settle period passed) or a new capacity is measured, so the next observation moves within
  the healing's limit instead of undoing it;
- **swaps** a strategy while running (:meth:`~AdjustmentCoordinator.swap`,
  :meth:`~AdjustmentCoordinator.reconfigure`), either carrying the current rate over (the new
  strategy starts where the old one was: no jump, the PID's integral is preset) or resetting
  explicitly to the new strategy's initial rate;
- **pauses** a service's agents (an idle system) and resumes them where they were;
- **splits** the target across the agents by weight and converts each share to a request
  frequency (requests/s) and a polling interval (seconds between polls, the sources' knob:
  ``requests_per_poll / rate``, within ``[min_interval, max_interval]``).

Every answer is an :class:`Adjustment` with a per-service ``version`` that grows only when the
published frequencies change: a move smaller than ``deadband`` (a share of the last published
target) is not published, so agents are not sent a new figure every period, and a dispatcher
can tell a repeated send by its version. Everything is pure: times are the callers' ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from eventcenter.domain.errors import TuningRefused
from eventcenter.domain.rate_strategies import (
    Bounds,
    Headroom,
    Observation,
    RateState,
    RateStrategy,
    Seconds,
)

_STRATEGY: TypeAdapter[RateStrategy] = TypeAdapter(RateStrategy)


class Agent(BaseModel):
    """An agent that sends a service's requests; ``weight`` is its share of the target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    weight: float = Field(1.0, gt=0, le=1e6)


class TuningConfig(BaseModel):
    """Which strategy tunes which service, and the limits every target keeps to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: RateStrategy = Field(
        default_factory=Headroom, description="the strategy of every service not named below"
    )
    services: dict[str, RateStrategy] = Field(
        default_factory=dict, description="a strategy per service name"
    )
    min_rate: float = Field(0.1, ge=0, description="requests/s a running service keeps at least")
    ceiling: float = Field(
        1.25, ge=1, le=10, description="share of the measured capacity a target never exceeds"
    )
    deadband: float = Field(
        0.02, ge=0, lt=1, description="share of the published target a move must exceed"
    )
    requests_per_poll: float = Field(1.0, gt=0, description="requests one poll of a source makes")
    min_interval: Seconds = Field(0.01, gt=0, description="shortest polling interval (s)")
    max_interval: Seconds = Field(3600.0, gt=0, description="longest polling interval (s)")

    @model_validator(mode="after")
    def _intervals(self) -> Self:
        if self.min_interval > self.max_interval:
            raise ValueError(
                f"min_interval ({self.min_interval:g}s) must not exceed max_interval"
                f" ({self.max_interval:g}s)"
            )
        return self

    def strategy_for(self, service: str) -> RateStrategy:
        return self.services.get(service, self.strategy)

    def bounds(self, capacity: float) -> Bounds:
        """The rates a service of this capacity is tuned within (``min_rate`` never lifts a
        target above the capacity itself)."""
        return Bounds(capacity, min(self.min_rate, capacity), capacity * self.ceiling)


@dataclass(frozen=True, slots=True)
class AgentFrequency:
    """What one agent is told: ``rate`` requests/s and the polling ``interval`` in seconds
    (None when paused: the agent stops polling)."""

    agent: str
    weight: float
    rate: float
    interval: float | None


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A service's published frequencies. ``changed`` is False when nothing new was published
    (the move stayed within the deadband, or the service is paused); ``version`` then stays."""

    service: str
    version: int
    at: float
    strategy: str
    target: float
    capacity: float
    paused: bool
    agents: tuple[AgentFrequency, ...]
    reason: str
    changed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "version": self.version,
            "at": self.at,
            "strategy": self.strategy,
            "target": self.target,
            "capacity": self.capacity,
            "paused": self.paused,
            "agents": [
                {"agent": a.agent, "weight": a.weight, "rate": a.rate, "interval": a.interval}
                for a in self.agents
            ],
            "reason": self.reason,
        }


def split_by_weight(target: float, agents: Sequence[Agent]) -> list[float]:
    """Each agent's share of ``target``, proportional to its weight (they sum to ``target``)."""
    total = sum(agent.weight for agent in agents)
    return [target * agent.weight / total for agent in agents]


def polling_interval(
    rate: float, requests_per_poll: float, min_interval: float, max_interval: float
) -> float | None:
    """Seconds between polls for ``rate`` requests/s; None for no rate (stop polling)."""
    if rate <= 0:
        return None
    return min(max_interval, max(min_interval, requests_per_poll / rate))


def polling_load_factor(config: TuningConfig, adjustment: Adjustment, paused: float = 1e6) -> float:
    """How many times slower than configured a service's data sources should poll: 1 at the
    rate its strategy starts from for the measured capacity (the normal state), ``reference /
    target`` below it (a spike that quarters the rate polls four times less often), never
    faster than configured, and ``paused`` (the sources' longest interval) while paused."""
    if adjustment.paused or adjustment.target <= 0:
        return paused
    strategy = config.strategy_for(adjustment.service)
    reference = strategy.initial_rate(config.bounds(adjustment.capacity))
    return max(1.0, reference / adjustment.target)


class ServiceControl:
    """Everything the coordinator holds about one service; plain values (:meth:`as_dict`), so
    it can be recorded and restored after a restart."""

    def __init__(
        self,
        service: str,
        strategy: RateStrategy,
        state: RateState,
        capacity: float,
        agents: Sequence[Agent],
        *,
        version: int = 0,
        published: float | None = None,
        paused: bool = False,
        hold: float | None = None,
    ) -> None:
        self.service = service
        self.strategy = strategy
        self.state = state
        self.capacity = capacity
        self.agents = tuple(agents)
        self.version = version
        self.published = published
        self.paused = paused
        #: The highest rate while a reduction holds (None: no reduction holds).
        self.hold = hold

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "strategy": self.strategy.model_dump(),
            "state": self.state.as_dict(),
            "capacity": self.capacity,
            "agents": [agent.model_dump() for agent in self.agents],
            "version": self.version,
            "published": self.published,
            "paused": self.paused,
            "hold": self.hold,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ServiceControl:
        return cls(
            values["service"],
            _STRATEGY.validate_python(values["strategy"]),
            RateState.from_dict(values["state"]),
            float(values["capacity"]),
            [Agent.model_validate(agent) for agent in values["agents"]],
            version=int(values["version"]),
            published=values["published"],
            paused=bool(values["paused"]),
            hold=values.get("hold"),  # recorded before reductions existed: none holds
        )


class AdjustmentCoordinator:
    """Tunes every service it was given a capacity for; see the module docstring."""

    def __init__(self, config: TuningConfig, controls: Iterable[ServiceControl] = ()) -> None:
        self._config = config
        self._controls = {control.service: control for control in controls}

    @property
    def config(self) -> TuningConfig:
        return self._config

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted(self._controls))

    def control(self, service: str) -> ServiceControl:
        """The service's control; :class:`TuningRefused` if its capacity was never given."""
        control = self._controls.get(service)
        if control is None:
            raise TuningRefused(service, "no capacity is known for it yet: measure it first")
        return control

    # what the workflow reports -----------------------------------------------------------------

    def capacity_measured(
        self,
        service: str,
        capacity: float,
        *,
        at: float,
        agents: Sequence[Agent] | None = None,
    ) -> Adjustment:
        """Start (or start over) tuning ``service`` at its measured ``capacity`` (requests/s),
        with these agents (the ones it had when None)."""
        if not capacity > 0:
            raise TuningRefused(service, f"a capacity must be a positive rate, got {capacity}")
        control = self._controls.get(service)
        chosen = tuple(agents) if agents is not None else control.agents if control else ()
        _check_agents(service, chosen)
        strategy = self._config.strategy_for(service)
        bounds = self._config.bounds(capacity)
        state = strategy.start(strategy.initial_rate(bounds), at, bounds)
        if control is None:
            control = ServiceControl(service, strategy, state, capacity, chosen)
            self._controls[service] = control
        else:
            control.strategy, control.state, control.capacity = strategy, state, capacity
            control.agents, control.paused, control.hold = chosen, False, None
        why = f"capacity {capacity:.4g} req/s measured: {strategy.strategy} starts over"
        return self._publish(control, at, why, force=True)

    def observe(self, service: str, seen: Observation, *, recovered: bool = False) -> Adjustment:
        """One control period of ``service``: the strategy moves, the result is published if it
        moved past the deadband. A paused service ignores observations (no traffic, no
        evidence). While a reduction holds, the strategy moves at or below the held rate;
        ``recovered`` (the service was quiet for its settle period) lifts the hold first."""
        control = self.control(service)
        lifted = ""
        if recovered and control.hold is not None:
            lifted = f"recovered: the hold at {control.hold:.4g} req/s is lifted; "
            control.hold = None
        if control.paused:
            return self._publish(control, seen.at, f"{lifted}paused: observation ignored")
        move = control.strategy.update(control.state, seen, self._bounds(control))
        control.state = move.state
        reason = lifted + move.reason
        if control.hold is not None and move.rate >= control.hold:
            reason += f" (held at {control.hold:.4g} req/s since a reduction)"
        return self._publish(control, seen.at, reason)

    def reduce(self, service: str, factor: float, *, at: float, reason: str) -> Adjustment:
        """Lower ``service`` to its current rate divided by ``factor`` (> 1), within the bounds:
        its strategy starts again from there and holds at or below it (see :meth:`observe`).
        A paused service stays paused and resumes at the lowered rate."""
        control = self.control(service)
        if not factor > 1:
            raise TuningRefused(service, f"a reduction factor must be above 1, got {factor}")
        rate = self._config.bounds(control.capacity).clamp(control.state.rate / factor)
        control.hold = rate
        control.state = control.strategy.start(rate, at, self._bounds(control))
        why = f"reduced {factor:g}x to {rate:.4g} req/s, held until recovered: {reason}"
        if control.paused:
            why = f"paused; resumes at the reduced rate: {why}"
        return self._publish(control, at, why)

    def set_agents(self, service: str, agents: Sequence[Agent], *, at: float) -> Adjustment:
        """Split the same target across another set of agents."""
        control = self.control(service)
        _check_agents(service, agents)
        control.agents = tuple(agents)
        return self._publish(control, at, "agents changed", force=True)

    def pause(self, service: str, *, at: float, reason: str) -> Adjustment:
        """Stop the service's agents (rate 0, no polling) and keep the strategy where it is."""
        control = self.control(service)
        if control.paused:
            return self._publish(control, at, f"already paused ({reason})")
        control.paused = True
        return self._publish(control, at, f"paused: {reason}", force=True)

    def resume(self, service: str, *, at: float, reason: str) -> Adjustment:
        """Send the agents the rate they had before the pause."""
        control = self.control(service)
        if not control.paused:
            return self._publish(control, at, f"not paused ({reason})")
        control.paused = False
        control.state = RateState(control.state.rate, at, dict(control.state.memory))
        return self._publish(control, at, f"resumed: {reason}", force=True)

    # changing strategies -----------------------------------------------------------------------

    def swap(self, service: str, strategy: RateStrategy, *, at: float, carry: bool) -> Adjustment:
        """Tune ``service`` with ``strategy`` from now on. ``carry``: start from the current
        rate (no jump); otherwise reset to the new strategy's initial rate."""
        control = self.control(service)
        bounds = self._bounds(control)
        rate = control.state.rate if carry else strategy.initial_rate(bounds)
        previous = control.strategy.strategy
        control.strategy = strategy
        control.state = strategy.start(rate, at, bounds)
        how = "carried over" if carry else "reset"
        return self._publish(
            control, at, f"strategy {previous} -> {strategy.strategy} ({how})", force=not carry
        )

    def reconfigure(self, config: TuningConfig, *, at: float, carry: bool) -> list[Adjustment]:
        """Apply a new configuration: services whose strategy changed are swapped (``carry`` as
        in :meth:`swap`), every target is brought within the new bounds. Returns what changed."""
        self._config = config
        changed: list[Adjustment] = []
        for service in self.services:
            control = self._controls[service]
            wanted = config.strategy_for(service)
            if wanted != control.strategy:
                adjustment = self.swap(service, wanted, at=at, carry=carry)
            else:
                bounds = self._bounds(control)
                state = control.state
                control.state = RateState(bounds.clamp(state.rate), state.at, dict(state.memory))
                adjustment = self._publish(control, at, "configuration changed")
            if adjustment.changed:
                changed.append(adjustment)
        return changed

    # publishing -------------------------------------------------------------------------------

    def _bounds(self, control: ServiceControl) -> Bounds:
        """The service's bounds, with a reduction's hold as their top while it holds."""
        bounds = self._config.bounds(control.capacity)
        if control.hold is None:
            return bounds
        high = min(bounds.high, control.hold)
        return Bounds(bounds.capacity, min(bounds.low, high), high)

    def _publish(
        self, control: ServiceControl, at: float, reason: str, *, force: bool = False
    ) -> Adjustment:
        target = 0.0 if control.paused else control.state.rate
        last = control.published
        changed = force or last is None or abs(target - last) > self._config.deadband * last
        if changed:
            control.version += 1
            control.published = target
        elif not control.paused:
            reason = f"{reason} (within the deadband: {last:.4g} req/s kept)"
        return self._adjustment(control, at, reason, changed)

    def _adjustment(
        self, control: ServiceControl, at: float, reason: str, changed: bool
    ) -> Adjustment:
        config = self._config
        target = control.published or 0.0
        shares = split_by_weight(target, control.agents)
        agents = tuple(
            AgentFrequency(
                agent.name,
                agent.weight,
                share,
                polling_interval(
                    share, config.requests_per_poll, config.min_interval, config.max_interval
                ),
            )
            for agent, share in zip(control.agents, shares, strict=True)
        )
        return Adjustment(
            service=control.service,
            version=control.version,
            at=at,
            strategy=control.strategy.strategy,
            target=target,
            capacity=control.capacity,
            paused=control.paused,
            agents=agents,
            reason=reason,
            changed=changed,
        )


def _check_agents(service: str, agents: Sequence[Agent]) -> None:
    if not agents:
        raise TuningRefused(service, "it has no agent to send a frequency to")
    names = [agent.name for agent in agents]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TuningRefused(service, f"agents named more than once: {', '.join(repeated)}")
