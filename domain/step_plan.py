"""The step plan of an open-model load test: which rate to offer next, given the steps so far.

The plan is a pure function of the curve measured so far (:func:`next_step`), so a tester that
is stopped and restarted (or a test replaying a recorded curve) asks it again and gets the
same answer. It searches in three moves:

1. **ramp**: offer ``start_rate``, then ``growth`` times the highest rate so far while every
   rate is sustainable (at most ``max_rate``). If the very first rate fails, ramp *down* by the
   same factor until one is sustainable (not below ``min_rate``).
2. **repeat / confirm**: every rate runs ``repeats`` times; a rate whose runs so far say "not
   sustainable" runs up to ``confirm`` more times while more runs could still turn the majority
   (one noisy run must not end the search early).
3. **refine**: once a sustainable rate G lies below the lowest failing rate F, offer the
   midpoint of the bracket, until ``F - G <= resolution * G``.

It stops when the bracket is narrow enough, when the lowest failing rate failed because the
generator could not offer it (refining would measure the generator, not the target), when
``max_rate`` was sustainable, when even ``min_rate`` failed, or when the budget of steps or of
seconds (``max_duration``, counting each step's warm-up and hold) is spent. The answer is then
:func:`~eventcenter.domain.knee.find_knee` over the same steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventcenter.domain.knee import KneeRule, RateVerdict, Seconds, Step, judge_curve, rate_key

Phase = Literal["ramp", "repeat", "confirm", "refine", "done"]


class StepPlan(BaseModel):
    """How the search moves and when it stops. Rates are requests per second."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_rate: float = Field(10.0, gt=0, description="the first step's offered rate")
    growth: float = Field(1.5, gt=1, le=10, description="factor between two ramp steps")
    max_rate: float = Field(10_000.0, gt=0, description="the highest rate ever offered")
    min_rate: float = Field(1.0, gt=0, description="the lowest rate a ramp down offers")
    resolution: float = Field(
        0.05, gt=0, lt=1, description="refining stops when the bracket is this share of its base"
    )
    repeats: int = Field(1, ge=1, le=10, description="runs of every rate")
    confirm: int = Field(0, ge=0, le=10, description="extra runs a failing rate may get")
    warmup: Seconds = Field(2.0, ge=0, description="seconds at a step's rate before measuring")
    hold: Seconds = Field(10.0, gt=0, description="seconds a step is measured over")
    max_steps: int = Field(40, ge=1, le=1000, description="steps in one search at most")
    max_duration: Seconds = Field(600.0, gt=0, description="seconds one search may take")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError(
                f"rates must satisfy min_rate <= start_rate <= max_rate, got {self.min_rate:g},"
                f" {self.start_rate:g}, {self.max_rate:g}"
            )
        if self.warmup + self.hold > self.max_duration:
            raise ValueError(
                f"max_duration ({self.max_duration:g}s) leaves no room for one step"
                f" (warmup {self.warmup:g}s + hold {self.hold:g}s)"
            )
        return self

    @property
    def step_seconds(self) -> float:
        """Seconds one step takes (warm-up and hold)."""
        return self.warmup + self.hold


@dataclass(frozen=True, slots=True)
class NextStep:
    """What to do next: offer ``rate`` (None once ``phase`` is ``done``), and why."""

    rate: float | None
    phase: Phase
    reason: str

    @property
    def done(self) -> bool:
        return self.phase == "done"


def next_step(plan: StepPlan, rule: KneeRule, steps: Sequence[Step]) -> NextStep:
    """The next rate to offer after ``steps`` (in the order they ran), or why the search is
    over. Raises :class:`~eventcenter.domain.errors.InvalidCurve` for an impossible step."""
    if not steps:
        return NextStep(plan.start_rate, "ramp", f"start at {plan.start_rate:g} req/s")
    spent = _budget_spent(plan, steps)
    if spent:
        return NextStep(None, "done", spent)
    judged = judge_curve(steps, rule)
    last = next(r for r in judged.rates if r.offered == rate_key(steps[-1].offered))
    again = _run_again(plan, last)
    if again is not None:
        return again
    limit, knee = judged.limit(), judged.knee()
    if limit is None:
        return _ramp_up(plan, judged.rates[-1])
    if limit.cause == "generator":
        return NextStep(
            None,
            "done",
            f"the generator could not offer {limit.offered:g} req/s while the target kept up:"
            " refining would measure the generator",
        )
    if knee is None:
        return _ramp_down(plan, limit)
    width = limit.offered - knee.offered
    if width <= plan.resolution * knee.offered:
        return NextStep(
            None,
            "done",
            f"bracket [{knee.offered:g}, {limit.offered:g}) req/s is within the resolution"
            f" ({plan.resolution:.0%})",
        )
    middle = (knee.offered + limit.offered) / 2
    return NextStep(
        middle,
        "refine",
        f"bisect [{knee.offered:g}, {limit.offered:g}) req/s ({limit.offered:g} failed:"
        f" {limit.cause})",
    )


def _budget_spent(plan: StepPlan, steps: Sequence[Step]) -> str | None:
    if len(steps) >= plan.max_steps:
        return f"step budget spent ({plan.max_steps} steps)"
    used = sum(plan.warmup + step.duration for step in steps)
    if used + plan.step_seconds > plan.max_duration:
        return (
            f"time budget spent: {used:.0f}s used, another step takes {plan.step_seconds:g}s"
            f" of the {plan.max_duration:g}s allowed"
        )
    return None


def _run_again(plan: StepPlan, rate: RateVerdict) -> NextStep | None:
    """Repeat the last rate until it has ``repeats`` runs; confirm a failing one while more
    runs could still give it a majority."""
    runs = len(rate.runs)
    if runs < plan.repeats:
        return NextStep(rate.offered, "repeat", f"run {runs + 1} of {plan.repeats}")
    most = plan.repeats + plan.confirm
    if rate.sustainable or runs >= most:
        return None
    left = most - runs
    if 2 * (rate.good_runs + left) <= most:
        return None  # even if every run left passed, there would be no majority
    return NextStep(
        rate.offered,
        "confirm",
        f"{rate.offered:g} req/s failed ({rate.cause}) in {runs - rate.good_runs} of {runs}"
        " run(s): run it again before it counts",
    )


def _ramp_up(plan: StepPlan, top: RateVerdict) -> NextStep:
    if top.offered >= rate_key(plan.max_rate):
        return NextStep(
            None, "done", f"every rate up to max_rate ({plan.max_rate:g} req/s) was sustainable"
        )
    rate = min(top.offered * plan.growth, plan.max_rate)
    return NextStep(rate, "ramp", f"{top.offered:g} req/s was sustainable: offer {rate:g}")


def _ramp_down(plan: StepPlan, lowest: RateVerdict) -> NextStep:
    if lowest.offered <= rate_key(plan.min_rate):
        return NextStep(
            None,
            "done",
            f"even min_rate ({plan.min_rate:g} req/s) was not sustainable ({lowest.cause})",
        )
    rate = max(lowest.offered / plan.growth, plan.min_rate)
    return NextStep(
        rate, "ramp", f"{lowest.offered:g} req/s failed ({lowest.cause}) first: offer {rate:g}"
    )
