"""Per-step figures from Locust's stats history CSV, for the knee rule.

Locust run with ``--csv PREFIX --csv-full-history`` appends one row per second to
``PREFIX_stats_history.csv`` for each request name and one ``Aggregated`` row; this module reads
the ``Aggregated`` rows only and never imports Locust (it monkey-patches the standard library:
see LIBRARIES.md). Two things about those rows decide how a step is measured:

- ``Total Request Count`` and ``Total Failure Count`` are cumulative, so a step's achieved rate
  and error rate come from their differences between the first and the last row of its steady
  window (the warm-up left out), not from the noisy per-second ``Requests/s``;
- the percentile columns of the ``Aggregated`` row cover roughly the last 10 seconds only with
  ``--csv-full-history``; without it they are cumulative since the start of the run and would
  blend every earlier step in. So the percentiles of a step are those of the last row of its
  window, which must hold for at least 10 seconds (:data:`PERCENTILE_WINDOW`).

The tester knows when each step's steady window started and ended (:class:`StepWindow`,
epoch seconds, as Locust's ``Timestamp``); :func:`steps_from_history` turns the rows into
:class:`~eventcenter.domain.knee.Step` values.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eventcenter.domain.errors import InvalidCurve
from eventcenter.domain.knee import Step

#: Seconds Locust's "current" percentiles look back over
#: (its CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW).
PERCENTILE_WINDOW = 10.0

_COLUMNS = ("Timestamp", "Name", "50%", "95%", "99%", "Total Request Count", "Total Failure Count")


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One second of the ``Aggregated`` history: cumulative counts, current percentiles (s)."""

    timestamp: int
    requests: int
    failures: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class StepWindow:
    """The steady window of one step: the rate offered from ``start`` to ``end`` (epoch s)."""

    offered: float
    start: float
    end: float


def read_history(path: Path) -> list[HistoryRow]:
    """The ``Aggregated`` rows of a ``*_stats_history.csv`` file."""
    with path.open(newline="", encoding="utf-8") as file:
        return parse_history(file)


def parse_history(lines: Iterable[str]) -> list[HistoryRow]:
    """The ``Aggregated`` rows of stats-history CSV text; :class:`InvalidCurve` if a column
    this needs is missing or a value cannot be read."""
    reader = csv.DictReader(lines)
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise InvalidCurve(None, missing[0], "not a Locust stats history (column missing)")
    rows: list[HistoryRow] = []
    for line, row in enumerate(reader, start=2):
        if row["Name"] != "Aggregated":
            continue
        try:
            rows.append(
                HistoryRow(
                    timestamp=int(row["Timestamp"]),
                    requests=int(row["Total Request Count"]),
                    failures=int(row["Total Failure Count"]),
                    p50=_seconds(row["50%"]),
                    p95=_seconds(row["95%"]),
                    p99=_seconds(row["99%"]),
                )
            )
        except ValueError as error:
            raise InvalidCurve(None, f"line {line}", f"unreadable value ({error})") from None
    return rows


def steps_from_history(rows: Sequence[HistoryRow], windows: Sequence[StepWindow]) -> list[Step]:
    """One step per window, from the rows inside it (see the module docstring)."""
    steps: list[Step] = []
    for index, window in enumerate(windows):
        if window.end - window.start < PERCENTILE_WINDOW:
            raise InvalidCurve(
                index,
                "window",
                f"holds {window.end - window.start:g}s; the percentiles need at least"
                f" {PERCENTILE_WINDOW:g}s",
            )
        inside = [row for row in rows if window.start <= row.timestamp <= window.end]
        if len(inside) < 2 or inside[-1].timestamp == inside[0].timestamp:
            raise InvalidCurve(index, "window", "fewer than two history rows fall inside it")
        first, last = inside[0], inside[-1]
        seconds = last.timestamp - first.timestamp
        requests = last.requests - first.requests
        failures = last.failures - first.failures
        p50, p95, p99 = (value or 0.0 for value in (last.p50, last.p95, last.p99))
        step = Step(
            offered=window.offered,
            achieved=requests / seconds,
            p50=p50,
            p95=p95,
            p99=p99,
            error_rate=failures / requests if requests > 0 else 0.0,
            duration=float(seconds),
        )
        step.check(index)
        steps.append(step)
    return steps


def _seconds(milliseconds: str) -> float | None:
    return None if milliseconds == "N/A" else float(milliseconds) / 1000.0
