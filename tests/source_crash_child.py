"""A center with one data source in a process of its own, for a crash test
(tests/integration/test_source_crash.py).

Run as ``python tests/source_crash_child.py --url URL --data-dir DIR --ledger DIR --run N
--redis-url URL --stream NAME --poll-url URL``.

The center runs the source ``acme/orders``: its push path is the Redis stream ``--stream``
(consumer group ``eventcenter``, consumer ``child``: every run is the same consumer, as a
restarted service would be), read through ``--redis-url`` (the test puts a proxy there that it
cuts to make the push path fail); its poll path is ``--poll-url``, an HTTP feed of the same
items (``?since=<cursor>``). Thresholds are low and polling quick so that a switch takes about a
second; flapping damping is kept out of the way (it is tested on its own).

What the process writes to the ledger directory:

- ``handled.log``: ``handled <event id> <key> <version> <path> <run>`` for every item event a
  handler saw, one ``os.write`` per line on a file opened for appending, fsync'ed before the
  handler returns (a SIGKILL loses no line of a delivery that ended, and never half of one);
- ``ready-<run>``: the center is built (imports done); ``started-<run>``: ``start()`` returned;
  ``done-<run>.json``: SIGTERM made it stop gracefully, with what ``stop()`` reported.

The source's start shows on stderr as ``source acme/orders started in <mode>``, each switch as
``source acme/orders: <from> -> <to> (<reason>)``. The process ends itself after ``--deadline``
seconds whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.sources.connectors import http_poll, redis_stream
from eventcenter.sources.source import DataSource

TENANT, SOURCE = "acme", "orders"


class Ledger:
    """Append-only lines, one write each, fsync'ed before the caller goes on."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._handled = os.open(directory / "handled.log", flags, 0o644)

    def handled(self, event: Event, run: int) -> None:
        payload, path = event.payload, event.metadata.get("path", "-")
        line = f"handled {event.id} {payload['key']} {payload['version']} {path} {run}\n"
        os.write(self._handled, line.encode())
        os.fsync(self._handled)

    def note(self, name: str, content: dict[str, Any]) -> None:
        """A small JSON file, written whole and then renamed (never seen half-written)."""
        temporary = self.directory / f".{name}.tmp"
        temporary.write_text(json.dumps(content))
        os.replace(temporary, self.directory / name)


def build_center(args: argparse.Namespace, ledger: Ledger) -> EventCenter:
    settings = CenterSettings(
        database_url=args.url,
        data_dir=args.data_dir,
        standby_wait=15.0,  # PostgreSQL may take a moment to notice the killed session
        processor=ProcessorSettings(workers=8, handler_timeout=10.0, shutdown_timeout=5.0),
    )
    center = EventCenter(settings, builtin_handlers=False)

    async def handle(event: Event, ctx: Context) -> None:
        ledger.handled(event, args.run)

    center.processor.subscribe("source.item.*", handle, name="items")
    center.sources.register(
        DataSource(
            tenant=TENANT,
            name=SOURCE,
            events=redis_stream(
                args.stream,
                group="eventcenter",
                consumer="child",
                url=args.redis_url,
                connect_timeout=1.0,
                command_timeout=2.0,
            ),
            poll=http_poll(args.poll_url, timeout=2.0),
            failure_threshold=2,
            success_threshold=3,
            max_hysteresis=5,
            event_timeout="5s",
            polling_interval=0.5,
            flap_switches=20,
            cool_down="1s",
        )
    )
    return center


async def main(args: argparse.Namespace) -> None:
    ledger = Ledger(args.ledger)
    center = build_center(args, ledger)
    ledger.note(f"ready-{args.run}", {"pid": os.getpid()})
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await center.start()
    ledger.note(f"started-{args.run}", {"pid": os.getpid()})
    await stopping.wait()
    report = await center.stop()
    ledger.note(
        f"done-{args.run}.json", {"clean": report.clean, "left_in_store": report.left_in_store}
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--poll-url", required=True)
    parser.add_argument("--deadline", type=float, default=90.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("eventcenter.sources").setLevel(logging.INFO)  # "started in <mode>"
    asyncio.run(asyncio.wait_for(main(arguments), arguments.deadline))
