"""What if: replay a source's recorded outcomes through a hysteresis configuration.

The policy is a pure function of the outcomes and their times (silence is derived from the
gaps between push outcomes, never recorded), so replaying the outcomes of a run through the
configuration that run used gives back its switches exactly; through another configuration it
shows what that one would have done: the switches, the time spent in each mode and the polls it
would have made.

Two assumptions, both exact for the configuration of the original run:

- a switch of the replay takes effect at once and succeeds, unless the recorded run rolled back
  a switch at that very step (a ``rollback`` outcome right after the outcome that decided it,
  or right after the silence that did): then the replay's switch is rolled back too, to the
  recorded mode; a ``rollback`` outcome with no replayed switch to undo only marks time;
- polling runs while the mode is ``hybrid`` or ``polling_only``: one poll when polling starts,
  then one per ``polling_interval`` (moves between those two modes do not restart it), and none
  at the very end of the period.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from eventcenter.domain.hysteresis import (
    Hysteresis,
    HysteresisConfig,
    HysteresisDecision,
    HysteresisState,
    Outcome,
    Switch,
)
from eventcenter.domain.source_modes import (
    HYBRID,
    POLLING_ONLY,
    WORKING_MODES,
    supported_modes,
)

POLLING_MODES = (HYBRID, POLLING_ONLY)


@dataclass(frozen=True, slots=True)
class Simulation:
    """The outcome of a replay over ``[start, until]``.

    ``switches`` in order (a rolled back one included: it was decided), ``rollbacks`` as
    ``(at, mode landed in)``, ``decisions`` everything the policy decided (thresholds too),
    ``time_in_mode`` seconds per working mode, ``polls`` the polls the polling engine would have
    made, ``final`` the policy's state at the end.
    """

    start: float
    until: float
    switches: tuple[Switch, ...]
    rollbacks: tuple[tuple[float, str], ...]
    decisions: tuple[HysteresisDecision, ...]
    time_in_mode: dict[str, float]
    polls: int
    final: HysteresisState


def simulate(
    outcomes: Iterable[Outcome],
    config: HysteresisConfig,
    *,
    polling_interval: float,
    start: float | None = None,
    until: float | None = None,
    has_push: bool = True,
    has_poll: bool = True,
    initial: HysteresisState | None = None,
) -> Simulation:
    """Replay ``outcomes`` (oldest first) through ``config``.

    ``start`` is when the source started (default: the first outcome), ``until`` the end of the
    period (default: the last outcome; silence up to it counts). ``initial`` is the policy's
    state at ``start`` if the period begins mid-life (it is copied, not changed); otherwise the
    source starts fresh in its initial mode.
    """
    if not (math.isfinite(polling_interval) and polling_interval > 0):
        raise ValueError("polling_interval must be a positive number of seconds")
    recorded = list(outcomes)
    if start is not None:
        begin = start
    elif initial is not None:
        begin = initial.clock
    else:
        begin = recorded[0].at if recorded else 0.0
    if initial is None:
        policy = Hysteresis.start(config, now=begin, has_push=has_push, has_poll=has_poll)
    else:
        policy = Hysteresis(config, initial.copy())
        has_push, has_poll = initial.has_push, initial.has_poll
    timeline: list[tuple[float, str]] = [(begin, policy.mode)]
    decisions: list[HysteresisDecision] = []
    rollbacks: list[tuple[float, str]] = []

    def follow(made: tuple[HysteresisDecision, ...]) -> None:
        decisions.extend(made)
        for decision in made:
            if isinstance(decision, Switch):
                timeline.append((max(decision.at, begin), decision.to))

    just_switched = False
    for outcome in recorded:
        if outcome.path == "rollback":
            made = policy.silence_check(outcome.at)  # a switch silence caused shows up here
            follow(made)
            switched = just_switched or any(isinstance(d, Switch) for d in made)
            if switched and outcome.mode in supported_modes(has_push, has_poll):
                follow(policy.observe(outcome))
                rollbacks.append((policy.state.clock, policy.mode))
                timeline.append((max(policy.state.clock, begin), policy.mode))
            just_switched = False
            continue
        made = policy.observe(outcome)
        follow(made)
        just_switched = any(isinstance(decision, Switch) for decision in made)
    follow(policy.silence_check(until if until is not None else policy.state.clock))
    end = max(policy.state.clock, begin)
    time_in_mode, polls = _tally(timeline, end, polling_interval)
    return Simulation(
        start=begin,
        until=end,
        switches=tuple(d for d in decisions if isinstance(d, Switch)),
        rollbacks=tuple(rollbacks),
        decisions=tuple(decisions),
        time_in_mode=time_in_mode,
        polls=polls,
        final=policy.state.copy(),
    )


def _tally(
    timeline: list[tuple[float, str]], end: float, interval: float
) -> tuple[dict[str, float], int]:
    """Seconds per mode, and polls: one at the start of each polling stretch, then one per
    interval, strictly before the stretch ends."""
    spent = dict.fromkeys(WORKING_MODES, 0.0)
    polls = 0
    stretch_start: float | None = None
    bounds = [*timeline, (end, "")]
    for (at, mode), (next_at, _) in pairwise(bounds):
        spent[mode] += next_at - at
        if mode in POLLING_MODES and stretch_start is None:
            stretch_start = at
        if mode not in POLLING_MODES and stretch_start is not None:
            polls += _polls(stretch_start, at, interval)
            stretch_start = None
    if stretch_start is not None:
        polls += _polls(stretch_start, end, interval)
    return spent, polls


def _polls(begin: float, end: float, interval: float) -> int:
    return math.ceil((end - begin) / interval) if end > begin else 0
