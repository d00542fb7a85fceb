"""A temporary slow-down of a source's polling, and how it wears off.

Healing's ``reduce_frequency`` slows a source that no tuned service drives when its server
answers "too many requests". Left at that, one burst of 429s would make the source poll
slower for the rest of the process's life. A :class:`SlowDown` is a multiplier on the polling
interval, on top of the load factor tuning sets, that steps back by itself:

- ``slow(by, cap, relax_after, now)`` multiplies it by ``by`` (never past ``cap``);
- from then on, each ``relax_after`` seconds without a rate-limited answer divide it by the
  same ``by``, down to 1 (a rate-limited answer, :meth:`SlowDown.rate_limited`, starts the
  count again);

so a source slowed after a 429 returns to its configured rhythm, one step per quiet period,
once the server stopped refusing. Pure: the caller passes the clock's ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eventcenter.domain.errors import ConfigurationError


@dataclass
class SlowDown:
    """The multiplier and when it last changed (or the server last refused); see the module
    docstring. ``factor`` 1.0 is no slow-down."""

    factor: float = 1.0
    step: float = 2.0
    relax_after: float = 300.0
    since: float = 0.0

    def slow(self, by: float, cap: float, relax_after: float, now: float) -> float:
        """Multiply by ``by`` (> 1), at most up to ``cap`` (>= 1); steps back by ``by`` after
        each ``relax_after`` seconds (> 0) without a rate-limited answer. The new factor."""
        if not (by > 1.0 and math.isfinite(by)):
            raise ConfigurationError(f"a slow-down must multiply by a number > 1, got {by}")
        if not (cap >= 1.0 and math.isfinite(cap)):
            raise ConfigurationError(f"a slow-down's cap must be a number >= 1, got {cap}")
        if not (relax_after > 0.0 and math.isfinite(relax_after)):
            raise ConfigurationError(
                f"a slow-down must wear off after a number of seconds > 0, got {relax_after}"
            )
        self.factor = min(cap, max(self.factor, 1.0) * by)
        self.step = by
        self.relax_after = relax_after
        self.since = now
        return self.factor

    def rate_limited(self, now: float) -> None:
        """The server refused again: the quiet period starts over."""
        if self.factor > 1.0:
            self.since = now

    def relax(self, now: float) -> bool:
        """One step back if ``relax_after`` seconds passed since the last change or refusal;
        True if the factor changed."""
        if self.factor <= 1.0 or now - self.since < self.relax_after:
            return False
        self.factor = max(1.0, self.factor / self.step)
        self.since = now
        return True
