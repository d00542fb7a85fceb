"""A push path that flaps every second for 10 minutes, run by the real manager on a fake clock.

The policy's own test (tests/unit/test_hysteresis.py) feeds it outcomes directly. Here the
outcomes come from the engines: the push path works for one second (a message every 0.1 s) and
fails the next (every connection refused), the event engine backs off and reconnects, the
manager feeds what happens to the policy, switches modes (starting and stopping polling) and
records each decision in the source's log. What the log shows must agree with the bound the
configuration promises (:meth:`HysteresisConfig.max_switches`), and the damping must work as
designed: the thresholds rise while the source flaps and come back down once it is stable.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from eventcenter.domain.source_modes import EVENT_ONLY
from eventcenter.domain.sources import Received, SourceItem
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.manager import SourceManager
from eventcenter.sources.source import DataSource
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakePoll,
    FakeSource,
    MemoryRecorder,
    MemorySink,
    connection_lost,
)

START = 1_000_000.0
FLAPPING_S = 600.0
UP_EVERY_S = 0.1  # a message while the path works and the source flaps
STABLE_EVERY_S = 5.0  # a message once it is stable (well inside event_timeout)


class FlappingPushPath:
    """Works in even seconds after ``START`` and fails in odd ones, for ``FLAPPING_S``
    seconds; stable afterwards. Each receive hands out one new item."""

    describe = "flapping push path"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent = 0

    def down(self) -> bool:
        elapsed = self.clock.now() - START
        return elapsed < FLAPPING_S and int(elapsed) % 2 == 1

    async def open(self, position: str | None) -> None:
        if self.down():
            raise connection_lost("connection refused (flapping)")

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        if self.down():
            raise connection_lost("connection reset (flapping)")
        flapping = self.clock.now() - START < FLAPPING_S
        await self.clock.sleep(UP_EVERY_S if flapping else STABLE_EVERY_S)
        if self.down():
            raise connection_lost("connection reset (flapping)")
        self.sent += 1
        item = SourceItem(key=f"k-{self.sent % 10}", version=str(self.sent))
        return [Received(position=str(self.sent), item=item)]

    async def ack(self, received: Sequence[Received]) -> None:
        return None

    async def aclose(self) -> None:
        return None


def decisions(recorder: MemoryRecorder) -> list[tuple[str, Any]]:
    """The source log's events: (name, event), in order."""
    log = recorder.logs[(TENANT, SOURCE)]
    return [(type(e).__name__, e) for e in log.pending_events]


async def test_flapping_every_second_for_ten_minutes_stays_within_the_bound_and_damps() -> None:
    clock = FakeClock(START)
    sink, recorder = MemorySink(), MemoryRecorder()
    push = FlappingPushPath(clock)
    spec = DataSource(tenant=TENANT, name=SOURCE, events=push, poll=FakePoll(FakeSource()))
    config = spec.hysteresis  # the defaults of the issue
    manager = SourceManager(sink, recorder, clock=clock, wall=clock.now, rng=random.Random(7))
    runner = manager.register(spec)
    await manager.start()
    try:
        for _ in range(int(FLAPPING_S)):
            await clock.advance(1.0)
        flapped = decisions(recorder)
        switches = [e for name, e in flapped if name == "ModeSwitched"]
        raised = [e for name, e in flapped if name == "ThresholdRaised"]
        bound = config.max_switches(FLAPPING_S)

        assert len(switches) <= bound, f"{len(switches)} switches in 10 minutes, bound {bound}"
        assert len(switches) >= config.flap_switches, "the push path never made it flap"
        assert raised, "flapping did not raise the thresholds"
        assert [e.level for e in raised] == list(range(1, len(raised) + 1))
        assert runner.policy is not None
        assert runner.policy.failure_threshold > config.failure_threshold

        # Stable from now on: each quiet decay_period brings the thresholds one step down.
        stable_for = (config.max_level + 2) * config.decay_period
        for _ in range(int(stable_for / 60)):
            await clock.advance(60.0)
        settled = decisions(recorder)[len(flapped) :]
        decayed = [e for name, e in settled if name == "ThresholdDecayed"]
        late_switches = [e for name, e in settled if name == "ModeSwitched"]
    finally:
        await manager.stop()

    assert [e.level for e in decayed] == list(range(len(raised) - 1, -1, -1))
    assert all(e.at > raised[-1].at for e in decayed)
    assert (runner.policy.failure_threshold, runner.policy.success_threshold) == (
        config.failure_threshold,
        config.success_threshold,
    )
    assert runner.mode == EVENT_ONLY, "a stable push path brings the source back"
    assert len(late_switches) <= 2, "a stable push path only climbs back, one rung at a time"
    handed_out = {(f"k-{n % 10}", str(n)) for n in range(1, push.sent + 1)}
    assert sink.identities() == handed_out, "an item was lost across the switches"
    print(
        f"\nflapping every second for 10 minutes: {len(switches)} switches (bound {bound}),"
        f" thresholds raised to level {len(raised)}, decayed back in {len(decayed)} steps"
    )
