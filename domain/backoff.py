"""Retry back-off: exponential with full jitter, as a pure function of the attempt number."""

from __future__ import annotations


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = first retry).

    Exponential (``base * 2**(attempt-1)``, at most ``cap``), then "full jitter": the delay is
    drawn uniformly from [0, ceiling]. ``jitter`` is that draw in [0, 1), passed in so tests are
    deterministic and callers choose their random source. Full jitter spreads the retries of many
    failing events over time instead of hammering a recovering dependency in waves.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    try:
        ceiling = min(cap, base * 2.0 ** (attempt - 1))
    except OverflowError:  # a very late attempt: the power exceeds a float, the cap applies
        ceiling = cap
    return ceiling * jitter
