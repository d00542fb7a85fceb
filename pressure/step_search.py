"""The whole step search as the Locust process runs it, as a state machine of plain values.

The tester hands the Locust process a :class:`SearchSpec` (a JSON file named by the environment
variable :data:`SPEC_ENV`); the locustfile's load shape calls :meth:`StepSearch.tick` once a
second with the time and its own CPU time, and offers what it answers (users, spawn rate) until
it answers None. Each tick may:

- start a step at the rate :func:`~eventcenter.domain.step_plan.next_step` chose (the users
  are sized and paced as :mod:`eventcenter.pressure.step_meter` says);
- after the warm-up and the steady window (plus ``settle`` seconds for answers still on their
  way), measure the step, ask the plan what comes next and append one JSON line to the
  progress file: ``{"event": "step", "step": {...}, "next": {...}, "users": n}``;
- end the search when the plan says done or the next step would not finish within
  ``wall_limit`` seconds of the first tick (the hard limit the tester enforces from outside
  stays a last resort): ``{"event": "finished", "reason": ...}``.

The steps given in ``done`` (a resumed search) are part of the curve the plan sees, so the
search goes on from them; only new steps are written to the progress file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eventcenter.domain.knee import KneeRule, Step
from eventcenter.domain.step_plan import NextStep, StepPlan, next_step
from eventcenter.pressure.step_meter import (
    StepMeter,
    generator_saturated,
    interval_for,
    users_for,
)

#: Environment variable naming the spec file in the Locust process.
SPEC_ENV = "EVENTCENTER_PRESSURE_SPEC"

#: Default users per offered request/second of SLO: see :mod:`~eventcenter.pressure.step_meter`.
HEAD_ROOM = 2.0

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """What the Locust process searches: the target URL, the plan and rule, the steps already
    measured, where to write progress, and how users are sized (``head_room``, ``max_users``)."""

    target: str
    plan: StepPlan
    rule: KneeRule
    progress: str
    done: tuple[Step, ...] = ()
    head_room: float = HEAD_ROOM
    max_users: int = 5000
    wall_limit: float = 600.0
    settle: float = 0.5

    @property
    def host(self) -> str:
        """scheme://host:port of the target (Locust's ``--host``)."""
        parts = urlsplit(self.target)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        """The path (and query) each request asks for."""
        parts = urlsplit(self.target)
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path

    def to_json(self) -> str:
        return json.dumps(
            {
                "target": self.target,
                "plan": self.plan.model_dump(),
                "rule": self.rule.model_dump(),
                "progress": self.progress,
                "done": [step.as_dict() for step in self.done],
                "head_room": self.head_room,
                "max_users": self.max_users,
                "wall_limit": self.wall_limit,
                "settle": self.settle,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SearchSpec:
        values = json.loads(text)
        return cls(
            target=values["target"],
            plan=StepPlan.model_validate(values["plan"]),
            rule=KneeRule.model_validate(values["rule"]),
            progress=values["progress"],
            done=tuple(Step.from_dict(s, i) for i, s in enumerate(values["done"])),
            head_room=values["head_room"],
            max_users=values["max_users"],
            wall_limit=values["wall_limit"],
            settle=values["settle"],
        )


def append_line(path: str) -> Emit:
    """An :data:`Emit` that appends one JSON line to ``path`` and flushes it at once (the
    tester follows the file while the search runs)."""

    def emit(record: dict[str, Any]) -> None:
        with Path(path).open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")

    return emit


@dataclass
class _Running:
    """The step being offered: its rate, users, and when its window opens and closes."""

    rate: float
    users: int
    started: float
    window: tuple[float, float]
    cpu_mark: tuple[float, float]  # (time, cpu seconds) from which saturation is judged
    marked_in_window: bool = False


@dataclass
class StepSearch:
    """See the module docstring. ``epoch`` counts steps started (users restart their schedule
    when it changes); ``meter`` is where the users report their requests."""

    spec: SearchSpec
    emit: Emit
    steps: list[Step] = field(init=False)
    meter: StepMeter = field(default_factory=StepMeter)
    epoch: int = 0
    finished: str | None = None
    _began: float | None = None
    _running: _Running | None = None

    def __post_init__(self) -> None:
        self.steps = list(self.spec.done)

    @property
    def interval(self) -> float:
        """Seconds between two starts of one user at the current step (1 s when idle)."""
        run = self._running
        return 1.0 if run is None else interval_for(run.rate, run.users)

    @property
    def rate(self) -> float | None:
        """The rate offered now (None between steps and once the search is over)."""
        return None if self._running is None else self._running.rate

    @property
    def new_steps(self) -> list[Step]:
        return self.steps[len(self.spec.done) :]

    def tick(self, now: float, cpu: float) -> tuple[int, float] | None:
        """Users and spawn rate to run now, or None once the search is over."""
        if self.finished is not None:
            return None
        if self._began is None:
            self._began = now
            return self._start(self._decide(now), now, cpu)
        run = self._running
        assert run is not None  # a search that is not finished runs a step
        if now > self._began + self.spec.wall_limit:
            self._finish(
                f"time limit ({self.spec.wall_limit:g}s) reached during the step at"
                f" {run.rate:g} req/s, which was not measured"
            )
            return None
        start, end = run.window
        if not run.marked_in_window and now >= start:
            run.cpu_mark, run.marked_in_window = (now, cpu), True
        if now < end + self.spec.settle:
            return run.users, spawn_rate(run.users)
        mark_time, mark_cpu = run.cpu_mark
        cpu_share = (cpu - mark_cpu) / (now - mark_time) if now > mark_time else 0.0
        lag = self.meter.lag_p95(start, end)
        saturated = generator_saturated(
            cpu - mark_cpu, now - mark_time, lag, self.spec.rule.slo_p95
        )
        step = self.meter.measure(run.rate, start, end, now, generator_saturated=saturated)
        self.steps.append(step)
        decision = self._decide(now)
        self.emit(
            {
                "event": "step",
                "step": step.as_dict(),
                "next": {
                    "rate": decision.rate,
                    "phase": decision.phase,
                    "reason": decision.reason,
                },
                "users": run.users,
                "cpu": round(cpu_share, 3),
                "lag_p95": round(lag, 4),
            }
        )
        return self._start(decision, now, cpu)

    def _decide(self, now: float) -> NextStep:
        """The plan's next step, or done when it would not finish within the wall limit."""
        decision = next_step(self.spec.plan, self.spec.rule, self.steps)
        if decision.done:
            return decision
        assert self._began is not None
        needs = self.spec.plan.step_seconds + self.spec.settle + 1.0  # a tick late at most
        left = self._began + self.spec.wall_limit - now
        if needs > left:
            return NextStep(
                None,
                "done",
                f"time limit: another step takes about {needs:.0f}s, {max(left, 0):.0f}s"
                f" of the {self.spec.wall_limit:.0f}s are left",
            )
        return decision

    def _start(self, decision: NextStep, now: float, cpu: float) -> tuple[int, float] | None:
        if decision.done or decision.rate is None:
            self._finish(decision.reason)
            return None
        rule, plan = self.spec.rule, self.spec.plan
        users = users_for(decision.rate, rule.slo_p95, self.spec.head_room, self.spec.max_users)
        window = (now + plan.warmup, now + plan.warmup + plan.hold)
        self._running = _Running(decision.rate, users, now, window, (now, cpu))
        self.epoch += 1
        self.meter.reset()
        return users, spawn_rate(users)

    def _finish(self, reason: str) -> None:
        self.finished = reason
        self._running = None
        self.emit({"event": "finished", "reason": reason, "steps": len(self.new_steps)})


def spawn_rate(users: int) -> float:
    """Users started per second: all of a step's users within about a tenth of a second."""
    return max(100.0, users * 10.0)
