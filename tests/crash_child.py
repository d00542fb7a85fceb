"""A center in a process of its own, for crash tests (tests/integration/test_crash.py).

Run as ``python tests/crash_child.py --url URL --data-dir DIR --ledger DIR --run N --mode M``.

``--mode publish`` starts a center with two subscriptions whose patterns overlap (``all``:
``work.#``; ``orders``: ``work.orders.*``) and publishes a stream from several tasks at once
(single publishes, batches, idempotency keys, each key published twice) until the test kills
the process or ``--events`` are published. ``--mode drain`` publishes nothing: it recovers what
the store holds, waits until it is handled, republishes every accepted idempotency key (each
must return its first event's id and admit nothing), and stops.

What the process writes to the ledger directory, each line with one ``os.write`` on a file
opened for appending and fsync'ed before the next step (so a SIGKILL loses no line that was
written, and never half of one):

- ``accepted.log``: ``accepted <event id> <type> <tenant> <fail 0|1> <key or ->`` for every
  publish that returned;
- ``handled.log``: ``handled <event id> <subscription> <run>`` when a handler ended well;
- ``ready-<run>``: the center is built (imports done), ``started-<run>.json``: ``start()``
  returned (with the number of deliveries recovered), ``done-<run>.json`` (drain mode): what
  ``stop()`` reported and the ids the republished keys returned.

Every handler records one decision per delivery before anything else (so a crash can come
between the decision and the end of the delivery); events published with ``fail`` raise
PermanentFailure (dead letters), events with ``flaky`` fail their first attempt in each process
(retries). The process ends itself after ``--deadline`` seconds whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings, RecordingSettings
from eventcenter.domain.errors import PermanentFailure
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context

SUBSCRIPTIONS = {"all": "work.#", "orders": "work.orders.*"}
TYPES = ("work.orders.created", "work.misc.done", "work.orders.paid")
TENANTS = ("acme", "beta")


class Ledger:
    """Append-only line files: one write per line, fsync'ed before the caller goes on."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._handled = os.open(directory / "handled.log", flags, 0o644)
        self._accepted = os.open(directory / "accepted.log", flags, 0o644)

    def _append(self, fd: int, lines: list[str]) -> None:
        os.write(fd, "".join(f"{line}\n" for line in lines).encode())
        os.fsync(fd)

    def handled(self, event_id: str, subscription: str, run: int) -> None:
        self._append(self._handled, [f"handled {event_id} {subscription} {run}"])

    def accepted(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        lines = []
        for event_id, item in rows:
            fail = int(bool(item["payload"].get("fail")))
            key = item.get("key") or "-"
            lines.append(f"accepted {event_id} {item['type']} {item['tenant']} {fail} {key}")
        self._append(self._accepted, lines)

    def note(self, name: str, content: dict[str, Any]) -> None:
        """A small JSON file, written whole and then renamed (never seen half-written)."""
        temporary = self.directory / f".{name}.tmp"
        temporary.write_text(json.dumps(content))
        os.replace(temporary, self.directory / name)


def build_center(args: argparse.Namespace) -> EventCenter:
    settings = CenterSettings(
        database_url=args.url,
        data_dir=args.data_dir,
        standby_wait=15.0,  # PostgreSQL may take a moment to notice the killed session
        processor=ProcessorSettings(
            workers=8,
            memory_window=16,  # most of a lagging subscription's backlog waits in the store
            max_attempts=10,
            backoff_base=0.002,
            backoff_max=0.02,
            handler_timeout=10.0,
            shutdown_timeout=5.0,
        ),
        recording=RecordingSettings(snapshot_interval=20),
    )
    return EventCenter(settings, builtin_handlers=False)


def subscribe(center: EventCenter, ledger: Ledger, run: int, seed: int) -> None:
    failed_once: set[tuple[str, str]] = set()
    pace = random.Random(seed)

    def handler_for(name: str) -> Any:
        async def handle(event: Event, ctx: Context) -> None:
            await ctx.decide("work.seen", f"{name} saw event {event.payload['n']}", event)
            if event.payload.get("fail"):
                raise PermanentFailure("this event is published to fail")
            if event.payload.get("flaky") and (str(event.id), name) not in failed_once:
                failed_once.add((str(event.id), name))
                raise RuntimeError("flaky: the first attempt in each process fails")
            if pace.random() < 0.3:
                await asyncio.sleep(0.001)
            ledger.handled(str(event.id), name, run)

        return handle

    for name, pattern in SUBSCRIPTIONS.items():
        center.processor.subscribe(pattern, handler_for(name), name=name, max_in_flight=4)


def item(run: int, n: int, rng: random.Random, key: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"n": f"{run}-{n}"}
    if n % 17 == 5:
        payload["fail"] = True
    elif n % 7 == 3:
        payload["flaky"] = True
    built: dict[str, Any] = {
        "type": TYPES[n % len(TYPES)],
        "payload": payload,
        "tenant": TENANTS[rng.randrange(len(TENANTS))],
        "priority": rng.choice(("HIGH", "NORMAL", "NORMAL", "LOW")),
    }
    if key is not None:
        built["key"] = key
    return built


class Stream:
    """Publishers sharing one event counter, so every event of a run has its own number."""

    def __init__(self, center: EventCenter, ledger: Ledger, run: int, seed: int, events: int):
        self.center = center
        self.ledger = ledger
        self.run = run
        self.rng = random.Random(seed)
        self.events = events
        self.next = 0

    def take(self, count: int = 1) -> list[int]:
        numbers = list(range(self.next, min(self.next + count, self.events)))
        self.next += len(numbers)
        return numbers

    async def singles(self) -> None:
        while numbers := self.take():
            one = item(self.run, numbers[0], self.rng)
            fields = {k: v for k, v in one.items() if k not in ("type", "payload")}
            event_id = await self.center.publish(one["type"], one["payload"], **fields)
            self.ledger.accepted([(event_id, one)])

    async def batches(self) -> None:
        while numbers := self.take(5):
            items = [item(self.run, n, self.rng) for n in numbers]
            ids = await self.center.publish_batch(items)
            self.ledger.accepted(list(zip(ids, items, strict=True)))

    async def keyed(self) -> None:
        while numbers := self.take():
            one = item(self.run, numbers[0], self.rng, key=f"key-{self.run}-{numbers[0]}")
            fields = {k: v for k, v in one.items() if k not in ("type", "payload")}
            # The same key twice at once: both calls return the first event's id.
            ids = await asyncio.gather(
                self.center.publish(one["type"], one["payload"], **fields),
                self.center.publish(one["type"], one["payload"], **fields),
            )
            self.ledger.accepted([(event_id, one) for event_id in ids])

    async def run_all(self) -> None:
        await asyncio.gather(self.singles(), self.singles(), self.batches(), self.keyed())


async def republish_keys(center: EventCenter, ledger_dir: Path) -> dict[str, list[str]]:
    """Publish every accepted key again: the store must know each one (returned: ids)."""
    keyed: dict[str, tuple[str, str, str]] = {}
    for line in (ledger_dir / "accepted.log").read_text().splitlines():
        _, event_id, type_, tenant, _, key = line.split(" ")
        if key != "-":
            keyed[key] = (event_id, type_, tenant)
    returned: dict[str, list[str]] = {}
    for key, (event_id, type_, tenant) in keyed.items():
        again = await center.publish(type_, {"n": "again"}, tenant=tenant, key=key)
        returned[key] = [event_id, again]
    return returned


async def main(args: argparse.Namespace) -> None:
    ledger = Ledger(args.ledger)
    center = build_center(args)
    subscribe(center, ledger, args.run, args.seed)
    ledger.note(f"ready-{args.run}", {"pid": os.getpid()})
    await center.start()
    recovered = center.processor.queue_depths()["redelivered_at_start"]
    ledger.note(f"started-{args.run}.json", {"redelivered_at_start": recovered})
    if args.mode == "publish":
        await Stream(center, ledger, args.run, args.seed, args.events).run_all()
        await center.processor.join()
        await asyncio.Event().wait()  # the test kills this process
        return
    await center.processor.join()
    keys = await republish_keys(center, args.ledger)
    await center.processor.join()
    report = await center.stop()
    ledger.note(
        f"done-{args.run}.json",
        {
            "left_in_store": report.left_in_store,
            "clean": report.clean,
            "unrecorded": len(center.processor.unrecorded_dead_letters()),
            "keys": keys,
        },
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--mode", choices=("publish", "drain"), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--deadline", type=float, default=60.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    asyncio.run(asyncio.wait_for(main(arguments), arguments.deadline))
