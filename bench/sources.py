"""Data source figures: real streams through a real center, and the push -> poll -> push switch.

Run from the repository root::

    .venv/bin/python -m bench.sources [--quick] [--json] [--pg-url URL]

What is measured, in one run (every figure next to its baseline of the same run):

1. **Redis stream** (the shared server at ``--redis-url``): N items (20,000; ``--quick``
   3,000) through a source (``redis_stream``) -> durable admission -> processor (one no-op
   subscription on ``source.item.*``), on a fresh SQLite store and on a fresh PostgreSQL
   schema, next to a plain consumer of the same stream content that only ``XREADGROUP``s and
   ``XACK``s. Time: from the first item added until every item is handled. Batch 500 messages
   per read for both (``DataSource.batch``; the default is 100). Best of 2 interleaved runs
   (``--quick``: 1). Target: center/plain >= 0.5 on SQLite (the embedded default).
2. **NATS JetStream** (``--nats-url``): the same with ``nats_jetstream`` next to a plain
   durable pull consumer that ``fetch``es and ``ack``s each message.
3. **Items/s per tenant, by store**: one tenant (the Redis runs of section 1) and 4 tenants at
   once, each with its own Redis stream source (5,000 items each; ``--quick`` 750), on SQLite
   and PostgreSQL. Target: >= 10,000 items/s for one tenant on PostgreSQL.
4. **Push outage and recovery** (see :mod:`bench.source_failover`): a ``redis-server`` of the
   bench's own is killed and started again (3 times; ``--quick``: once); time from the outage
   to the switch and to the first polled item handled, and from the recovery to the first
   pushed item and to the switch back to ``event_only``. The source runs with a short policy
   made for this run (``event_timeout`` 0.5 s, thresholds 2/3, polling every 0.2 s), shown in
   the report.
   Target: the switch comes within ``failure_threshold x event_timeout`` of the outage.
5. **The center alone**: the same N items as stream entries already read (no broker, no
   producer), decoded as the Redis connector decodes them and admitted 500 at a time through
   the center's item sink, one admission after the other as one engine runs them, until
   every item is handled; items/s and CPU per item of the event loop's thread and of the
   whole process (writer thread and driver included), on SQLite and PostgreSQL. No target:
   it shows what the center's own work costs, apart from the broker's client. Then the same
   in two processes at once, each with a center and a store of its own: what a second
   process adds on this machine.

Sections 1 and 2 also give each run's CPU per item, of the bench's process and of the whole
machine (``/proc/stat``: the servers too), and the cores the center's goal would need at that
CPU per item (the machine's CPU per item times the goal's items/s): what the machine's two
cores allow, whatever the code does inside one process.

Every center run checks that each item was handled exactly once. The bench freezes its heap
before the first run (as a center's first start does, ``freeze_heap``), so plain and center
runs meet the same garbage collector. Streams, consumers and
PostgreSQL schemas are the run's own and are deleted afterwards. A server that cannot be
reached is reported as unavailable with the reason (its targets: "not measured").

Output: rich tables, then a summary of the targets; ``--json`` sends the tables to stderr and
prints one JSON document on stdout. ``config.code`` holds sha256 prefixes of the measured
modules and ``config.load`` the machine's load averages at the start and the end: other work
on the two cores moves every figure. Sizes are chosen for about 70 s on a 2-core machine
(``--quick``: about 14 s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import nats
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bench import source_failover, source_streams
from bench.common import (
    BACKENDS,
    add_pg_url,
    code_fingerprint,
    machine_load,
    postgres_reason,
    print_json,
    report_parser,
    run_report,
    shown,
    targets_table,
    unavailable,
)
from bench.common import table as common_table
from eventcenter.center.heap import freeze_startup_heap

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
PROBE_TIMEOUT_S = 2.0

TARGET_RATIO = 0.5
TARGET_PG_ITEMS = 10_000.0

#: The modules whose code decides these figures (fingerprinted in the report).
MEASURED_MODULES = (
    "eventcenter.sources.event_engine",
    "eventcenter.sources.polling_engine",
    "eventcenter.sources.manager",
    "eventcenter.sources.connectors.redis_stream",
    "eventcenter.sources.connectors.nats_jetstream",
    "eventcenter.center.source_sink",
    "eventcenter.handlers.admission",
    "eventcenter.handlers.processor",
    "eventcenter.storage.writer",
    "eventcenter.storage.bulk",
    "eventcenter.storage.source_state",
    "eventcenter.center.heap",
    "eventcenter.domain.hysteresis",
)


@dataclass(frozen=True)
class Sizes:
    items: int
    repeats: int
    tenants: int
    tenant_items: int
    cycles: int
    steady_s: float
    hold_s: float


DEFAULT_SIZES = Sizes(
    items=20_000, repeats=2, tenants=4, tenant_items=5_000, cycles=3, steady_s=1.0, hold_s=1.0
)
QUICK_SIZES = Sizes(
    items=3_000, repeats=1, tenants=4, tenant_items=750, cycles=1, steady_s=0.5, hold_s=0.5
)


# reachability --------------------------------------------------------------------------------


async def _redis_probe(url: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _nats_probe(url: str) -> None:
    errors: list[Exception] = []

    async def keep(error: Exception) -> None:  # instead of the client's traceback on stderr
        errors.append(error)

    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S * 2):
            client = await nats.connect(
                url,
                connect_timeout=PROBE_TIMEOUT_S,
                max_reconnect_attempts=1,
                allow_reconnect=False,
                error_cb=keep,
            )
    except Exception as error:
        raise (errors[-1] if errors else error) from None
    try:
        await client.jetstream().account_info()
    finally:
        await client.close()


def server_reason(probe: Callable[[str], Any], url: str) -> str | None:
    """None when the server answers; else why not (one line, for the report)."""
    try:
        asyncio.run(probe(url))
    except Exception as error:  # any failure to reach it is reported, the run goes on
        return f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return None


# sections ------------------------------------------------------------------------------------


def measure_broker(
    broker_url: str,
    down: str | None,
    plain: source_streams.PlainRun,
    center: source_streams.CenterRun,
    sizes: Sizes,
    pg_url: str,
    pg_down: str | None,
) -> dict[str, Any]:
    if down is not None:
        return unavailable(broker_url, down)
    backends = [b for b in BACKENDS if b == "sqlite" or pg_down is None]
    result = source_streams.measure_broker(
        broker_url, plain, center, sizes.items, backends, pg_url, sizes.repeats
    )
    for backend in backends:
        run = result[backend]
        run["goal_items_per_s"] = goal = goal_rate(backend, result["plain"]["items_per_s"])
        machine = run.get("machine_cpu_us")
        run["cores_at_goal"] = None if machine is None else round(machine * goal / 1e6, 2)
    if pg_down is not None:
        result["postgresql"] = unavailable(pg_url, pg_down)
    return result


def goal_rate(backend: str, plain_items_per_s: float) -> float:
    """The items/s the center's goal asks for on ``backend``: half the plain consumer's on
    SQLite, :data:`TARGET_PG_ITEMS` on PostgreSQL."""
    if backend == "sqlite":
        return round(TARGET_RATIO * plain_items_per_s)
    return TARGET_PG_ITEMS


def measure_tenants(
    redis_url: str, redis_down: str | None, sizes: Sizes, pg_url: str, pg_down: str | None
) -> dict[str, Any]:
    if redis_down is not None:
        return unavailable(redis_url, redis_down)
    backends = [b for b in BACKENDS if b == "sqlite" or pg_down is None]
    result: dict[str, Any] = {
        "status": "measured",
        "tenants": sizes.tenants,
        "items_per_tenant": sizes.tenant_items,
        **source_streams.measure_tenants(
            redis_url, sizes.tenant_items, sizes.tenants, backends, pg_url
        ),
    }
    if pg_down is not None:
        result["postgresql"] = unavailable(pg_url, pg_down)
    return result


# targets -------------------------------------------------------------------------------------


def measure_center_alone(sizes: Sizes, pg_url: str, pg_down: str | None) -> dict[str, Any]:
    backends = [b for b in BACKENDS if b == "sqlite" or pg_down is None]
    result = source_streams.measure_sink_only(sizes.items, backends, pg_url, sizes.repeats)
    result["side_by_side"] = source_streams.measure_sink_side_by_side(sizes.items, backends, pg_url)
    if pg_down is not None:
        result["postgresql"] = unavailable(pg_url, pg_down)
        result["side_by_side"]["postgresql"] = unavailable(pg_url, pg_down)
    return result


def target(name: str, goal: str, value: Any, met: bool | None) -> dict[str, Any]:
    return {"name": name, "target": goal, "value": value, "met": met}


def _measured(section: dict[str, Any], key: str) -> dict[str, Any] | None:
    if section.get("status") != "measured":
        return None
    run = section.get(key)
    if run is None or run.get("status") == "unavailable":
        return None
    return dict(run)


def targets_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label in (("redis", "Redis stream"), ("nats", "NATS JetStream")):
        run = _measured(report[key], "sqlite")
        ratio = run["ratio"] if run else None
        rows.append(
            target(
                f"{label}: center (SQLite) / plain consumer",
                f">= {TARGET_RATIO}",
                ratio if ratio is not None else "unavailable",
                None if ratio is None else ratio >= TARGET_RATIO,
            )
        )
    for key, label in (("redis", "Redis"), ("nats", "NATS")):
        run = _measured(report[key], "postgresql")
        rate = run["items_per_s"] if run else None
        rows.append(
            target(
                f"PostgreSQL: items/s of one tenant's source ({label})",
                f">= {TARGET_PG_ITEMS:,.0f}",
                rate if rate is not None else "unavailable",
                None if rate is None else rate >= TARGET_PG_ITEMS,
            )
        )
    failover = report["failover"]
    if failover["status"] == "measured":
        config = failover["config"]
        bound = config["failure_threshold"] * config["event_timeout"]
        took = failover["outage_to_switch_s"]["max"]
        rows.append(
            target(
                "push outage -> switch to polling, slowest cycle (s)",
                f"<= {bound:g}",
                took,
                took <= bound,
            )
        )
    else:
        rows.append(target("push outage -> switch to polling (s)", "measured", "unavailable", None))
    rows.append(exactly_once_target(report))
    return rows


def exactly_once_target(report: dict[str, Any]) -> dict[str, Any]:
    """Every center run of every section: (runs checked, runs where it held)."""
    runs = held = 0
    sections = [report[key] for key in ("redis", "nats", "tenants", "alone")]
    if report["alone"].get("status") == "measured":
        sections.append(report["alone"]["side_by_side"])
    for section in sections:
        for backend in BACKENDS:
            run = _measured(section, backend)
            if run is not None:
                count = int(run.get("checked_runs", 1))
                runs += count
                held += count if run["exactly_once"] else 0
    if report["failover"]["status"] == "measured":
        runs += 1
        held += 1 if report["failover"]["exactly_once"] else 0
    return target(
        "every item handled exactly once (every center run)",
        "all",
        f"{held}/{runs} runs",
        held == runs if runs else None,
    )


# rendering -----------------------------------------------------------------------------------


#: Columns of text, left-aligned (figures are right-aligned).
TEXT_COLUMNS = frozenset({"note", "from", "to", "reason", "cycles"})


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    return common_table(title, columns, rows, TEXT_COLUMNS)


def render_broker(number: int, title: str, plain: str, section: dict[str, Any]) -> Table:
    columns = ["system", "items/s", "seconds", "commits", "items/commit", "vs plain", "once"]
    columns += ["CPU µs/item process / machine", "cores at its goal", "runs (items/s)"]
    if section["status"] != "measured":
        return table(f"{number}. {title}: unavailable ({section['reason']})", columns, [])
    rows: list[list[Any]] = []
    p = section["plain"]
    rows.append(
        [plain, p["items_per_s"], p["seconds"], "", "", "", "", _cpu(p), "", str(p["runs"])]
    )
    for backend in BACKENDS:
        run = section[backend]
        if run.get("status") == "unavailable":
            rows.append([f"center on {backend}", "unavailable", run["reason"], *[""] * 7])
            continue
        rows.append(
            [
                f"center on {backend}",
                run["items_per_s"],
                run["seconds"],
                run["commits"],
                run["items_per_commit"],
                run["ratio"],
                run["exactly_once"],
                _cpu(run),
                _cores(run),
                str(run["runs"]),
            ]
        )
    return table(
        f"{number}. {title} -> source -> durable admission -> processor, next to {plain}"
        f" ({section['items']:,} items, {section['batch']} per read, best of"
        f" {section['best_of']}). CPU: of the bench's process (the center or the plain"
        f" consumer, and the producer) and of the whole machine (the servers too) per item;"
        f" cores at its goal: the machine's CPU per item times the items/s of its goal",
        columns,
        rows,
    )


def _cpu(run: dict[str, Any]) -> str:
    machine = run.get("machine_cpu_us")
    return f"{run['process_cpu_us']:.0f} / {'?' if machine is None else f'{machine:.0f}'}"


def _cores(run: dict[str, Any]) -> str:
    cores = run.get("cores_at_goal")
    if cores is None:
        return "?"
    return f"{cores:.2f} at {run['goal_items_per_s']:,.0f}/s"


def render_tenants(report: dict[str, Any]) -> Table:
    columns = ["store, tenants", "per tenant min", "per tenant max", "all tenants", "seconds"]
    columns.append("once")
    section = report["tenants"]
    rows: list[list[Any]] = []
    redis = report["redis"]
    for backend in BACKENDS:
        one = _measured(redis, backend)
        if one is not None:
            rate = one["items_per_s"]
            rows.append([f"{backend}, 1", rate, rate, rate, one["seconds"], one["exactly_once"]])
        if section["status"] != "measured":
            continue
        run = section[backend]
        if run.get("status") == "unavailable":
            rows.append([f"{backend}, {section['tenants']}", "unavailable", run["reason"]])
            continue
        rows.append(
            [
                f"{backend}, {section['tenants']}",
                run["per_tenant_min"],
                run["per_tenant_max"],
                run["items_per_s"],
                run["seconds"],
                run["exactly_once"],
            ]
        )
    sizes = report["config"]["sizes"]
    return table(
        f"3. Items/s per tenant, by store: Redis stream sources (one tenant: section 1,"
        f" {sizes['items']:,} items; {sizes['tenants']} tenants at once:"
        f" {sizes['tenant_items']:,} items each)",
        columns,
        rows,
    )


def render_failover(section: dict[str, Any], console: Console) -> None:
    if section["status"] != "measured":
        console.print(f"4. Push outage and recovery: {section['status']} ({section['reason']})")
        return
    config = section["config"]
    shown_config = ", ".join(
        f"{key} {value}"
        for key, value in config.items()
        if key not in ("flap_window", "max_hysteresis", "cycles")
    )
    notes = {
        "outage_to_switch_s": "",
        "outage_to_first_polled_s": "",
        "recovery_to_first_pushed_s": "mostly the engine's reconnect back-off (grows in an outage)",
        "recovery_to_event_only_s": "",
    }
    rows: list[list[Any]] = []
    for key, label in (
        ("outage_to_switch_s", "outage -> switch away from event_only"),
        ("outage_to_first_polled_s", "outage -> first polled item handled"),
        ("recovery_to_first_pushed_s", "recovery -> first pushed item handled"),
        ("recovery_to_event_only_s", "recovery -> switch back to event_only"),
    ):
        values = [cycle[key] for cycle in section["cycles"]]
        figures = section[key]
        rows.append([label, figures["median"], figures["max"], str(values), notes[key]])
    rows.append(
        [
            "failed push attempts in the outage / last one before recovery (s)",
            "",
            "",
            str(
                [
                    (c["failed_push_attempts"], c["last_failed_attempt_before_recovery_s"])
                    for c in section["cycles"]
                ]
            ),
            "back-off after n attempts: 0.8 s * 2^(n-1), jitter takes off up to half",
        ]
    )
    first = section["cycles"][0]
    rows.append(["why it left push (cycle 1)", "", "", "", first["switch_reason"]])
    rows.append(["why it came back (cycle 1)", "", "", "", first["return_reason"]])
    rows.append(
        [
            "items produced / delivered / duplicates",
            "",
            "",
            "",
            f"{section['produced']} / {section['delivered']} / {section['duplicates']}"
            f" ({section['lost_by_push']} never reached the stream; handled by "
            + ", ".join(f"{path} {n}" for path, n in sorted(section["by_path"].items()))
            + ")",
        ]
    )
    if section["missing"]:
        rows.append(["never handled", "", "", "", ", ".join(section["missing"])])
    console.print(
        table(
            f"4. Push outage and recovery, {config['cycles']} cycle(s): a redis-server of the"
            f" bench's own killed, then started again; seconds ({shown_config})",
            ["measure", "median", "max", "cycles", "note"],
            rows,
        )
    )
    console.print(
        table(
            "   Mode timeline (seconds from the first outage, as recorded in the source's log)",
            ["at", "from", "to", "reason"],
            [
                [entry["at"], entry["previous"], entry["to"], entry["reason"]]
                for entry in section["timeline"]
            ],
        )
    )


def render_alone(section: dict[str, Any]) -> Table:
    columns = ["store", "items/s", "seconds", "loop CPU µs/item", "process CPU µs/item"]
    columns += ["commits", "once", "runs (items/s)"]
    rows: list[list[Any]] = []
    for backend in BACKENDS:
        run = section[backend]
        if run.get("status") == "unavailable":
            rows.append([backend, "unavailable", run["reason"], *[""] * 5])
            continue
        rows.append(
            [
                backend,
                run["items_per_s"],
                run["seconds"],
                run["loop_cpu_us"],
                run["process_cpu_us"],
                run["commits"],
                run["exactly_once"],
                str(run["runs"]),
            ]
        )
    return table(
        f"5. The center alone: {section['items']:,} stream entries already read, decoded and"
        f" admitted {source_streams.BATCH} at a time through the item sink until handled (no"
        f" broker; best of {section['best_of']})",
        columns,
        rows,
    )


def render_side_by_side(section: dict[str, Any]) -> Table:
    both = section["side_by_side"]
    columns = ["store", "items/s of each process", "all together", "seconds", "one alone"]
    columns.append("once")
    rows: list[list[Any]] = []
    for backend in BACKENDS:
        run, alone = both[backend], section[backend]
        if run.get("status") == "unavailable":
            rows.append([backend, "unavailable", run["reason"], *[""] * 3])
            continue
        rows.append(
            [
                backend,
                ", ".join(f"{rate:,}" for rate in run["per_process"]),
                run["items_per_s"],
                run["seconds"],
                alone.get("items_per_s", ""),
                run["exactly_once"],
            ]
        )
    return table(
        f"5b. The same in {both['processes']} processes at once, each with a center and a store"
        f" of its own ({both['items']:,} items each; one run): what a second process adds on"
        " this machine",
        columns,
        rows,
    )


def render(report: dict[str, Any], console: Console) -> None:
    console.print(render_broker(1, "Redis stream", "plain XREADGROUP + XACK", report["redis"]))
    console.print(render_broker(2, "NATS JetStream", "plain fetch + ack", report["nats"]))
    console.print(render_tenants(report))
    render_failover(report["failover"], console)
    console.print(render_alone(report["alone"]))
    if report["alone"].get("status") == "measured":
        console.print(render_side_by_side(report["alone"]))
    console.print(targets_table(report))


# running -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = report_parser(
        "python -m bench.sources",
        "Data source figures: real streams through a real center, and failover.",
        "small sizes (about 10 s)",
    )
    add_pg_url(parser)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis server")
    parser.add_argument("--nats-url", default=DEFAULT_NATS_URL, help="NATS JetStream server")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
            "sizes": asdict(sizes),
            "batch": source_streams.BATCH,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load": {"start": machine_load()},
            "servers": {
                "postgresql": shown(args.pg_url),
                "redis": args.redis_url,
                "nats": args.nats_url,
            },
            "code": code_fingerprint(MEASURED_MODULES),
        }
    }
    # Every run, plain or center, under the same collector: what exists now is frozen as a
    # center's first start would freeze it (``freeze_heap``), so the baseline does not run
    # with full collections over the imported modules while the centers after it do not.
    freeze_startup_heap()
    with console.status("checking the servers"):
        pg_down = postgres_reason(args.pg_url)
        redis_down = server_reason(_redis_probe, args.redis_url)
        nats_down = server_reason(_nats_probe, args.nats_url)
    sections: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        (
            "redis",
            "1/5 Redis stream: plain consumer and center",
            lambda: measure_broker(
                args.redis_url,
                redis_down,
                source_streams.redis_plain,
                source_streams.redis_center,
                sizes,
                args.pg_url,
                pg_down,
            ),
        ),
        (
            "nats",
            "2/5 NATS JetStream: plain consumer and center",
            lambda: measure_broker(
                args.nats_url,
                nats_down,
                source_streams.nats_plain,
                source_streams.nats_center,
                sizes,
                args.pg_url,
                pg_down,
            ),
        ),
        (
            "tenants",
            "3/5 items/s per tenant, by store",
            lambda: measure_tenants(args.redis_url, redis_down, sizes, args.pg_url, pg_down),
        ),
        (
            "failover",
            "4/5 push outage and recovery",
            lambda: source_failover.measure_failover(sizes.cycles, sizes.steady_s, sizes.hold_s),
        ),
        (
            "alone",
            "5/5 the center alone, without a broker",
            lambda: measure_center_alone(sizes, args.pg_url, pg_down),
        ),
    ]
    timings: dict[str, float] = {}
    for key, label, measure in sections:
        section_started = time.perf_counter()
        with console.status(label):
            report[key] = measure()
        timings[key] = round(time.perf_counter() - section_started, 1)
    report["config"]["section_seconds"] = timings
    report["config"]["seconds"] = round(time.perf_counter() - started, 1)
    report["config"]["load"]["end"] = machine_load()
    report["targets"] = targets_of(report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The engines log each reconnect and switch; the report shows them, the log would interleave.
    logging.getLogger("eventcenter").setLevel(logging.ERROR)
    report = run_report(args, run, render, width=140)
    print_json(args, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
