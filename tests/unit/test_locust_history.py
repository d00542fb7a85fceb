"""Steps from Locust's stats history CSV: counts from differences, percentiles of the window's
last row, only the Aggregated rows, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventcenter.domain.errors import InvalidCurve
from eventcenter.domain.knee import KneeRule, find_knee
from eventcenter.pressure.locust_history import (
    StepWindow,
    parse_history,
    read_history,
    steps_from_history,
)

HEADER = (
    '"Timestamp","User Count","Type","Name","Requests/s","Failures/s","50%","66%","75%","80%",'
    '"90%","95%","98%","99%","99.9%","99.99%","100%","Total Request Count","Total Failure Count",'
    '"Total Median Response Time","Total Average Response Time","Total Min Response Time",'
    '"Total Max Response Time","Total Average Content Size"'
)


def row(ts: int, name: str, requests: int, failures: int, p50: str, p95: str, p99: str) -> str:
    return (
        f'{ts},4,"","{name}",0.0,0.0,{p50},0,0,0,0,{p95},0,{p99},0,0,0,'
        f"{requests},{failures},0,0,0,0,0"
    )


def history() -> list[str]:
    """Two steps: 50 req/s for 12 s from t=1000, then 100 req/s (2 % failing) from t=1014."""
    lines = [HEADER, row(999, "Aggregated", 0, 0, "N/A", "N/A", "N/A")]
    for second in range(13):
        lines.append(row(1000 + second, "/", 50 * second, 0, "20", "30", "40"))
        lines.append(row(1000 + second, "Aggregated", 50 * second, 0, "20", "30", "40"))
    base = 50 * 12
    for second in range(13):
        count, failed = base + 100 * second, 2 * second
        p95 = "90" if second == 12 else "35"
        lines.append(row(1014 + second, "Aggregated", count, failed, "25", p95, "120"))
    return lines


WINDOWS = [StepWindow(50, 1000, 1012), StepWindow(100, 1014, 1026)]


def test_each_window_becomes_a_step_from_count_differences_and_its_last_percentiles() -> None:
    steps = steps_from_history(parse_history(history()), WINDOWS)

    assert [(s.offered, s.achieved, s.error_rate, s.duration) for s in steps] == [
        (50, 50.0, 0.0, 12.0),
        (100, 100.0, 0.02, 12.0),
    ]
    assert (steps[1].p50, steps[1].p95, steps[1].p99) == (0.025, 0.09, 0.12)


def test_only_the_aggregated_rows_are_read_and_na_is_no_figure(tmp_path: Path) -> None:
    path = tmp_path / "run_stats_history.csv"
    path.write_text("\n".join(history()) + "\n", encoding="utf-8")

    rows = read_history(path)

    assert len(rows) == 1 + 13 + 13
    assert (rows[0].requests, rows[0].p95) == (0, None)


def test_the_steps_feed_the_knee_rule() -> None:
    steps = steps_from_history(parse_history(history()), WINDOWS)

    knee = find_knee(steps, KneeRule(slo_p95=0.2, max_error_rate=0.01))

    assert (knee.verdict, knee.max_rps, knee.upper) == ("capacity", 50.0, 100)


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ([StepWindow(50, 1000, 1005)], "holds 5s; the percentiles need at least 10s"),
        ([StepWindow(50, 2000, 2020)], "fewer than two history rows"),
    ],
)
def test_a_window_the_history_cannot_answer_is_refused(
    windows: list[StepWindow], message: str
) -> None:
    with pytest.raises(InvalidCurve, match=message):
        steps_from_history(parse_history(history()), windows)


def test_a_file_that_is_no_stats_history_is_refused() -> None:
    with pytest.raises(InvalidCurve, match="field 'Timestamp': not a Locust stats history"):
        parse_history(['"Type","Name"', '"GET","/"'])


def test_an_unreadable_value_names_its_row() -> None:
    lines = [HEADER, row(1000, "Aggregated", 0, 0, "x", "1", "2")]

    with pytest.raises(InvalidCurve, match="curve: field 'line 2': unreadable value"):
        parse_history(lines)
