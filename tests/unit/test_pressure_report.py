"""What `eventcenter pressure run` shows and writes of a measurement (center/pressure_report)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from eventcenter.center import pressure_report
from eventcenter.domain.knee import Knee, KneeRule, Step, find_knee
from eventcenter.domain.throughput import Measurement

RULE = KneeRule(slo_p95=0.2, latency_growth=2.0)
STEPS = [
    Step(50, 50, 0.02, 0.03, 0.04, 0.0, 3.0),
    Step(100, 99, 0.03, 0.06, 0.08, 0.0, 3.0),
    Step(150, 110, 0.4, 0.6, 0.7, 0.0, 3.0),
    Step(175, 112, 0.2, 0.3, 0.35, 0.0, 3.0, generator_saturated=True),
]


def measured() -> tuple[Measurement, Knee]:
    knee = find_knee(STEPS, RULE)
    return Measurement.from_knee(knee, STEPS, duration=21.0, settings={}), knee


def test_the_headline_says_figure_verdict_and_bracket() -> None:
    measurement, _ = measured()
    line = pressure_report.headline(measurement)
    assert "maximum sustainable throughput: 99 req/s [capacity]" in line
    assert "[99, 150]" in line


def test_the_table_has_one_row_per_step_with_its_verdict() -> None:
    measurement, knee = measured()
    rows = pressure_report.step_rows(measurement, knee)
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[2][-1] == "latency"
    assert rows[3][-1] == "generator (generator saturated)"
    console = Console(width=160, record=True)
    console.print(pressure_report.steps_table(measurement, knee))
    assert "generator saturated" in console.export_text()


def test_a_png_chart_and_an_html_report(tmp_path: Path) -> None:
    measurement, knee = measured()
    png, page = tmp_path / "curve.png", tmp_path / "curve.html"
    pressure_report.write_report(png, measurement, knee, RULE, "http://t/")
    pressure_report.write_report(page, measurement, knee, RULE, "http://t/<x>")
    assert png.read_bytes().startswith(b"\x89PNG")
    text = page.read_text()
    assert "data:image/png;base64," in text
    assert text.count("<tr>") == 1 + len(STEPS)
    assert "http://t/&lt;x&gt;" in text, "the target is escaped"
