"""Which healing strategy to try next, learned from what healed before.

**The choice rule.** For a case of category C, the candidates are the strategies that apply to
C and are neither exhausted (tried ``max_attempts`` times in this case) nor cooling down (last
applied to the same tenant and source less than ``cooldown`` seconds ago). Each candidate is
scored by its Laplace-smoothed success rate in category C::

    rate = (verified + 1) / (attempts + 2)

so a strategy never tried scores 1/2, one that healed 2 of 2 scores 3/4 and one that failed
3 of 3 scores 1/5: experience moves the score, one lucky or unlucky outcome does not decide it.
The highest score wins; equal scores go to the strategy the analysis recommended first (then
registration order). With probability ``epsilon`` (one draw of the injected ``random.Random``
per choice) another candidate is chosen uniformly instead, so a strategy that was unlucky early
still gets tried now and then and the rates keep learning. When every candidate that is not
exhausted is cooling down, the answer is :class:`Wait` (until the earliest cool-down ends);
when all are exhausted (or none applies), :class:`Exhausted`: the case escalates.

**The counts** are an event-sourced aggregate, :class:`HealingStats`, one per center (``scope``)
and category, with one ``OutcomeCounted`` event per verified or failed attempt: learning
survives restarts, and the history says which case taught what. The runner counts an outcome in
the same transaction as the case's verdict, so an outcome is counted once even if the step is
recorded twice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.errors import ConfigurationError

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")

#: Share of choices that explore another candidate than the best one.
EPSILON = 0.1


def laplace(verified: int, attempts: int) -> float:
    """The smoothed success rate ``(verified + 1) / (attempts + 2)``."""
    if attempts < 0 or not 0 <= verified <= attempts:
        raise ValueError(f"need 0 <= verified ({verified}) <= attempts ({attempts})")
    return (verified + 1) / (attempts + 2)


@dataclass(frozen=True, slots=True)
class Option:
    """One strategy that applies to the case's category, as the choice sees it.

    ``tried``: attempts in this case; ``last_at``: when it was last applied to the same tenant
    and source (this case or an earlier one), None if never.
    """

    name: str
    max_attempts: int
    cooldown: float
    tried: int = 0
    last_at: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or self.max_attempts < 1:
            raise ConfigurationError(
                f"strategy {self.name}: max_attempts must be at least 1, got {self.max_attempts}"
            )
        if not (math.isfinite(self.cooldown) and self.cooldown >= 0):
            raise ConfigurationError(
                f"strategy {self.name}: cooldown must be a number of seconds >= 0"
            )

    @property
    def exhausted(self) -> bool:
        return self.tried >= self.max_attempts

    def ready_at(self) -> float:
        """When it may be applied again (the past if it never was)."""
        return -math.inf if self.last_at is None else self.last_at + self.cooldown


@dataclass(frozen=True, slots=True)
class Choice:
    """Try ``strategy`` now. ``rate`` is its smoothed success rate, ``explored`` whether the
    exploration draw chose it over the best one, ``reason`` both in words."""

    strategy: str
    rate: float
    explored: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing may be applied before ``until`` (cool-downs); ask again then."""

    until: float
    reason: str


@dataclass(frozen=True, slots=True)
class Exhausted:
    """No strategy is left for this case: escalate, for ``reason``."""

    reason: str


Next = Choice | Wait | Exhausted


def choose(
    options: Sequence[Option],
    counts: Mapping[str, tuple[int, int]],
    *,
    now: float,
    rng: random.Random,
    recommended: Sequence[str] = (),
    epsilon: float = EPSILON,
) -> Next:
    """The next strategy by the rule of the module docstring.

    ``counts`` maps strategy names to (verified, attempts) in the case's category;
    ``recommended`` is the analysis' order (ties); ``options`` not in it rank after, in their
    own order. Exactly one ``rng.random()`` is drawn whenever a strategy is chosen (a
    :class:`Choice` is returned), and one ``rng.choice`` more when it explores: a seeded
    source gives the same choices every run.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigurationError(f"epsilon must be in [0, 1], got {epsilon}")
    if not options:
        return Exhausted("no healing strategy applies to this category")
    left = [option for option in options if not option.exhausted]
    if not left:
        tried = ", ".join(f"{o.name} x{o.tried}" for o in options)
        return Exhausted(f"every strategy was tried as often as allowed ({tried})")
    ready = [option for option in left if option.ready_at() <= now]
    if not ready:
        until = min(option.ready_at() for option in left)
        return Wait(until, f"every strategy left is cooling down until {until:.3f}")
    position = {name: index for index, name in enumerate(recommended)}

    def score(option: Option) -> float:
        verified, attempts = counts.get(option.name, (0, 0))
        return laplace(verified, attempts)

    ranked = sorted(
        enumerate(ready),
        key=lambda item: (-score(item[1]), position.get(item[1].name, len(position)), item[0]),
    )
    best = ranked[0][1]
    draw = rng.random()
    if len(ranked) > 1 and draw < epsilon:
        picked = rng.choice([option for _, option in ranked[1:]])
        return Choice(
            picked.name,
            score(picked),
            True,
            f"exploring: {picked.name} ({_rate_text(picked.name, counts)}) instead of"
            f" the best, {best.name} ({_rate_text(best.name, counts)})",
        )
    return Choice(
        best.name,
        score(best),
        False,
        f"highest smoothed success rate: {best.name} ({_rate_text(best.name, counts)})",
    )


def _rate_text(name: str, counts: Mapping[str, tuple[int, int]]) -> str:
    verified, attempts = counts.get(name, (0, 0))
    return f"{laplace(verified, attempts):.2f} = ({verified}+1)/({attempts}+2)"


class HealingStats(Aggregate):
    """Verified and attempted counts per strategy, for one category, in one center.

    Every attribute is a plain JSON value (``counts``: strategy -> ``{"verified": n,
    "attempts": n}``), so snapshots work.
    """

    @staticmethod
    def create_id(scope: str, category: str) -> UUID:
        return uuid5(_NAMESPACE, f"healing-stats/{scope}/{category}")

    @event("Started")
    def __init__(self, scope: str, category: str) -> None:
        self.scope = scope
        self.category = category
        self.counts: dict[str, dict[str, int]] = {}

    @classmethod
    def start(cls, scope: str, category: str) -> HealingStats:
        return cls(scope, category)

    @property
    def name(self) -> str:
        return f"{self.scope}/{self.category}"

    def count(self, strategy: str, verified: bool, *, case_id: str, at: float) -> None:
        """Count one outcome of ``strategy`` (verified or failed), in the case ``case_id``."""
        self._counted(
            category=self.category, strategy=strategy, verified=verified, case_id=case_id, at=at
        )

    @event("OutcomeCounted")
    def _counted(
        self, category: str, strategy: str, verified: bool, case_id: str, at: float
    ) -> None:
        entry = self.counts.setdefault(strategy, {"verified": 0, "attempts": 0})
        entry["attempts"] += 1
        if verified:
            entry["verified"] += 1

    def tally(self) -> dict[str, tuple[int, int]]:
        """Per strategy (verified, attempts): what :func:`choose` takes as ``counts``."""
        return {name: (c["verified"], c["attempts"]) for name, c in self.counts.items()}

    def rate(self, strategy: str) -> float:
        verified, attempts = self.tally().get(strategy, (0, 0))
        return laplace(verified, attempts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "strategies": {
                name: {**c, "rate": laplace(c["verified"], c["attempts"])}
                for name, c in sorted(self.counts.items())
            },
        }
