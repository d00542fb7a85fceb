"""The hysteresis policy: when a source leaves push and when it comes back, as pure code.

Why it looks the way it does:

- **Only the push path's own outcomes count.** Consecutive push failures take a source down
  the ladder (``event_only -> hybrid -> polling_only``, see :mod:`source_modes`); consecutive
  push successes bring it back one rung at a time (``polling_only -> hybrid -> event_only``).
  Polling successes say nothing about push, so they are never counted (:meth:`Hysteresis.observe`
  ignores them): in ``hybrid`` the push path stays subscribed, in ``polling_only`` it is probed.
  Coming back from ``polling_only`` stops in ``hybrid`` (polling kept as a safety net) and needs
  a second run of successes there before polling stops: a probe answering proves less than push
  carrying the traffic.
- **Silence is a failure.** No push outcome for ``event_timeout`` seconds counts as one push
  failure, and one more per further ``event_timeout``: a subscription that died without an
  error still takes the source down. A push outcome is a sign of life of the path, not only a
  message: an engine that reports its answered empty receives (or probes) keeps a quiet but
  healthy source on push; one that reports messages only sends a quiet source to polling.
  Silence is measured from the last push outcome (success or failure), at exact times
  (``last + k * event_timeout``), whenever the policy is next called: how often the caller
  checks changes nothing.
- **Two thresholds.** ``failure_threshold`` to leave, ``success_threshold`` (larger) to return.
- **Flapping is damped.** A switch that finds ``flap_switches`` switches (itself included) within
  ``flap_window`` seconds raises both thresholds one step (up to ``max_hysteresis``) and starts a
  ``cool_down`` during which the source does not return towards push (leaving is never delayed:
  that is the safe direction). After ``decay_period`` seconds without a switch the thresholds
  come down one step, and one more per further quiet period.
- **A restart may lengthen the timeout.** A healing strategy that restarts a quiet stream can
  ask for a longer ``event_timeout`` (:meth:`Hysteresis.extended`): each time ``EXTEND_FACTOR``
  (1.5) times the one in effect, at most ``MAX_TIMEOUT_FACTOR`` (4) times the configured one.
  It holds for the silences measured from a push outcome within ``decay_period`` of the
  extension, then the configured timeout is back: a long quiet period lets the source detect
  an outage as fast as configured again. It is an outcome like the others (``extend``), so a
  replay applies it too; a restarted source starts with the configured timeout.
- **The decision is the switch.** A call returns the decisions it made, in order: a
  :class:`Switch` takes effect in the policy at once, :class:`ThresholdRaised` and
  :class:`ThresholdDecayed` are values the caller records (``SourceLog.record``). Decisions carry
  the exact time they are due, which may be earlier than ``now`` (silence noticed late). Several
  switches in one call (silence that piled up) are applied in order; only the last one's mode
  needs starting, and if that fails the caller reports :meth:`Hysteresis.rolled_back`.

Because every decision is a function of the outcomes and their times, replaying recorded
outcomes through another configuration (:mod:`simulate`) is exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.source_modes import (
    EVENT_ONLY,
    HYBRID,
    POLLING_ONLY,
    initial_mode,
    supported_modes,
)

#: The most switches a flap check can look back on (keeps state and the source log bounded).
MAX_FLAP_SWITCHES = 20
#: How much one extension lengthens the event timeout in effect (:meth:`Hysteresis.extended`).
EXTEND_FACTOR = 1.5
#: The longest event timeout extensions reach, as a multiple of the configured one.
MAX_TIMEOUT_FACTOR = 4.0

#: The next rung down (push failing) and up (push proving itself) from each mode.
DOWN = {EVENT_ONLY: HYBRID, HYBRID: POLLING_ONLY}
UP = {POLLING_ONLY: HYBRID, HYBRID: EVENT_ONLY}
_RANK = {EVENT_ONLY: 0, HYBRID: 1, POLLING_ONLY: 2}  # how far down toward polling


@dataclass(frozen=True, slots=True)
class HysteresisConfig:
    """The knobs of the policy (seconds for times). Defaults work for a source with a steady
    stream; ``max_switches`` says what they guarantee against flapping."""

    failure_threshold: int = 3
    success_threshold: int = 5
    max_hysteresis: int = 10
    event_timeout: float = 30.0
    flap_window: float = 300.0
    flap_switches: int = 4
    cool_down: float = 60.0
    decay_period: float = 600.0

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "success_threshold", "max_hysteresis"):
            _check_count(name, getattr(self, name), 1)
        _check_count("flap_switches", self.flap_switches, 2, MAX_FLAP_SWITCHES)
        for name in ("event_timeout", "flap_window", "cool_down", "decay_period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        biggest = max(self.failure_threshold, self.success_threshold)
        if self.max_hysteresis < biggest:
            raise ConfigurationError(
                f"max_hysteresis ({self.max_hysteresis}) must be at least the larger threshold"
                f" ({biggest}): it is the ceiling flapping raises them to"
            )

    @property
    def max_level(self) -> int:
        """How many steps flapping can raise the thresholds before both are at the ceiling."""
        return self.max_hysteresis - min(self.failure_threshold, self.success_threshold)

    def thresholds(self, level: int) -> tuple[int, int]:
        """(failure, success) thresholds after ``level`` raises, each capped at the ceiling."""
        return (
            min(self.failure_threshold + level, self.max_hysteresis),
            min(self.success_threshold + level, self.max_hysteresis),
        )

    def max_switches(self, period: float) -> int:
        """The most switches a source can make in any ``period`` seconds, whatever happens.

        Returns towards push: the first, plus one per ``cool_down`` (a return after a flapping
        switch waits a cool-down), plus one per switch that was not flagged as flapping, of which
        there are fewer than ``flap_switches`` per ``flap_window``. Switches away from push can
        outnumber returns by two at most (two rungs). Hence
        ``2 * (1 + period // cool_down + (flap_switches - 1) * (period // flap_window + 1)) + 2``.
        Switches that were rolled back are not covered (each can add a rung back).
        """
        unflagged = (self.flap_switches - 1) * (math.floor(period / self.flap_window) + 1)
        returns = 1 + math.floor(period / self.cool_down) + unflagged
        return 2 * returns + 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HysteresisConfig:
        return cls(**values)


def _check_count(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"{name} must be {bounds}, got {value}")


@dataclass(frozen=True, slots=True)
class Switch:
    """Decision: the source moves from ``previous`` to ``to`` at ``at``, and why.

    ``failures``/``successes`` are the consecutive push counts at the decision, ``threshold``
    the one that was reached. ``cool_down_until`` is when returns towards push are allowed
    again after this switch (None: no cool-down running).
    """

    at: float
    previous: str
    to: str
    reason: str
    failures: int
    successes: int
    threshold: int
    cool_down_until: float | None = None


@dataclass(frozen=True, slots=True)
class ThresholdRaised:
    """Decision: flapping raised the thresholds to ``level`` steps above the configured ones."""

    at: float
    level: int
    failure_threshold: int
    success_threshold: int
    reason: str


@dataclass(frozen=True, slots=True)
class ThresholdDecayed:
    """Decision: a quiet period brought the thresholds down to ``level`` steps above base."""

    at: float
    level: int
    failure_threshold: int
    success_threshold: int
    reason: str


HysteresisDecision = Switch | ThresholdRaised | ThresholdDecayed
Decisions = tuple[HysteresisDecision, ...]

OutcomePath = Literal["push", "poll", "rollback", "stop", "start", "force", "extend"]
OUTCOME_PATHS = ("push", "poll", "rollback", "stop", "start", "force", "extend")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the runtime records for the what-if (:mod:`simulate`), one per observation.

    ``path`` is ``push`` or ``poll`` (one outcome per receive or poll call, not per item),
    ``rollback`` (a switch's target could not start; ``mode`` is where the source landed),
    ``stop`` (the source was stopped: silence is charged up to here, not beyond), ``start``
    (the source was (re)started: streaks start over, silence is measured from here) or
    ``force`` (a healing strategy or an operator moved the source down to ``mode``) or
    ``extend`` (a healing strategy restarted push with a longer event timeout). Silence
    is never recorded: it is derived from the gaps between push outcomes. Five plain fields,
    so a row is cheap: see :meth:`row`.

    After a crash (no ``stop``), a replay charges no silence between the last outcome before
    the crash and the restart: a switch that silence caused in that gap is in the source's log
    but not in the replay.
    """

    at: float
    path: OutcomePath
    ok: bool = True
    reason: str = ""
    mode: str = ""

    def __post_init__(self) -> None:
        if self.path not in OUTCOME_PATHS:
            raise ValueError(f"outcome path must be one of {', '.join(OUTCOME_PATHS)}")

    def row(self) -> tuple[float, str, bool, str, str]:
        return (self.at, self.path, self.ok, self.reason, self.mode)

    @classmethod
    def from_row(cls, row: tuple[float, str, bool, str, str]) -> Outcome:
        at, path, ok, reason, mode = row
        if path not in OUTCOME_PATHS:
            raise ValueError(f"outcome path must be one of {', '.join(OUTCOME_PATHS)}")
        return cls(float(at), path, bool(ok), reason, mode)  # type: ignore[arg-type]


@dataclass(slots=True)
class HysteresisState:
    """The policy's memory of one source: plain values, so it can be copied, compared and
    rebuilt from the source's log after a restart (the streaks then start over).

    ``last_push_at`` is the last push outcome (or the start): silence is measured from it;
    ``silences`` counts the silent timeouts already charged since then. ``switch_times`` holds
    the latest switches (at most ``flap_switches``), ``stable_since`` the last switch or decay.
    ``timeout_factor`` and ``extended_until``: the last extension of the event timeout.
    """

    mode: str
    has_push: bool = True
    has_poll: bool = True
    failures: int = 0
    successes: int = 0
    level: int = 0
    last_push_at: float = 0.0
    silences: int = 0
    switch_times: tuple[float, ...] = field(default_factory=tuple)
    cool_down_until: float | None = None
    stable_since: float = 0.0
    clock: float = 0.0
    timeout_factor: float = 1.0
    extended_until: float | None = None

    def copy(self) -> HysteresisState:
        return replace(self)


class Hysteresis:
    """The policy applied to one source's state. Every method takes ``now`` (seconds) and
    returns the decisions it made, oldest first (usually none).

    Times end up in the source's log, so they should outlive the process: epoch seconds. A
    ``now`` earlier than one seen before (a wall clock stepped back) counts as the latest time
    seen, so decisions never go back in time; a replay does the same, so it stays exact.
    """

    def __init__(self, config: HysteresisConfig, state: HysteresisState) -> None:
        if state.mode not in supported_modes(state.has_push, state.has_poll):
            raise ValueError(f"a source with these paths cannot be in mode {state.mode!r}")
        self.config = config
        self.state = state

    @classmethod
    def start(
        cls,
        config: HysteresisConfig,
        *,
        now: float,
        has_push: bool = True,
        has_poll: bool = True,
        mode: str | None = None,
    ) -> Hysteresis:
        """A fresh policy for a source registered at ``now`` (push first when it has push)."""
        state = HysteresisState(
            mode=initial_mode(has_push, has_poll) if mode is None else mode,
            has_push=has_push,
            has_poll=has_poll,
            last_push_at=now,
            stable_since=now,
            clock=now,
        )
        return cls(config, state)

    @property
    def mode(self) -> str:
        return self.state.mode

    @property
    def event_timeout(self) -> float:
        """The event timeout the current silence is measured with: the configured one, times
        the extension if the last push outcome fell within it."""
        state = self.state
        if state.extended_until is not None and state.last_push_at < state.extended_until:
            return self.config.event_timeout * state.timeout_factor
        return self.config.event_timeout

    @property
    def failure_threshold(self) -> int:
        return self.config.thresholds(self.state.level)[0]

    @property
    def success_threshold(self) -> int:
        return self.config.thresholds(self.state.level)[1]

    # what the runtime reports --------------------------------------------------------------------

    def push_failed(self, now: float, reason: str) -> Decisions:
        """The push path failed (an error, a refused connection, a failed probe)."""
        self._require_push()
        now = self._at(now)
        decisions = self._advance(now)
        self._push_outcome(now)
        decisions.extend(self._failure(now, reason))
        return tuple(decisions)

    def push_succeeded(self, now: float) -> Decisions:
        """The push path gave a sign of life: messages received, a receive the server answered
        with nothing, or (in ``polling_only``) a probe answered. One call per receive, not per
        message."""
        self._require_push()
        now = self._at(now)
        decisions = self._advance(now)
        self._push_outcome(now)
        state = self.state
        state.failures = 0
        state.successes += 1
        decisions.extend(self._maybe_return(now))
        return tuple(decisions)

    def silence_check(self, now: float) -> Decisions:
        """Charge the silence (and apply the decays) due by ``now``; call it periodically."""
        return tuple(self._advance(self._at(now)))

    def rolled_back(self, now: float, to: str, reason: str) -> Decisions:
        """The last switch's target could not start; the source is in ``to`` instead.

        The attempt stays in the switch history (repeated failing attempts count as flapping)
        and the streaks start over. ``reason`` is for the caller's record; it changes nothing.
        """
        now = self._at(now)
        decisions = self._advance(now)
        state = self.state
        if to not in supported_modes(state.has_push, state.has_poll):
            raise ValueError(f"a source with these paths cannot roll back to {to!r}")
        state.mode = to
        state.failures = state.successes = 0
        return tuple(decisions)

    def restarted(self, now: float) -> Decisions:
        """The source was (re)started at ``now``: streaks start over and silence is measured
        from here (silence while nothing ran is not the push path's fault). Decays that fell due
        meanwhile still apply: they depend on time only."""
        now = self._at(now)
        decisions = self._advance(now, silence=False)
        self._push_outcome(now)
        self.state.failures = self.state.successes = 0
        return tuple(decisions)

    def forced(self, now: float, to: str, reason: str) -> Decisions:
        """Move the source down to ``to`` (``hybrid`` or ``polling_only``) one rung at a time,
        because something outside the policy asked for it (a healing strategy that forces
        polling, an operator): each rung is a switch with ``reason``, and counts for flapping.

        Only down: the way back is the push path's own successes, as after any failure. A source
        already at or below ``to`` is left alone (no decisions).
        """
        now = self._at(now)
        decisions = self._advance(now)
        state = self.state
        if to not in DOWN.values() or to not in supported_modes(state.has_push, state.has_poll):
            raise ValueError(f"a source with these paths cannot be forced down to {to!r}")
        while state.mode != to:
            target = self._next_down()
            if target is None or _RANK[state.mode] >= _RANK[to]:
                break
            decisions.extend(self._switch(now, target, f"forced: {reason}", 0))
        return tuple(decisions)

    def extended(self, now: float, reason: str) -> Decisions:
        """The push path was restarted at ``now`` with a longer event timeout (a healing
        strategy's action): ``EXTEND_FACTOR`` times the one in effect (at most
        ``MAX_TIMEOUT_FACTOR`` times the configured one) for ``decay_period``; silence is
        measured from here. The streaks are kept: a restart is no evidence either way.
        ``reason`` is for the caller's record."""
        self._require_push()
        now = self._at(now)
        decisions = self._advance(now)
        state = self.state
        running = state.extended_until is not None and now < state.extended_until
        base = state.timeout_factor if running else 1.0
        state.timeout_factor = min(MAX_TIMEOUT_FACTOR, base * EXTEND_FACTOR)
        state.extended_until = now + self.config.decay_period
        self._push_outcome(now)
        return tuple(decisions)

    def observe(self, outcome: Outcome) -> Decisions:
        """Apply one recorded outcome. Poll outcomes change nothing: they are no evidence about
        the push path (they only advance time). A ``rollback`` outcome is applied as is; the
        simulator decides whether it applies to its own run."""
        if outcome.path == "push":
            if outcome.ok:
                return self.push_succeeded(outcome.at)
            return self.push_failed(outcome.at, outcome.reason)
        if outcome.path == "rollback":
            return self.rolled_back(outcome.at, outcome.mode, outcome.reason)
        if outcome.path == "start":
            return self.restarted(outcome.at)
        if outcome.path == "force":
            return self.forced(outcome.at, outcome.mode, outcome.reason)
        if outcome.path == "extend":
            return self.extended(outcome.at, outcome.reason)
        return self.silence_check(outcome.at)  # poll, stop: time passes, nothing else

    # the rules -----------------------------------------------------------------------------------

    def _at(self, now: float) -> float:
        """``now``, or the latest time seen if ``now`` is earlier (a wall clock stepped back)."""
        now = max(now, self.state.clock)
        self.state.clock = now
        return now

    def _advance(self, now: float, *, silence: bool = True) -> list[HysteresisDecision]:
        """Apply, in time order, the decays and silent timeouts due by ``now``."""
        state, config = self.state, self.config
        decisions: list[HysteresisDecision] = []
        while True:
            decay_at = state.stable_since + config.decay_period if state.level else math.inf
            silent_at = self._silence_due() if silence else math.inf
            if min(decay_at, silent_at) > now:
                return decisions
            if decay_at <= silent_at:
                decisions.append(self._decay(decay_at))
            elif self._next_down() is None:
                self._charge_silences(now if decay_at > now else decay_at)
            else:
                state.silences += 1
                quiet = state.silences * self.event_timeout
                decisions.extend(self._failure(silent_at, f"no push outcome for {quiet:g}s"))

    def _silence_due(self) -> float:
        state = self.state
        if not state.has_push:
            return math.inf
        return state.last_push_at + (state.silences + 1) * self.event_timeout

    def _charge_silences(self, until: float) -> None:
        """Charge every silent timeout due by ``until`` at once: where no switch can follow,
        each would only count a failure, so a long outage costs one step, not one per timeout.
        Counted with the same expression as one by one, so the result is identical."""
        state, timeout = self.state, self.event_timeout
        due = max(state.silences + 1, math.floor((until - state.last_push_at) / timeout))
        while state.last_push_at + (due + 1) * timeout <= until:
            due += 1
        while due > state.silences and state.last_push_at + due * timeout > until:
            due -= 1
        charged = due - state.silences
        state.silences = due
        state.failures += charged
        if charged:
            state.successes = 0

    def _push_outcome(self, now: float) -> None:
        self.state.last_push_at = now
        self.state.silences = 0

    def _require_push(self) -> None:
        if not self.state.has_push:
            raise ValueError("a push outcome was reported for a source without a push path")

    def _next_down(self) -> str | None:
        return DOWN.get(self.state.mode) if self.state.has_poll else None

    def _failure(self, at: float, reason: str) -> list[HysteresisDecision]:
        state = self.state
        state.failures += 1
        state.successes = 0
        target = self._next_down()
        if target is None or state.failures < self.failure_threshold:
            return []
        why = f"{state.failures} consecutive push failures (last: {reason})"
        return self._switch(at, target, why, self.failure_threshold)

    def _maybe_return(self, at: float) -> list[HysteresisDecision]:
        state = self.state
        target = UP.get(state.mode)
        if target is None or state.successes < self.success_threshold:
            return []
        if state.cool_down_until is not None and at < state.cool_down_until:
            return []  # flapping: the successes keep counting, the return waits
        why = f"{state.successes} consecutive push successes"
        return self._switch(at, target, why, self.success_threshold)

    def _switch(self, at: float, to: str, reason: str, threshold: int) -> list[HysteresisDecision]:
        state, config = self.state, self.config
        previous, failures, successes = state.mode, state.failures, state.successes
        state.mode = to
        state.failures = state.successes = 0
        state.switch_times = (*state.switch_times, at)[-config.flap_switches :]
        state.stable_since = at
        recent = sum(1 for t in state.switch_times if t >= at - config.flap_window)
        raised: list[HysteresisDecision] = []
        if recent >= config.flap_switches:
            state.cool_down_until = at + config.cool_down
            if state.level < config.max_level:
                state.level += 1
                failure, success = config.thresholds(state.level)
                why = f"{recent} switches within {config.flap_window:g}s"
                raised.append(ThresholdRaised(at, state.level, failure, success, why))
        cooling = state.cool_down_until
        switch = Switch(
            at,
            previous,
            to,
            reason,
            failures,
            successes,
            threshold,
            cooling if cooling is not None and cooling > at else None,
        )
        return [switch, *raised]

    def _decay(self, at: float) -> ThresholdDecayed:
        state = self.state
        state.level -= 1
        state.stable_since = at
        failure, success = self.config.thresholds(state.level)
        why = f"no switch for {self.config.decay_period:g}s"
        return ThresholdDecayed(at, state.level, failure, success, why)
