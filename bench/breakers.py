"""What a circuit breaker adds to each call, ours next to pybreaker's, measured in the same run.

Run from the repository root::

    .venv/bin/python -m bench.breakers

Each row is nanoseconds per call (the best of several rounds in which all rows take turns, each
run long enough to time well); the overhead is the row minus the bare call of its kind. The goal
is an overhead of at most twice pybreaker's for a sync no-op call through a closed breaker (the
path every protected call takes while all is well). Also shown:

- the same call through our breaker with a time window (100 one-second buckets);
- a call refused by an open breaker (ours raises ``CallNotPermitted``, pybreaker
  ``CircuitBreakerError``): what a caller pays while a dependency is down;
- the async path, ``await breaker.acall(coroutine)``, against a bare ``await``, without and
  with a per-call timeout. pybreaker has no asyncio path to compare with (its ``call_async``
  needs tornado), so these rows have no ratio.

Our breaker runs on its defaults (a count window of 100 calls) with no recorder; pybreaker on
its defaults (in-memory storage, no listeners). Figures move by several percent between runs on
a shared machine: compare the rows of one run with each other.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import timeit
from collections.abc import Callable

import pybreaker

from eventcenter.domain.breaker import BreakerConfig
from eventcenter.domain.errors import CallNotPermitted
from eventcenter.healing.breaker import CircuitBreaker

REPEATS = 9
#: Each round runs each operation for about this long.
TARGET_SECONDS = 0.02
#: The overhead ours may have, as a multiple of pybreaker's.
GOAL = 2.0

Operation = Callable[[], object]


def noop() -> None:
    return None


def fail() -> None:
    raise RuntimeError("down")


async def anoop() -> None:
    return None


def calibrated(operation: Operation) -> int:
    """How many calls take about TARGET_SECONDS (after one warm-up call)."""
    operation()
    number = 1
    while True:
        elapsed = timeit.Timer(operation).timeit(number)
        if elapsed >= TARGET_SECONDS / 10 or number >= 10_000_000:
            return max(1, int(number * TARGET_SECONDS / max(elapsed, 1e-9)))
        number *= 10


def best_times(operations: list[Operation]) -> list[float]:
    """ns per call of each operation: the best of REPEATS interleaved rounds."""
    numbers = [calibrated(operation) for operation in operations]
    best = [float("inf")] * len(operations)
    for _ in range(REPEATS):
        for index, (operation, number) in enumerate(zip(operations, numbers, strict=True)):
            seconds = timeit.Timer(operation).timeit(number)
            best[index] = min(best[index], seconds / number * 1e9)
    return best


def refused(call: Callable[[], object], error: type[BaseException]) -> Operation:
    def operation() -> None:
        try:  # noqa: SIM105 (contextlib.suppress would add its own cost to both rows)
            call()
        except error:
            pass

    return operation


def sync_rows() -> list[tuple[str, Operation]]:
    ours = CircuitBreaker("bench")
    ours_timed = CircuitBreaker("bench-time", BreakerConfig(window="time", window_size=100))
    theirs = pybreaker.CircuitBreaker()
    ours_open = CircuitBreaker("bench-open", BreakerConfig(window_size=1, wait_in_open=600.0))
    refused(lambda: ours_open.call(fail), RuntimeError)()  # one failure opens it for 10 min
    theirs_open = pybreaker.CircuitBreaker(reset_timeout=3600)
    theirs_open.open()
    return [
        ("bare call noop()", noop),
        ("ours: breaker.call(noop), closed", lambda: ours.call(noop)),
        ("pybreaker: breaker.call(noop), closed", lambda: theirs.call(noop)),
        ("ours: closed, a 100-second time window", lambda: ours_timed.call(noop)),
        ("ours: refused, open", refused(lambda: ours_open.call(noop), CallNotPermitted)),
        (
            "pybreaker: refused, open",
            refused(lambda: theirs_open.call(noop), pybreaker.CircuitBreakerError),
        ),
    ]


def async_rows(loop: asyncio.AbstractEventLoop) -> list[tuple[str, Operation]]:
    """Each operation runs a batch of awaits in one ``run_until_complete`` (its cost is the
    same for every row, and taken out with the bare row)."""
    batch = 1_000
    ours = CircuitBreaker("bench-async")
    timed = CircuitBreaker("bench-timeout", timeout=60.0)

    async def bare() -> None:
        for _ in range(batch):
            await anoop()

    async def through(breaker: CircuitBreaker) -> None:
        for _ in range(batch):
            await breaker.acall(anoop)

    def run(make: Callable[[], object]) -> Operation:
        return lambda: loop.run_until_complete(make())  # type: ignore[arg-type]

    return [
        ("bare await anoop() (x1000)", run(bare)),
        ("ours: await breaker.acall(anoop) (x1000)", run(lambda: through(ours))),
        ("ours: ... with a per-call timeout (x1000)", run(lambda: through(timed))),
    ]


def main() -> int:
    logging.getLogger("eventcenter.healing").setLevel(logging.ERROR)  # the bench's own opening
    loop = asyncio.new_event_loop()
    try:
        sync = sync_rows()
        asynchronous = async_rows(loop)
        times = best_times([op for _, op in sync] + [op for _, op in asynchronous])
    finally:
        loop.close()
    sync_times, async_times = times[: len(sync)], [t / 1_000 for t in times[len(sync) :]]
    bare = sync_times[0]
    print(f"circuit breaker cost, ns per call (best of {REPEATS} interleaved rounds)")
    print(f"{'':44}{'per call':>10}{'overhead':>10}")
    for (label, _), figure in zip(sync, sync_times, strict=True):
        extra = "" if label.startswith("bare") else f"{figure - bare:10.0f}"
        print(f"{label:44}{figure:10.0f}{extra}")
    bare_async = async_times[0]
    for (label, _), figure in zip(asynchronous, async_times, strict=True):
        extra = "" if label.startswith("bare") else f"{figure - bare_async:10.0f}"
        print(f"{label.replace(' (x1000)', ''):44}{figure:10.0f}{extra}")

    ours, theirs = sync_times[1] - bare, sync_times[2] - bare
    ratio = ours / theirs
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(
        f"\nclosed sync call: ours adds {ours:.0f} ns, pybreaker {theirs:.0f} ns:"
        f" ratio {ratio:.2f} ({verdict} the goal of <= {GOAL:g}x)"
    )
    refusal = (sync_times[4] - bare) / (sync_times[5] - bare)
    print(f"refused call (open): ratio {refusal:.2f}")
    print("async: pybreaker has no asyncio path (its call_async needs tornado): no ratio")
    sys.stdout.flush()
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
