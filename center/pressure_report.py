"""What ``eventcenter pressure run`` shows of a load test: the step table, a chart, a report.

The chart (matplotlib, Agg: no display needed) has two panels over the steps in the order they
ran: offered and achieved rates with the answer's figure as a line, and p95 with the SLO as a
line. A report is that chart as a PNG, or an HTML page embedding it with the step table.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from rich.table import Table

from eventcenter.domain.knee import Knee, KneeRule
from eventcenter.domain.throughput import Measurement

REPORT_SUFFIXES = (".png", ".html")

COLUMNS = (
    "step",
    "offered/s",
    "achieved/s",
    "ratio",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "verdict",
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def headline(measurement: Measurement) -> str:
    """One line: the figure, what it is, and the bracket."""
    m = measurement
    upper = "unbounded" if m.upper is None else f"{m.upper:.4g}"
    what = {
        "capacity": "maximum sustainable throughput",
        "generator_bound": "at least (the load generator was the limit)",
        "above_range": "at least (no rate tried failed)",
        "below_range": "below the lowest rate tried",
    }.get(m.verdict, m.verdict)
    return (
        f"{what}: {m.max_rps:.4g} req/s [{m.verdict}], capacity in [{m.lower:.4g}, {upper}]"
        f" req/s; p95 {_ms(m.p95)}, errors {m.error_rate:.2%}; {m.duration:.0f}s"
    )


def step_rows(measurement: Measurement, knee: Knee) -> list[list[str]]:
    """One row of text per step, in the order the steps ran."""
    rows = []
    for verdict, step in zip(knee.steps, measurement.curve, strict=True):
        cause: str = verdict.cause
        if step.get("generator_saturated"):
            cause += " (generator saturated)"
        rows.append(
            [
                str(verdict.index + 1),
                f"{step['offered']:.4g}",
                f"{step['achieved']:.4g}",
                f"{step['achieved'] / step['offered']:.1%}",
                f"{step['p50'] * 1000:.1f}",
                f"{step['p95'] * 1000:.1f}",
                f"{step['p99'] * 1000:.1f}",
                f"{step['error_rate']:.2%}",
                cause,
            ]
        )
    return rows


def steps_table(measurement: Measurement, knee: Knee) -> Table:
    table = Table(title="The curve (steps in the order they ran)", title_justify="left")
    for column in COLUMNS:
        if column == "verdict":
            table.add_column(column, justify="left", overflow="fold", min_width=12)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for row in step_rows(measurement, knee):
        table.add_row(*row)
    return table


def chart_png(measurement: Measurement, rule: KneeRule) -> bytes:
    """The two-panel chart (see the module docstring) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    curve = measurement.curve
    steps = list(range(1, len(curve) + 1))
    figure, (rates, latency) = plt.subplots(2, 1, sharex=True, figsize=(8, 6), dpi=100)
    try:
        rates.plot(steps, [s["offered"] for s in curve], "o--", label="offered")
        rates.plot(steps, [s["achieved"] for s in curve], "s-", label="achieved")
        rates.axhline(
            measurement.max_rps,
            color="green",
            linestyle=":",
            label=f"{measurement.verdict}: {measurement.max_rps:.4g} req/s",
        )
        rates.set_ylabel("requests/s")
        rates.legend(loc="best")
        rates.grid(alpha=0.3)
        latency.plot(steps, [s["p95"] * 1000 for s in curve], "o-", color="tab:red", label="p95")
        latency.axhline(
            rule.slo_p95 * 1000, color="black", linestyle="--", label=f"SLO {_ms(rule.slo_p95)}"
        )
        latency.set_ylabel("p95 (ms)")
        latency.set_xlabel("step")
        latency.set_xticks(steps)
        latency.legend(loc="best")
        latency.grid(alpha=0.3)
        figure.suptitle("Load test: offered vs achieved, p95 per step")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def report_html(measurement: Measurement, knee: Knee, rule: KneeRule, target: str) -> str:
    """A standalone page: headline, chart (embedded), step table, the knee's reasons."""
    image = base64.b64encode(chart_png(measurement, rule)).decode("ascii")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in step_rows(measurement, knee)
    )
    reasons = "".join(f"<li>{html.escape(line)}</li>" for line in knee.explain())
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Load test of {html.escape(target)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;"
        "text-align:right}table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}"
        "</style></head><body>"
        f"<h1>Load test of {html.escape(target)}</h1>"
        f"<p><strong>{html.escape(headline(measurement))}</strong></p>"
        f"<img alt='offered vs achieved and p95 per step' src='data:image/png;base64,{image}'>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Why</h2><ul>{reasons}</ul></body></html>"
    )


def write_report(
    path: Path, measurement: Measurement, knee: Knee, rule: KneeRule, target: str
) -> None:
    """Write a PNG chart or an HTML report, as the suffix of ``path`` says."""
    if path.suffix.lower() == ".png":
        path.write_bytes(chart_png(measurement, rule))
    else:
        path.write_text(report_html(measurement, knee, rule, target), encoding="utf-8")


def as_json(measurement: Measurement, knee: Knee) -> dict[str, Any]:
    """What ``--json`` prints: the measurement, the knee and its explanation."""
    return {
        "measurement": measurement.as_dict(),
        "knee": knee.as_dict(),
        "explanation": knee.explain(),
    }
