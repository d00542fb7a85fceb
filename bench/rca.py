"""Cost of root-cause analysis per failure, next to baselines measured in the same run.

Run from the repository root::

    .venv/bin/python -m bench.rca

- ``FailureQueue`` put + get (severity order, round-robin between tenants and sources,
  merging, bounded) of a mixed stream from 4 tenants x 25 sources. Baseline: a plain
  ``heapq`` of (severity, arrival) tuples, which has none of the fairness.
- ``analyse`` with the 10 built-in rules (evidence strings included). Baseline: a substring
  classifier of the error message (``"timeout" in message``), what a first RCA engine does.
- The runner end to end on the in-memory recorder: a flood of like failures into one open
  (escalated) case (merged in the queue while the taker is busy, then analysed and attached),
  and one case per failure (opened, healed by a strategy whose re-check passes at once,
  counted, closed). Baseline: one bare recorder change (the in-memory recorder copies the case
  it changes, as the store's writer does).

Figures are wall-clock (best of 5) and move by several percent on a shared machine: compare
the rows of one run with each other.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
import timeit
from collections.abc import Callable

from eventcenter.domain.rca import (
    DEFAULT_RULES,
    Category,
    Component,
    Failure,
    PerTenant,
    RcaContext,
    Severity,
    analyse,
)
from eventcenter.domain.rca_case import RcaCase, StatsFor
from eventcenter.healing.case_memory import MemoryCaseRecorder
from eventcenter.healing.failure_queue import FailureQueue
from eventcenter.healing.rca import CallableStrategy, RcaRunner, RcaSettings
from eventcenter.sources.clock import SystemClock, settle

REPEATS = 5
AT = 1_700_000_000.0
KINDS = ("timeout", "connection", "auth", "rate_limited", "bad_data", "exception")
COMPONENTS = (Component.SOURCE_PUSH, Component.SOURCE_POLL, Component.HANDLER)


def stream(n: int, seed: int = 7) -> list[Failure]:
    rng = random.Random(seed)
    return [
        Failure(
            f"tenant-{rng.randrange(4)}",
            f"source-{rng.randrange(25)}",
            rng.choice(COMPONENTS),
            rng.choice(KINDS),
            f"failure {i}",
            AT + i,
            severity=Severity(rng.randint(1, 4)),
        )
        for i in range(n)
    ]


def best(fn: Callable[[], object], number: int) -> float:
    """Best seconds per call over :data:`REPEATS` rounds of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=REPEATS)) / number


def queue_costs(failures: list[Failure]) -> tuple[float, float]:
    def fair() -> None:
        queue = FailureQueue(capacity=500)
        for failure in failures:
            queue.put(failure)
        while queue.get_nowait() is not None:
            pass

    def plain() -> None:
        heap: list[tuple[int, int, Failure]] = []
        seq = itertools.count()
        for failure in failures:
            heapq.heappush(heap, (-int(failure.severity), next(seq), failure))
        while heap:
            heapq.heappop(heap)

    n = len(failures)
    return best(fair, 3) / n, best(plain, 3) / n


def analyse_costs(failures: list[Failure]) -> tuple[float, float]:
    context = RcaContext(at=AT, source_mode="hybrid")

    def rules() -> None:
        for failure in failures:
            analyse(failure, context, DEFAULT_RULES)

    def substrings() -> None:
        for failure in failures:
            text = failure.message.lower() + failure.kind
            if "timeout" in text:
                continue
            if "connection" in text:
                continue

    n = len(failures)
    return best(rules, 3) / n, best(substrings, 3) / n


async def runner_cost(failures: list[Failure], one_case: bool) -> float:
    async def fixed(case: object) -> str:
        return "done"

    async def passes(case: object) -> bool:
        return True

    strategy = CallableStrategy(
        "fix", frozenset(c.value for c in Category), fixed, passes, cooldown=0.0
    )
    recorder = MemoryCaseRecorder()
    runner = RcaRunner(
        recorder,
        _Context(),
        _Escalator(),
        clock=SystemClock(),
        strategies=[strategy],
        settings=RcaSettings(epsilon=0.0, renotify=None),
    )
    await runner.start()
    started = time.perf_counter()
    if one_case:  # no strategy: the case escalates and stays open, failures attach to it
        runner.strategies = PerTenant("healing strategy")
    for failure in failures:
        runner.report(failure)
        await asyncio.sleep(0)
    await settle()  # every task waits again: the queue is empty and each case is done
    assert not len(runner.queue)
    assert not runner.busy
    elapsed = time.perf_counter() - started
    await runner.stop()
    return elapsed / len(failures)


async def recorder_cost(n: int) -> float:
    recorder = MemoryCaseRecorder()
    failure = stream(1)[0]
    context = RcaContext(at=AT)
    analysis = analyse(failure, context, DEFAULT_RULES)
    case = RcaCase.open(failure, analysis, context, at=AT)
    case.collect_events()

    def step(found: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, None]:
        return case, None

    started = time.perf_counter()
    for _ in range(n):
        await recorder.change(case.id, step)
    return (time.perf_counter() - started) / n


class _Context:
    async def gather(self, failure: Failure) -> RcaContext:
        return RcaContext(at=failure.at)


class _Escalator:
    async def escalate(self, case: object) -> str:
        return "log"


def main() -> None:
    logging.getLogger("eventcenter.healing.rca").setLevel(logging.CRITICAL)  # a line per case
    failures = stream(2_000)
    fair, plain = queue_costs(failures)
    rules, substrings = analyse_costs(failures)
    flood = [
        Failure("acme", "orders", Component.SOURCE_PUSH, "timeout", f"t{i}", AT + i)
        for i in range(2_000)
    ]
    attach = min(asyncio.run(runner_cost(flood, one_case=True)) for _ in range(3))
    distinct = [
        Failure("acme", f"s{i}", Component.SOURCE_PUSH, "timeout", "t", AT + i) for i in range(500)
    ]
    healed = min(asyncio.run(runner_cost(distinct, one_case=False)) for _ in range(3))
    bare = min(asyncio.run(recorder_cost(2_000)) for _ in range(3))
    rows = [
        ("FailureQueue put + get", fair, "heapq push + pop", plain),
        ("analyse, 10 built-in rules", rules, "substring classifier", substrings),
        ("runner: flood into one escalated case", attach, "bare recorder change", bare),
        ("runner: case opened, healed, closed", healed, "bare recorder change", bare),
    ]
    print(f"{'operation':40} {'us/failure':>11}   {'baseline':24} {'us':>8} {'ratio':>7}")
    for name, cost, baseline, base in rows:
        print(f"{name:40} {cost * 1e6:11.2f}   {baseline:24} {base * 1e6:8.2f} {cost / base:7.1f}x")


if __name__ == "__main__":
    main()
