"""The hysteresis manager as a whole, under any interleaving of faults and restarts: every item
a source produced reaches the center, and each identity ``(tenant, source, key, version)`` is
admitted once.

Unlike tests/unit/test_sources_exactly_once.py, which drives the engines by hand, nothing here
decides modes but the real :class:`SourceManager`: its decider feeds the engines' outcomes to
the hysteresis policy, switches modes (starting and stopping polling, rolling back a mode whose
first poll fails), records every decision in the source's log, and resumes from that log when
it is rebuilt. The source's push path breaks, refuses connections, goes silent, hands messages
out again and recovers; its poll path fails; reconciliations run; the manager is stopped and a
new one is built on the same sink and recorder, all on a fake clock.

What must hold at the end, once the faults are over and time has passed: nothing is missing
(before any final reconciliation, which then finds nothing missing and converges), nothing was
acknowledged before it was durable, every decision was recorded, and the identities admitted
are exactly those produced. Reconciliation may admit the current version of a key under a
refreshed identity (``"3~2"``, see :mod:`eventcenter.domain.reconcile`) when a late older
version had become the center's record of the key; that one is compared by the version it
refreshes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID, POLLING_ONLY
from eventcenter.domain.sources import SourceError, SourceErrorKind
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.manager import POLLING_MODES, SourceManager, SourceRunner
from eventcenter.sources.outcomes import AdmissionFailed
from eventcenter.sources.source import DataSource
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakeListing,
    FakePoll,
    FakePushPath,
    FakeSource,
    MemoryRecorder,
    MemorySink,
    connection_lost,
)

KEYS = "abcd"
#: Small thresholds and short periods, so that a few dozen steps switch, flap and decay.
POLICY = {
    "failure_threshold": 2,
    "success_threshold": 3,
    "max_hysteresis": 5,
    "event_timeout": 10,
    "polling_interval": 20,
    "flap_window": 120,
    "flap_switches": 3,
    "cool_down": 30,
    "decay_period": 300,
    "reconciliation_interval": "1h",
    "batch": 3,
}
DRAIN_S = 120.0  # longer than the longest reconnect back-off (30 s) plus a receive

Op = tuple[str, object]

ops = st.one_of(
    st.tuples(st.just("produce"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=4)),
    st.tuples(st.just("push_outage"), st.integers(1, 6)),
    st.tuples(st.just("open_refused"), st.integers(1, 3)),
    st.tuples(st.just("silence"), st.none()),
    st.tuples(st.just("recover"), st.none()),
    st.tuples(st.just("redeliver"), st.integers(0, 100)),
    st.tuples(st.just("poll_outage"), st.integers(1, 4)),
    st.tuples(st.just("reconcile"), st.none()),
    st.tuples(st.just("restart"), st.none()),
    st.tuples(st.just("advance"), st.integers(1, 60)),
    st.tuples(st.just("trickle"), st.integers(1, 30)),
)


class RecordingFailures(logging.Handler):
    """Collects the manager's complaints that a decision could not be recorded: with an
    in-memory recorder that never refuses, each one is a decision the source log rejected."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "recording" in message:
            self.seen.append(message)


@contextlib.contextmanager
def recording_failures() -> Iterator[RecordingFailures]:
    handler = RecordingFailures()
    logger = logging.getLogger("eventcenter.sources")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@dataclass
class Run:
    """One source, its paths, the center's sink and recorder, and the manager running them."""

    seed: int
    clock: FakeClock = field(default_factory=lambda: FakeClock(1_000_000.0))
    source: FakeSource = field(default_factory=FakeSource)
    sink: MemorySink = field(default_factory=MemorySink)
    recorder: MemoryRecorder = field(default_factory=MemoryRecorder)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.push = FakePushPath(self.source, self.clock, self.sink)
        self.poll = FakePoll(self.source, page=4)
        self.listing = FakeListing(self.source)
        self.spec = DataSource(
            tenant=TENANT,
            name=SOURCE,
            events=self.push,
            poll=self.poll,
            reconcile=self.listing,
            **POLICY,  # type: ignore[arg-type]
        )
        self.manager: SourceManager | None = None

    @property
    def runner(self) -> SourceRunner:
        assert self.manager is not None
        return self.manager.runner(TENANT, SOURCE)

    async def start(self) -> None:
        """A new manager on the same sink and recorder: it resumes from the source's log."""
        rng = random.Random(self.seed * 1000 + self.restarts)
        self.manager = SourceManager(
            self.sink, self.recorder, clock=self.clock, wall=self.clock.now, rng=rng
        )
        self.manager.register(self.spec)
        await self.manager.start()

    async def stop(self) -> None:
        assert self.manager is not None
        await self.manager.stop()

    async def reconcile(self) -> None:
        reconciler = self.runner.reconciler
        assert reconciler is not None
        with contextlib.suppress(SourceError, AdmissionFailed):  # the next one compares again
            await reconciler.reconcile_once()

    async def apply(self, op: Op) -> None:
        name, arg = op
        push, poll = self.push, self.poll
        if name == "produce":
            assert isinstance(arg, list)
            for key in arg:
                self.source.change(key, n=len(self.source.log))
        elif name == "push_outage":
            push.receive_errors.extend(connection_lost() for _ in range(int(str(arg))))
        elif name == "open_refused":
            push.open_errors.extend(
                SourceError(SourceErrorKind.TIMEOUT, "no answer (test)")
                for _ in range(int(str(arg)))
            )
        elif name == "silence":
            push.muted = True
        elif name == "recover":
            self.heal_push()
        elif name == "redeliver":
            if push.acked:
                position = push.acked[int(str(arg)) % len(push.acked)]
                push.redeliver.append(self.source.log[int(position) - 1])
        elif name == "poll_outage":
            poll.errors.extend(connection_lost("poll endpoint down") for _ in range(int(str(arg))))
        elif name == "reconcile":
            await self.reconcile()
        elif name == "restart":
            await self.stop()
            self.restarts += 1
            await self.start()
        elif name == "advance":
            await self.clock.advance(float(str(arg)))
        elif name == "trickle":  # a busy source: one change every 2 s
            for n in range(int(str(arg))):
                self.source.change(KEYS[n % len(KEYS)], n=len(self.source.log))
                await self.clock.advance(2.0)
        await self.clock.advance(0.0)

    def heal_push(self) -> None:
        self.push.receive_errors.clear()
        self.push.open_errors.clear()
        self.push.muted = False

    def admitted(self) -> set[tuple[str, str]]:
        return self.sink.identities()


def refreshed_base(version: str) -> str:
    """The version a reconciliation's refreshed identity stands for (``"3~2"`` -> ``"3"``)."""
    return version.split("~", 1)[0]


async def scenario(steps: list[Op], seed: int) -> Run:
    run = Run(seed)
    with recording_failures() as failures:
        await run.start()
        for op in steps:
            await run.apply(op)

        # Every fault ends; the push path, running in every mode, catches up on its own.
        run.heal_push()
        run.poll.errors.clear()
        await run.clock.advance(DRAIN_S)
        produced = run.source.produced()
        missing = produced - run.admitted()
        assert missing == set(), f"lost after the faults ended: {sorted(missing)}"

        runner = run.runner
        mode = runner.mode
        assert mode in (EVENT_ONLY, HYBRID, POLLING_ONLY)
        assert runner.polling is not None
        assert runner.polling.running == (mode in POLLING_MODES), mode

        reconciler = runner.reconciler
        assert reconciler is not None
        final = await reconciler.reconcile_once()
        assert final.missing == 0
        again = await reconciler.reconcile_once()
        assert again.corrections == 0, "reconciliation did not converge"
        await run.clock.advance(0.0)
        await run.stop()

    assert failures.seen == [], "a decision was refused by the source's log"
    assert run.push.acked_early == [], "acknowledged before the item was durable"
    sink = run.sink
    plain = {
        identity[2:]
        for identity, admission in sink.accepted.items()
        if admission.correction is None
    }
    assert plain <= produced, f"admitted what nobody produced: {sorted(plain - produced)}"
    standing_for = {(key, refreshed_base(version)) for key, version in run.admitted()}
    assert standing_for == produced
    source_log = run.recorder.logs[(TENANT, SOURCE)]
    assert source_log.mode == runner.mode, "the log and the runner disagree on the mode"
    return run


# Interleavings that matter and that random search reaches only rarely.
SILENT_INTO_HYBRID_THEN_RESTARTED: list[Op] = [
    ("produce", ["a"]),
    ("advance", 5),
    ("silence", None),
    ("produce", ["b", "c"]),
    ("advance", 25),  # two silent timeouts: hybrid, polling fills the gap
    ("produce", ["a"]),
    ("restart", None),  # resumes in hybrid from the log
    ("produce", ["d"]),
    ("advance", 15),
    ("recover", None),
    ("trickle", 8),  # push proves itself: back to event_only
    ("produce", ["b"]),
]
FIRST_POLL_FAILS_THEN_RESTART_MID_SWITCH: list[Op] = [
    ("produce", ["a", "b"]),
    ("poll_outage", 1),
    ("push_outage", 6),
    ("advance", 3),  # two failures: hybrid, whose first poll fails: rolled back
    ("produce", ["a"]),
    ("advance", 4),
    ("restart", None),
    ("produce", ["c"]),
    ("advance", 20),
    ("reconcile", None),
]
FLAPPING_WITH_DUPLICATES: list[Op] = [
    ("trickle", 2),
    ("push_outage", 2),
    ("advance", 8),  # down to hybrid
    ("trickle", 4),  # and back
    ("redeliver", 0),
    ("push_outage", 2),
    ("advance", 8),
    ("trickle", 4),
    ("redeliver", 3),
    ("push_outage", 2),
    ("advance", 8),  # the third switch in the flap window: thresholds raised, cool-down
    ("restart", None),
    ("trickle", 10),
    ("push_outage", 3),
    ("poll_outage", 2),
    ("advance", 10),
    ("reconcile", None),
    ("trickle", 20),
]


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(ops, max_size=40), seed=st.integers(0, 2**16))
@example(steps=SILENT_INTO_HYBRID_THEN_RESTARTED, seed=1)
@example(steps=FIRST_POLL_FAILS_THEN_RESTART_MID_SWITCH, seed=2)
@example(steps=FLAPPING_WITH_DUPLICATES, seed=3)
def test_any_interleaving_of_faults_and_restarts_admits_every_produced_item_once(
    steps: list[Op], seed: int
) -> None:
    run = asyncio.run(scenario(steps, seed))
    # What the examples went through: pytest --hypothesis-show-statistics.
    source_log = run.recorder.logs[(TENANT, SOURCE)]
    event(f"switched: {source_log.switches > 0}")
    event(f"returned to push: {any(e['to'] == EVENT_ONLY for e in source_log.recent)}")
    event(f"rolled back: {source_log.rollbacks > 0}")
    event(f"threshold raised: {source_log.level > 0 or 'ThresholdRaised' in run.recorder.events()}")
    event(f"restarted: {run.restarts > 0}")
    event(f"refreshed by reconciliation: {run.admitted() != run.source.produced()}")
