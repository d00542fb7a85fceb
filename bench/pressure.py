"""The PressureTester against sample targets of known capacity, on this machine.

Run from the repository root::

    .venv/bin/python -m bench.pressure [--quick] [--json]

For each sample target (``slots`` slots held ``service_ms`` each: capacity slots / service
time) it runs the whole step search with Locust in its own process and reports the figure
found against the true capacity (goal: within ±10 %), its verdict and bracket, the steps and
the time to the result. Then the load generator's own ceiling: a target with many slots and
almost no service time, which Locust cannot saturate on a small machine; the tool must say
``generator_bound`` (a lower bound), never report that ceiling as a capacity.

Load generator and targets share the machine's cores (and any other work on them): the
ceiling, and the latencies near it, move with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from bench.common import (
    code_fingerprint,
    machine_load,
    print_json,
    report_parser,
    run_report,
    table,
    targets_table,
)
from eventcenter.domain.knee import KneeRule
from eventcenter.domain.ports import LoadTest
from eventcenter.domain.step_plan import StepPlan
from eventcenter.pressure.tester import LocustPressureTester
from tests.sample_targets import sample_target

MEASURED_MODULES = [
    "eventcenter.pressure.tester",
    "eventcenter.pressure.step_search",
    "eventcenter.pressure.step_meter",
    "eventcenter.domain.step_plan",
    "eventcenter.domain.knee",
]
#: (slots, service ms): capacities 50, 150 and 400 req/s.
TARGETS = ((1, 20.0), (3, 20.0), (8, 20.0))
CEILING = (10_000, 0.001)
SLO_S = 0.25
GOAL = 0.10


def plan_for(capacity: float, quick: bool) -> StepPlan:
    return StepPlan(
        start_rate=capacity / 3,
        growth=1.5,
        warmup=1 if quick else 2,
        hold=3 if quick else 5,
        resolution=0.1 if quick else 0.05,
        max_rate=50_000,
        max_duration=120,
    )


async def measure(slots: int, service_ms: float, plan: StepPlan) -> dict[str, Any]:
    tester = LocustPressureTester()
    started = time.monotonic()
    with sample_target(slots, service_ms) as target:
        measurement = await tester.measure(LoadTest(target.url, KneeRule(slo_p95=SLO_S), plan))
    return {
        "slots": slots,
        "service_ms": service_ms,
        "true_capacity": slots / (service_ms / 1000),
        "found": round(measurement.max_rps, 1),
        "verdict": measurement.verdict,
        "lower": round(measurement.lower, 1),
        "upper": None if measurement.upper is None else round(measurement.upper, 1),
        "steps": len(measurement.curve),
        "seconds": round(time.monotonic() - started, 1),
        "offered": [round(s["offered"], 1) for s in measurement.curve],
        "saturated": [s["generator_saturated"] for s in measurement.curve],
        "generator": measurement.settings["generator"]["steps"],
    }


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
            "slo_p95_s": SLO_S,
            "quick": args.quick,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load": {"start": machine_load()},
            "code": code_fingerprint(MEASURED_MODULES),
        }
    }
    results = []
    for slots, service_ms in TARGETS:
        capacity = slots / (service_ms / 1000)
        with console.status(f"searching a {capacity:g} req/s target"):
            results.append(asyncio.run(measure(slots, service_ms, plan_for(capacity, args.quick))))
    with console.status("the load generator's ceiling"):
        ceiling_plan = plan_for(1500, args.quick).model_copy(update={"start_rate": 500.0})
        ceiling = asyncio.run(measure(*CEILING, ceiling_plan))
    report["results"] = results
    report["ceiling"] = ceiling
    report["config"]["seconds"] = round(time.perf_counter() - started, 1)
    report["config"]["load"]["end"] = machine_load()
    report["targets"] = [
        {
            "name": f"found / true capacity, {r['true_capacity']:g} req/s target",
            "target": f"within ±{GOAL:.0%}",
            "value": f"{r['found'] / r['true_capacity']:.3f} ({r['verdict']})",
            "met": r["verdict"] == "capacity" and abs(r["found"] / r["true_capacity"] - 1) <= GOAL,
        }
        for r in results
    ] + [
        {
            "name": "a target faster than the generator",
            "target": "generator_bound (a lower bound)",
            "value": f"{ceiling['verdict']} at {ceiling['found']:g} req/s",
            "met": ceiling["verdict"] in ("generator_bound", "above_range"),
        }
    ]
    return report


def render(report: dict[str, Any], console: Console) -> None:
    ceiling = report["ceiling"]
    rows = [
        [
            f"{r['slots']} x {r['service_ms']:g} ms",
            None if r is ceiling else r["true_capacity"],
            r["found"],
            None if r is ceiling else r["found"] / r["true_capacity"],
            r["verdict"],
            f"[{r['lower']:g}, {r['upper'] if r['upper'] is not None else '-'}]",
            r["steps"],
            r["seconds"],
        ]
        for r in [*report["results"], report["ceiling"]]
    ]
    console.print(
        table(
            f"Step search against sample targets (SLO p95 {SLO_S * 1000:g} ms; last row: the"
            " load generator's ceiling, a target with ~0 service time)",
            ["target", "true req/s", "found req/s", "ratio", "verdict", "bracket", "steps", "s"],
            rows,
            frozenset({"verdict", "bracket"}),
        )
    )
    console.print(
        "Ceiling run, per step: offered "
        + ", ".join(
            f"{o:g}{' (saturated)' if s else ''}"
            for o, s in zip(ceiling["offered"], ceiling["saturated"], strict=True)
        )
        + "; generator cpu/lag p95: "
        + ", ".join(
            f"{g.get('cpu', 0):.2f}/{g.get('lag_p95', 0) * 1000:.0f}ms"
            for g in ceiling["generator"]
        )
    )
    console.print(targets_table(report))


def main(argv: Sequence[str] | None = None) -> int:
    parser = report_parser(
        "python -m bench.pressure",
        "The PressureTester against sample targets of known capacity.",
        "1 s warm-up, 3 s hold and 10 %% resolution per search (about 3 minutes)",
    )
    args = parser.parse_args(argv)
    report = run_report(args, run, render, width=160)
    print_json(args, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
