"""A real EventCenter on a real store whose data source runs on a fake clock.

The source is built from tests/unit/source_fakes.py (a change log, a push path and a poll path
over it with scripted failures, a listing), so a test forces outages, recoveries and failed
starts at will. The center's engines sleep on the FakeClock and its decisions are stamped with
the fake time; the store writer is a real thread, so after each step of fake time
:meth:`FakeTimeCenter.settled` waits, by round trips through the writer (never by sleeping),
until what the step set off is committed.

:func:`exercise` is one scripted life of a source: it delivers, falls back to hybrid on push
failures, comes back on push successes, has a switch rolled back because the first poll failed
(the third switch in the flap window raises the thresholds), then stays quiet until the
thresholds decay; a listing reconciles it now and then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventcenter.center.app import EventCenter
from eventcenter.center.healing import HealingSettings
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID
from eventcenter.sources.clock import FakeClock, settle
from eventcenter.sources.manager import SourceRunner
from eventcenter.sources.source import DataSource
from eventcenter.storage.writer import FlushCommand
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakeListing,
    FakePoll,
    FakePushPath,
    FakeSource,
    MemorySink,
    connection_lost,
)

START = 1_700_000_000.0
"""Fake epoch seconds the first center starts at (2023-11-14 22:13:20 UTC)."""

#: The policy of the exercised source: three switches within the flap window are flapping.
POLICY: dict[str, Any] = {
    "event_timeout": 30,
    "polling_interval": 60,
    "reconciliation_interval": 90,
    "flap_switches": 3,
    "cool_down": 20,
    "decay_period": 120,
}

#: The same policy as a [[sources]] table of a config file.
POLICY_TOML = """
event_timeout = "30s"
polling_interval = "1m"
reconciliation_interval = "90s"
flap_switches = 3
cool_down = "20s"
decay_period = "2m"
"""


def source_table(**changes: Any) -> str:
    """A config file declaring the exercised source (webhook and HTTP paths that are never
    opened: simulate only reads its hysteresis settings), ``changes`` overriding the policy."""
    policy = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in changes.items())
    kept = "".join(
        line + "\n"
        for line in POLICY_TOML.strip().splitlines()
        if line.split(" = ")[0] not in changes
    )
    return (
        f'[[sources]]\ntenant = "{TENANT}"\nname = "{SOURCE}"\n'
        'events = { kind = "webhook" }\n'
        'poll = { kind = "http_poll", url = "http://127.0.0.1:9/orders?since={cursor}" }\n'
        f"{kept}{policy}"
    )


def center_settings(url: str, tmp_path: Path) -> CenterSettings:
    """Settings of the scripted center: healing is off, so the switches are the policy's alone
    (a healing strategy such as force_polling would add switches the script did not make, at
    moments that depend on the scheduling)."""
    return CenterSettings(
        database_url=url, data_dir=tmp_path / "data", healing=HealingSettings(enabled=False)
    )


class FakeTimeCenter:
    """One center with the fake source ``acme/orders``; ``async with`` starts and stops it."""

    def __init__(
        self,
        settings: CenterSettings,
        *,
        start: float = START,
        fake: FakeSource | None = None,
        **options: Any,
    ) -> None:
        self.clock = FakeClock(start)
        self.fake = fake if fake is not None else FakeSource()
        self.push = FakePushPath(self.fake, self.clock, MemorySink())
        self.poll = FakePoll(self.fake)
        self.listing = FakeListing(self.fake)
        self.center = EventCenter(
            settings,
            builtin_handlers=False,
            source_clock=self.clock,
            source_wall=self.clock.now,
        )
        self.center.sources.register(
            DataSource(
                tenant=TENANT,
                name=SOURCE,
                events=self.push,
                poll=self.poll,
                reconcile=self.listing,
                **{**POLICY, **options},
            )
        )

    async def __aenter__(self) -> FakeTimeCenter:
        await self.center.start()
        await self.settled()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.settled()
        await self.center.stop()

    @property
    def runner(self) -> SourceRunner:
        return self.center.sources.runner(TENANT, SOURCE)

    async def settled(self) -> None:
        """Wait until everything set off so far is committed: round trips through the writer
        until two in a row commit nothing but themselves (a task woken by one commit gets
        to queue its next write before the second)."""
        writer = self.center.writer
        quiet = 0
        for _ in range(1000):
            before = writer.commands
            await writer.submit(FlushCommand())
            await settle()
            quiet = quiet + 1 if writer.commands == before + 1 else 0
            if quiet == 2:
                return
        raise AssertionError("the center kept writing for 1000 round trips")

    async def run(self, seconds: float, step: float = 0.5) -> None:
        """Advance the fake time by ``seconds`` in steps, letting the center settle in between."""
        elapsed = 0.0
        while elapsed < seconds:
            await self.clock.advance(step)
            await self.settled()
            elapsed += step

    async def deliver(self, count: int, every: float = 5.0, prefix: str = "o") -> None:
        """``count`` items, one per ``every`` seconds (the push path keeps answering)."""
        for n in range(count):
            self.fake.change(f"{prefix}-{n}")
            await self.run(every)


async def exercise(w: FakeTimeCenter) -> None:
    """The scripted life of the module docstring; asserts each mode it reaches."""
    await w.deliver(3)
    assert w.runner.mode == EVENT_ONLY

    w.push.receive_errors.extend([connection_lost()] * 3)  # push fails: hybrid
    await w.run(10)
    assert w.runner.mode == HYBRID, w.runner.recent

    await w.deliver(5, prefix="back")  # five push batches: event_only again
    assert w.runner.mode == EVENT_ONLY, w.runner.recent

    w.poll.errors.append(connection_lost("poll refused (test)"))  # the first poll fails
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(10)
    assert w.runner.mode == EVENT_ONLY, "the switch to hybrid was rolled back"

    await w.deliver(30, prefix="calm")  # 150 s without a switch: the thresholds decay
