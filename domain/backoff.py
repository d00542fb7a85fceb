"""Retry back-off as pure functions of the attempt number.

Two shapes of jitter, for two kinds of retry:

- :func:`backoff_delay`, "full jitter" in [0, ceiling]: for retries of many independent events,
  where spreading them over the whole window matters more than any one retry's delay;
- :class:`ReconnectBackoff` (:func:`spread_delay`), jitter in [ceiling * (1 - spread), ceiling]:
  for one connection that reconnects (a source's push path, a failing poll), where an attempt at
  once after a failure would hammer a server that just went down.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime


def _ceiling(attempt: int, base: float, cap: float) -> float:
    """``base * 2**(attempt-1)``, at most ``cap``."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    try:
        return min(cap, base * 2.0 ** (attempt - 1))
    except OverflowError:  # a very late attempt: the power exceeds a float, the cap applies
        return cap


def _check_jitter(jitter: float) -> None:
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = first retry).

    Exponential (``base * 2**(attempt-1)``, at most ``cap``), then "full jitter": the delay is
    drawn uniformly from [0, ceiling]. ``jitter`` is that draw in [0, 1), passed in so tests are
    deterministic and callers choose their random source. Full jitter spreads the retries of many
    failing events over time instead of hammering a recovering dependency in waves.
    """
    ceiling = _ceiling(attempt, base, cap)
    _check_jitter(jitter)
    return ceiling * jitter


def spread_delay(attempt: int, base: float, cap: float, jitter: float, spread: float) -> float:
    """Seconds to wait before reconnect number ``attempt`` (1 = first retry).

    The ceiling grows like :func:`backoff_delay`'s (``base * 2**(attempt-1)``, at most ``cap``);
    the jitter takes off up to ``spread`` of it: the delay is ``ceiling * (1 - spread * jitter)``,
    in [ceiling * (1 - spread), ceiling]. Unlike full jitter the delay never drops to zero (a
    reconnect at once after a failure helps nobody), and unlike client-go's additive jitter it
    never exceeds ``cap`` (30 s means 30 s), while reconnects of many sources that failed
    together still spread out, even once they all reached the cap.
    """
    ceiling = _ceiling(attempt, base, cap)
    _check_jitter(jitter)
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    return ceiling * (1.0 - spread * jitter)


@dataclass(frozen=True, slots=True)
class ReconnectBackoff:
    """How a source engine waits between attempts of a failing path.

    The defaults are the Kubernetes informer's (client-go reflector): 0.8 s, doubling up to
    30 s. ``spread`` is the share of each delay the jitter may take off (see
    :func:`spread_delay`).
    """

    base: float = 0.8
    cap: float = 30.0
    spread: float = 0.5

    def __post_init__(self) -> None:
        if not self.base > 0.0:
            raise ValueError(f"the back-off base must be > 0 seconds, got {self.base}")
        if not self.cap >= self.base:
            raise ValueError(
                f"the back-off cap ({self.cap} s) must be at least its base ({self.base} s)"
            )
        if not 0.0 <= self.spread <= 1.0:
            raise ValueError(f"spread must be in [0, 1], got {self.spread}")

    def delay(self, attempt: int, jitter: float) -> float:
        """Seconds before attempt number ``attempt`` (1 = first retry); ``jitter`` in [0, 1]."""
        return spread_delay(attempt, self.base, self.cap, jitter, self.spread)

    def ceiling(self, attempt: int) -> float:
        """The longest :meth:`delay` can be for ``attempt`` (its jitter at 0)."""
        return _ceiling(attempt, self.base, self.cap)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds an HTTP ``Retry-After`` header asks for: a number of seconds (at least 0), or an
    HTTP date (a date without a zone is UTC) less ``now`` (epoch seconds); None when absent or
    unreadable (the back-off alone decides)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
