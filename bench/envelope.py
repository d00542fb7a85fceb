"""Per-event cost of the envelope boundary, next to baselines measured in the same run.

Run from the repository root::

    .venv/bin/python -m bench.envelope

Two payloads: a tiny one (what most processor events carry) and a nested one of about 10 KB
(depth 7, strings, numbers, booleans and nulls). For each operation the table shows
microseconds per call (the best of 9 rounds in which all operations take turns, each
run long enough to time well) and, under it,
what the same work costs done another way:

- ``Event.create``: the envelope's validation (id, time, every field, payload JSON checks).
  Baselines: one ``orjson.dumps`` of the payload (the floor: the checks serialise once), and
  the checks ``Event.create`` ran before (a depth walk in Python, then ``json.dumps``).
- ``parse_json`` of the event's own ``to_json()`` bytes. Baselines: ``orjson.loads`` of the
  body plus ``orjson.dumps`` of its payload, and ``Event.parse(json.loads(body))`` (what an
  HTTP layer would do without ``parse_json``; it cannot see repeated keys).
- ``fresh_copy``: a handler's own copy. Baselines: ``copy.deepcopy`` of payload and metadata,
  and the bare orjson round trip ``fresh_copy`` is built on.
- ``to_json``. Baseline: ``json.dumps(to_dict())``.
- A new event id: ``new_event_id()`` (UUIDv7) next to ``uuid.uuid4()``.

It takes a few seconds. Figures are wall-clock and move by several percent between runs on a
shared machine: compare the rows of one run with each other.
"""

from __future__ import annotations

import copy
import json
import sys
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from eventcenter.domain.event import Event, new_event_id, parse_json

REPEATS = 9
#: Each round runs each operation for about this long.
TARGET_SECONDS = 0.01

TINY: dict[str, Any] = {"seq": 1, "service": "api"}


def nested_payload() -> dict[str, Any]:
    """About 10 KB of compact JSON, seven levels deep, with every kind of JSON value."""
    orders = [
        {
            "id": f"order-{n:04d}",
            "total": {"amount": n * 10.5, "currency": "EUR", "discount": None},
            "lines": [
                {"sku": f"sku-{n}-{k}", "qty": k + 1, "tags": ["gift", {"wrapped": k % 2 == 0}]}
                for k in range(2)
            ],
            "note": "deliver to the back door: ring twice [urgent]",
        }
        for n in range(38)
    ]
    return {"customer": {"id": 42, "vip": True}, "orders": orders}


def previous_checks(value: dict[str, Any], limit: int = 16) -> int:
    """What ``Event.create`` checked before orjson: a depth walk in Python, then json.dumps."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            break
        stack.extend((child, level + 1) for child in children)
    return len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())


Operation = Callable[[], object]


def calibrated(operation: Operation) -> int:
    """How many calls take about TARGET_SECONDS (after one warm-up call)."""
    operation()
    number = 1
    while True:
        elapsed = timeit.Timer(operation).timeit(number)
        if elapsed >= TARGET_SECONDS / 10 or number >= 1_000_000:
            return max(1, int(number * TARGET_SECONDS / max(elapsed, 1e-9)))
        number *= 10


def best_times(operations: list[Operation]) -> list[float]:
    """µs per call of each operation: the best of REPEATS rounds, the operations interleaved in
    each round, so that a burst of load from elsewhere does not fall on one of them only."""
    numbers = [calibrated(operation) for operation in operations]
    best = [float("inf")] * len(operations)
    for _ in range(REPEATS):
        for index, (operation, number) in enumerate(zip(operations, numbers, strict=True)):
            seconds = timeit.Timer(operation).timeit(number)
            best[index] = min(best[index], seconds / number * 1e6)
    return best


def rows(payloads: dict[str, dict[str, Any]]) -> list[tuple[str, list[Operation]]]:
    """(label, one operation per payload) for every operation and baseline, in table order."""
    events = {name: Event.create("bench.tick", p, tenant="acme") for name, p in payloads.items()}
    bodies = {name: event.to_json() for name, event in events.items()}

    def each(make: Callable[[str], Operation]) -> list[Operation]:
        return [make(name) for name in payloads]

    return [
        (
            "Event.create(type, payload, tenant=...)",
            each(lambda n: lambda: Event.create("bench.tick", payloads[n], tenant="acme")),
        ),
        ("  baseline: orjson.dumps(payload)", each(lambda n: lambda: orjson.dumps(payloads[n]))),
        (
            "  baseline: depth walk + json.dumps (before)",
            each(lambda n: lambda: previous_checks(payloads[n])),
        ),
        ("parse_json(body)", each(lambda n: lambda: parse_json(bodies[n]))),
        (
            "  baseline: orjson.loads(body) + dumps(payload)",
            each(lambda n: lambda: orjson.dumps(orjson.loads(bodies[n])["payload"])),
        ),
        (
            "  baseline: Event.parse(json.loads(body))",
            each(lambda n: lambda: Event.parse(json.loads(bodies[n]))),
        ),
        ("event.fresh_copy()", each(lambda n: events[n].fresh_copy)),
        (
            "  baseline: copy.deepcopy(payload, metadata)",
            each(lambda n: lambda: copy.deepcopy((events[n].payload, events[n].metadata))),
        ),
        (
            "  baseline: orjson.loads(orjson.dumps(payload))",
            each(lambda n: lambda: orjson.loads(orjson.dumps(events[n].payload))),
        ),
        ("event.to_json()", each(lambda n: events[n].to_json)),
        (
            "  baseline: json.dumps(event.to_dict())",
            each(lambda n: lambda: json.dumps(events[n].to_dict(), separators=(",", ":"))),
        ),
        ("new_event_id() (UUIDv7, uuid-utils)", [new_event_id]),
        ("  baseline: uuid.uuid4()", [uuid.uuid4]),
    ]


def main() -> None:
    payloads = {"tiny": TINY, "10 KB": nested_payload()}
    sizes = {name: len(orjson.dumps(p)) for name, p in payloads.items()}
    table = rows(payloads)
    times = iter(best_times([operation for _, operations in table for operation in operations]))
    header = "  ".join(f"{name} ({size:,} B)".rjust(16) for name, size in sizes.items())
    print(f"envelope cost, µs per call (best of {REPEATS} interleaved rounds)")
    print(f"{'':48}{header}")
    for label, operations in table:
        figures = [next(times) for _ in operations]
        print(f"{label:48}" + "  ".join(f"{figure:16.2f}" for figure in figures))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
