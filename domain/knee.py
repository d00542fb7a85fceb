"""The knee rule of an open-model step search: from a measured curve to the maximum sustainable
throughput, with why each step counted or not.

An open-model load test offers a fixed request rate per step (new requests do not wait for
answers), holds it for a steady window and measures what came back (:class:`Step`). Each step
is judged on its own (:func:`judge_step`):

- **sustainable**: p95 at most the SLO, error rate at most ``max_error_rate`` and achieved at
  least ``min_ratio`` (0.95) of offered;
- otherwise it names the first cause that applies:

  ``errors``     the target answered too many requests with failures;
  ``latency``    p95 above the SLO;
  ``generator``  achieved fell short of offered while latency and errors stayed within their
                 limits (or the step says the load generator was saturated). In an open model
                 a target that cannot keep up queues (latency) or fails (errors) what it gets;
                 requests that neither queued nor failed were never sent: the generator could
                 not offer the rate, and the step says nothing about the target;
  ``shortfall``  achieved fell short, but another step of the curve achieved enough to show
                 the generator can offer this rate: the target fell short (noise near the
                 knee, or a target that slows without queueing); and, with
                 ``latency_growth`` set, for a generator whose users wait for answers
                 (Locust's users do): a short step whose p95 grew past ``latency_growth``
                 times the p95 of the curve's lowest rate is charged to the target, whose
                 slower answers held the users back. Set it to the head-room the tester sized
                 its users with; left unset, such a step is the generator's (the answer is then
                 a lower bound rather than a capacity: never more than the target can take).

Runs of one rate (repeats, confirmations) are judged together (:class:`RateVerdict`): a rate is
sustainable when more than half its runs are, so one noisy run neither makes nor breaks it.

The knee is the highest sustainable rate below the lowest rate that is not. Sustainable rates
above that failing rate are listed as ignored (noise or a warm cache), never taken as the
capacity. :func:`find_knee` answers with a :class:`Knee` whose ``verdict`` is one of

- ``capacity``: the knee and the failing rate above it bracket the capacity;
- ``generator_bound``: the lowest failing rate failed because the generator could not offer it:
  the target's capacity is at least what it served, and that figure is never reported as its
  capacity (a faster generator is needed to find it);
- ``above_range``: no rate failed: the capacity is at least the highest rate tried;
- ``below_range``: the lowest rate tried already failed: the capacity is below it.

Latencies are seconds, rates requests per second, error rates shares (0.01 is 1 %).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from eventcenter.domain.durations import parse_duration
from eventcenter.domain.errors import InvalidCurve

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration: a number of seconds or text like ``"200ms"``, ``"10s"``."""

Cause = Literal["sustainable", "errors", "latency", "shortfall", "generator"]
Verdict = Literal["capacity", "generator_bound", "above_range", "below_range"]

#: Target-side causes in the order they are named when several apply.
TARGET_CAUSES: tuple[Cause, ...] = ("errors", "latency", "shortfall")


def rate_key(rate: float) -> float:
    """The rate as runs of one step are grouped by (offered rates are planned, not measured)."""
    return round(rate, 6)


class KneeRule(BaseModel):
    """When a step is sustainable. ``slo_p95`` has no default: it is the service's promise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slo_p95: Seconds = Field(gt=0, description="p95 latency a sustainable step stays within (s)")
    max_error_rate: float = Field(
        0.01, ge=0, lt=1, description="share of failed requests a sustainable step stays within"
    )
    min_ratio: float = Field(
        0.95, gt=0, le=1, description="achieved/offered a sustainable step reaches at least"
    )
    latency_growth: float | None = Field(
        None,
        gt=1,
        description="a short step whose p95 grew past this many times the lowest rate's p95"
        " is the target's shortfall (None: every short step within the limits is the"
        " generator's)",
    )


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a load test: what was offered and what came back over its steady window.

    ``achieved`` counts every completed request (failed ones too; the error rate judges those).
    ``generator_saturated`` is set by a tester that knows its generator ran out of CPU during
    the step: then a failing step is charged to the generator, not to the target.
    """

    offered: float
    achieved: float
    p50: float
    p95: float
    p99: float
    error_rate: float
    duration: float
    generator_saturated: bool = False

    def check(self, index: int | None = None) -> None:
        """Raise :class:`InvalidCurve` naming the first figure that cannot be true."""
        for name in ("offered", "achieved", "p50", "p95", "p99", "error_rate", "duration"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidCurve(index, name, f"must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InvalidCurve(index, name, f"must be a finite number >= 0, got {value!r}")
        if self.offered <= 0:
            raise InvalidCurve(index, "offered", "a step offers a positive rate")
        if self.duration <= 0:
            raise InvalidCurve(index, "duration", "a step lasts a positive number of seconds")
        if not self.p50 <= self.p95 <= self.p99:
            raise InvalidCurve(
                index,
                "p95",
                f"percentiles must not decrease: p50 {self.p50}, p95 {self.p95}, p99 {self.p99}",
            )
        if self.error_rate > 1:
            raise InvalidCurve(index, "error_rate", f"is a share (0..1), got {self.error_rate}")

    @property
    def ratio(self) -> float:
        return self.achieved / self.offered

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], index: int | None = None) -> Step:
        """A step from its :meth:`as_dict` form; :class:`InvalidCurve` if it is not one."""
        known = {
            "offered",
            "achieved",
            "p50",
            "p95",
            "p99",
            "error_rate",
            "duration",
            "generator_saturated",
        }
        for name in values:
            if name not in known:
                raise InvalidCurve(index, name, "unknown field")
        try:
            step = cls(**values)
        except TypeError as error:
            raise InvalidCurve(index, "?", f"missing a field ({error})") from None
        step.check(index)
        return step


def check_curve(steps: Sequence[Step]) -> None:
    """Raise :class:`InvalidCurve` for an empty curve or the first step that cannot be true."""
    if not steps:
        raise InvalidCurve(None, "steps", "a curve needs at least one step")
    for index, step in enumerate(steps):
        step.check(index)


@dataclass(frozen=True, slots=True)
class StepVerdict:
    """How one step was judged, and why (one sentence per check that decided it)."""

    index: int
    offered: float
    achieved: float
    cause: Cause
    reasons: tuple[str, ...]

    @property
    def sustainable(self) -> bool:
        return self.cause == "sustainable"


def judge_step(
    step: Step, rule: KneeRule, baseline_p95: float, index: int = 0, proven: float = 0.0
) -> StepVerdict:
    """Judge one step against the rule; ``baseline_p95`` is the p95 at the curve's lowest rate
    (the target unloaded), against which latency growth is measured; ``proven`` the most any
    step of the curve achieved (the generator sent at least that much)."""
    errors = step.error_rate > rule.max_error_rate
    slow = step.p95 > rule.slo_p95
    short = step.ratio < rule.min_ratio
    reasons: list[str] = []
    if errors:
        reasons.append(f"error rate {step.error_rate:.2%} above {rule.max_error_rate:.2%}")
    if slow:
        reasons.append(f"p95 {_ms(step.p95)} above the SLO {_ms(rule.slo_p95)}")
    if short:
        reasons.append(
            f"achieved {step.achieved:.4g} of {step.offered:.4g} req/s offered"
            f" ({step.ratio:.1%} < {rule.min_ratio:.0%})"
        )
    if not reasons:
        why = (
            f"p95 {_ms(step.p95)} within the SLO {_ms(rule.slo_p95)}, error rate"
            f" {step.error_rate:.2%}, achieved {step.ratio:.1%} of offered"
        )
        return StepVerdict(index, step.offered, step.achieved, "sustainable", (why,))
    cause: Cause
    if step.generator_saturated:
        cause = "generator"
        reasons.append("the load generator reported itself saturated: the step says nothing")
    elif errors:
        cause = "errors"
    elif slow:
        cause = "latency"
    elif proven >= step.offered * rule.min_ratio:
        cause = "shortfall"
        reasons.append(
            f"another step achieved {proven:.4g} req/s, so the generator can offer this rate:"
            " the target fell short"
        )
    elif rule.latency_growth is not None and step.p95 > rule.latency_growth * baseline_p95:
        cause = "shortfall"
        reasons.append(
            f"p95 grew to {_ms(step.p95)}, past {rule.latency_growth:g}x the lowest rate's"
            f" {_ms(baseline_p95)}: the target's slower answers held the users back"
        )
    else:
        cause = "generator"
        reasons.append(
            "latency and errors stayed within their limits: the generator could not offer the rate"
        )
    return StepVerdict(index, step.offered, step.achieved, cause, tuple(reasons))


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """Every run of one offered rate, judged together: sustainable when more than half its runs
    are. ``cause`` is ``generator`` when every failing run was the generator's, else the most
    common target-side cause of its failing runs. Figures are means over the runs; ``spread``
    is the range of the achieved rates (what repeats say about noise)."""

    offered: float
    runs: tuple[StepVerdict, ...]
    sustainable: bool
    cause: Cause
    achieved: float
    p50: float
    p95: float
    p99: float
    error_rate: float
    spread: float

    @property
    def good_runs(self) -> int:
        return sum(1 for run in self.runs if run.sustainable)


@dataclass(frozen=True, slots=True)
class JudgedCurve:
    """A curve judged step by step (input order) and rate by rate (ascending offered rate)."""

    steps: tuple[StepVerdict, ...]
    rates: tuple[RateVerdict, ...]
    baseline_p95: float

    def limit(self) -> RateVerdict | None:
        """The lowest rate that is not sustainable (None: every rate was)."""
        return next((rate for rate in self.rates if not rate.sustainable), None)

    def knee(self) -> RateVerdict | None:
        """The highest sustainable rate below :meth:`limit` (None: there is none)."""
        limit = self.limit()
        good = [
            rate
            for rate in self.rates
            if rate.sustainable and (limit is None or rate.offered < limit.offered)
        ]
        return good[-1] if good else None

    def ignored(self) -> tuple[RateVerdict, ...]:
        """Sustainable rates above the lowest failing one: not evidence of capacity."""
        limit = self.limit()
        if limit is None:
            return ()
        return tuple(r for r in self.rates if r.sustainable and r.offered > limit.offered)


def judge_curve(steps: Sequence[Step], rule: KneeRule) -> JudgedCurve:
    """Judge every step and every rate of a curve (see the module docstring)."""
    check_curve(steps)
    lowest = min(rate_key(step.offered) for step in steps)
    baseline = min(step.p95 for step in steps if rate_key(step.offered) == lowest)
    proven = max(step.achieved for step in steps)
    verdicts = tuple(judge_step(step, rule, baseline, i, proven) for i, step in enumerate(steps))
    groups: dict[float, list[int]] = {}
    for i, step in enumerate(steps):
        groups.setdefault(rate_key(step.offered), []).append(i)
    rates = tuple(
        _judge_rate(key, [steps[i] for i in indexes], [verdicts[i] for i in indexes])
        for key, indexes in sorted(groups.items())
    )
    return JudgedCurve(verdicts, rates, baseline)


def _judge_rate(key: float, steps: list[Step], runs: list[StepVerdict]) -> RateVerdict:
    good = sum(1 for run in runs if run.sustainable)
    sustainable = 2 * good > len(runs)
    failing = [run.cause for run in runs if not run.sustainable]
    cause: Cause = "sustainable"
    if not sustainable:
        target = [c for c in failing if c != "generator"]
        if not target:
            cause = "generator"
        else:
            counts: Counter[Cause] = Counter(target)
            cause = max(TARGET_CAUSES, key=lambda c: (counts[c], -TARGET_CAUSES.index(c)))
    n = len(steps)
    achieved = [s.achieved for s in steps]
    return RateVerdict(
        offered=key,
        runs=tuple(runs),
        sustainable=sustainable,
        cause=cause,
        achieved=sum(achieved) / n,
        p50=sum(s.p50 for s in steps) / n,
        p95=sum(s.p95 for s in steps) / n,
        p99=sum(s.p99 for s in steps) / n,
        error_rate=sum(s.error_rate for s in steps) / n,
        spread=max(achieved) - min(achieved),
    )


@dataclass(frozen=True, slots=True)
class Knee:
    """The answer of a step search (see the module docstring for the verdicts).

    ``max_rps`` is the capacity for ``capacity``, the lower bound for ``generator_bound`` and
    ``above_range``, 0 for ``below_range``. The capacity lies in ``[lower, upper]`` (``upper``
    None: not bounded above). The uncertainty: ``step_size`` (the width of the last bracket,
    offered rates), ``repeats`` (runs at the reference rate) and ``spread`` (the range of
    their achieved rates). The latency and error figures are the reference rate's: the knee,
    or for ``below_range`` the lowest rate. ``steps`` says why each step counted or not, in
    the curve's order; ``ignored`` lists sustainable rates above a failing one.
    """

    verdict: Verdict
    max_rps: float
    lower: float
    upper: float | None
    offered: float
    step_size: float | None
    repeats: int
    spread: float
    p50: float
    p95: float
    p99: float
    error_rate: float
    steps: tuple[StepVerdict, ...]
    ignored: tuple[float, ...]
    summary: str

    @property
    def is_capacity(self) -> bool:
        """True when ``max_rps`` is the target's capacity, not a bound."""
        return self.verdict == "capacity"

    def explain(self) -> list[str]:
        """One line per step, then the answer: what a report or a CLI prints."""
        lines = [
            f"step {v.index}: {v.offered:.4g} req/s offered, {v.achieved:.4g} achieved:"
            f" {v.cause}: {'; '.join(v.reasons)}"
            for v in self.steps
        ]
        lines.extend(
            f"rate {rate:.4g} req/s ignored: sustainable, but above a rate that failed"
            for rate in self.ignored
        )
        lines.append(self.summary)
        return lines

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (for a recorded measurement or ``--json``)."""
        values = asdict(self)
        values["steps"] = [{**asdict(v), "reasons": list(v.reasons)} for v in self.steps]
        values["ignored"] = list(self.ignored)
        return values


def find_knee(steps: Sequence[Step], rule: KneeRule) -> Knee:
    """The maximum sustainable throughput a curve shows, or the bound it allows (see the module
    docstring). Raises :class:`InvalidCurve` for a curve that cannot be judged."""
    judged = judge_curve(steps, rule)
    limit, knee = judged.limit(), judged.knee()
    ignored = tuple(rate.offered for rate in judged.ignored())
    if limit is not None and limit.cause == "generator":
        served = [v.achieved for v in judged.steps if v.cause in ("sustainable", "generator")]
        best = max(served)
        reference = knee or limit
        summary = (
            f"generator-bound at {best:.4g} req/s: the target served that much within the SLO"
            f" without errors, but the load generator could not offer {limit.offered:.4g}"
            " req/s; its capacity is higher and still unknown"
        )
        return _knee("generator_bound", best, best, None, reference, None, judged, ignored, summary)
    if limit is None:
        top = judged.rates[-1]
        summary = (
            f"no knee up to {top.offered:.4g} req/s: every rate tried was sustainable, so the"
            f" capacity is at least {top.achieved:.4g} req/s"
        )
        return _knee(
            "above_range", top.achieved, top.achieved, None, top, None, judged, (), summary
        )
    if knee is None:
        summary = (
            f"below range: the lowest rate tried, {limit.offered:.4g} req/s, was not sustainable"
            f" ({limit.cause}), so the capacity is below it"
        )
        return _knee("below_range", 0.0, 0.0, limit.offered, limit, None, judged, ignored, summary)
    width = limit.offered - knee.offered
    summary = (
        f"maximum sustainable throughput {knee.achieved:.4g} req/s (offered {knee.offered:.4g},"
        f" {len(knee.runs)} run(s), spread {knee.spread:.3g}); {limit.offered:.4g} req/s failed"
        f" ({limit.cause}): capacity within [{knee.achieved:.4g}, {limit.offered:.4g}) req/s"
    )
    return _knee(
        "capacity",
        knee.achieved,
        knee.achieved,
        limit.offered,
        knee,
        width,
        judged,
        ignored,
        summary,
    )


def _knee(
    verdict: Verdict,
    max_rps: float,
    lower: float,
    upper: float | None,
    reference: RateVerdict,
    step_size: float | None,
    judged: JudgedCurve,
    ignored: tuple[float, ...],
    summary: str,
) -> Knee:
    return Knee(
        verdict=verdict,
        max_rps=max_rps,
        lower=lower,
        upper=upper,
        offered=reference.offered,
        step_size=step_size,
        repeats=len(reference.runs),
        spread=reference.spread,
        p50=reference.p50,
        p95=reference.p95,
        p99=reference.p99,
        error_rate=reference.error_rate,
        steps=judged.steps,
        ignored=ignored,
        summary=summary,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.4g} ms"
