"""Whatever happens to a source's paths, every item it produced is admitted exactly once.

A fake source produces changes, deletions and bad messages while its push path breaks,
acknowledgements fail, the store refuses or loses the answer to a commit, the server hands
messages out again, the stream is trimmed under a stored position, the server forgets its
consumer, the manager switches modes, the center restarts and reconciliations run. The sink
admits each identity ``(tenant, source, key, version)`` once, which is the center's real rule;
the engines must make sure nothing is lost on the way: every produced item reaches it, nothing
is acknowledged before it is durable, and after a final reconciliation the center holds exactly
what the source holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventcenter.domain.reconcile import ReconcileReport, item_digest
from eventcenter.domain.sources import SourceError, SourceErrorKind
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.event_engine import EventEngine
from eventcenter.sources.outcomes import AdmissionFailed
from eventcenter.sources.polling_engine import PollingEngine
from eventcenter.sources.reconciler import Reconciler
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakeListing,
    FakePoll,
    FakePushPath,
    FakeSource,
    MemorySink,
    Outcomes,
    connection_lost,
)

KEYS = "abcde"
MODES = ("event_only", "hybrid", "polling_only")

Op = tuple[str, object]

ops = st.one_of(
    st.tuples(st.just("change"), st.sampled_from(KEYS)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("bad"), st.none()),
    st.tuples(st.just("push_outage"), st.integers(1, 4)),
    st.tuples(st.just("open_refused"), st.integers(1, 3)),
    st.tuples(st.just("ack_fails"), st.none()),
    st.tuples(st.just("admit_fails"), st.sampled_from(["before", "after"])),
    st.tuples(st.just("redeliver"), st.integers(0, 60)),
    st.tuples(st.just("poll_outage"), st.integers(1, 3)),
    st.tuples(st.just("switch"), st.sampled_from(MODES)),
    st.tuples(st.just("poll_now"), st.none()),
    st.tuples(st.just("reconcile"), st.none()),
    st.tuples(st.just("restart"), st.none()),
    st.tuples(st.just("trim"), st.none()),
    st.tuples(st.just("forget_consumer"), st.none()),
    st.tuples(st.just("advance"), st.integers(0, 40)),
)


@dataclass
class World:
    """A source, its paths, the center's sink, and the engines a manager would run."""

    seed: int
    clock: FakeClock = field(default_factory=FakeClock)
    source: FakeSource = field(default_factory=FakeSource)
    sink: MemorySink = field(default_factory=MemorySink)
    mode: str = "event_only"
    push_gap_allowed: bool = False  # push alone may miss items: the stream lost some
    relists: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.path = FakePushPath(self.source, self.clock, self.sink)
        self.poll = FakePoll(self.source, page=4)
        self.listing = FakeListing(self.source)
        self.reports: list[ReconcileReport] = []
        self.reconciler = Reconciler(
            TENANT, SOURCE, self.listing, self.sink, self.clock, self.reports.append
        )
        self.push = self._push_engine()
        self.polling = self._polling_engine()

    def _push_engine(self) -> EventEngine:
        return EventEngine(
            TENANT,
            SOURCE,
            self.path,
            self.sink,
            self.clock,
            Outcomes(),
            on_position_lost=self._relist,
            batch=3,
            receive_timeout=5.0,
            rng=self.rng,
        )

    def _polling_engine(self) -> PollingEngine:
        return PollingEngine(
            TENANT,
            SOURCE,
            self.poll,
            self.sink,
            self.clock,
            Outcomes(),
            interval=15.0,
            min_interval=1.0,
            max_interval=60.0,
            rng=self.rng,
        )

    def _relist(self) -> None:
        self.relists.append(asyncio.create_task(self.reconcile()))

    async def reconcile(self) -> None:
        with contextlib.suppress(AdmissionFailed):  # the next reconciliation compares again
            await self.reconciler.reconcile_once()

    async def switch(self, mode: str) -> None:
        self.mode = mode
        if mode in ("event_only", "hybrid"):
            self.push.start()
        else:
            await self.push.stop()
        if mode in ("hybrid", "polling_only"):
            self.polling.start()
        else:
            await self.polling.stop()

    async def restart(self) -> None:
        await self.push.stop()
        await self.polling.stop()
        self.push = self._push_engine()
        self.polling = self._polling_engine()
        await self.switch(self.mode)

    async def apply(self, op: Op) -> None:
        name, arg = op
        if name == "change":
            self.source.change(str(arg), n=len(self.source.log))
        elif name == "delete":
            self.source.delete(str(arg))
        elif name == "bad":
            self.source.bad()
        elif name == "push_outage":
            self.path.receive_errors.extend(connection_lost() for _ in range(int(str(arg))))
        elif name == "open_refused":
            self.path.open_errors.extend(
                SourceError(SourceErrorKind.TIMEOUT, "no answer") for _ in range(int(str(arg)))
            )
        elif name == "ack_fails":
            self.path.ack_errors.append(connection_lost("ack lost"))
        elif name == "admit_fails":
            if arg == "before":
                self.sink.fail_before += 1
            else:
                self.sink.fail_after += 1
        elif name == "redeliver":
            handed_out = self.path.acked
            if handed_out:
                position = handed_out[int(str(arg)) % len(handed_out)]
                self.path.redeliver.append(self.source.log[int(position) - 1])
        elif name == "poll_outage":
            self.poll.errors.extend(
                SourceError(SourceErrorKind.RATE_LIMITED, "429", retry_after=3.0)
                for _ in range(int(str(arg)))
            )
        elif name == "switch":
            await self.switch(str(arg))
        elif name == "poll_now":
            self.polling.poll_now()
        elif name == "reconcile":
            await self.reconcile()
        elif name == "restart":
            await self.restart()
        elif name == "trim":
            self.source.trim()
            self.push_gap_allowed = True
        elif name == "forget_consumer":
            self.path.forget_consumer()
            if (TENANT, SOURCE, "push") not in self.sink.positions:
                self.push_gap_allowed = True  # nothing stored yet: the server decides
        elif name == "advance":
            await self.clock.advance(float(str(arg)))
        await self.clock.advance(0.0)

    def heal(self) -> None:
        self.path.open_errors.clear()
        self.path.receive_errors.clear()
        self.path.ack_errors.clear()
        self.poll.errors.clear()
        self.sink.fail_before = self.sink.fail_after = 0

    def delivered_everything(self) -> bool:
        return self.source.produced() <= self.sink.identities()


async def scenario(steps: list[Op], seed: int) -> None:
    world = World(seed)
    await world.switch("event_only")
    for op in steps:
        await world.apply(op)

    # Every fault ends; push catches up on its own from its stored position.
    world.heal()
    await world.switch("event_only")
    for _ in range(6):
        await world.clock.advance(31.0)  # longer than the longest back-off
    if not world.push_gap_allowed:
        by_push = world.sink.by_path.get("push", set())
        assert world.source.produced() <= by_push, "the push path lost items"

    # A trimmed stream leaves a gap only polling or reconciliation can fill.
    await world.switch("hybrid")
    for _ in range(4):
        world.polling.poll_now()
        await world.clock.advance(31.0)
    await asyncio.gather(*world.relists)
    await world.reconcile()
    final = await world.reconciler.reconcile_once()
    await world.push.stop()
    await world.polling.stop()

    sink, source = world.sink, world.source
    assert world.path.acked_early == [], "acknowledged before the item was durable"
    assert world.delivered_everything(), "an item was lost"
    produced = source.produced()
    invented = [
        identity
        for identity, admission in sink.accepted.items()
        if identity[2:] not in produced and admission.correction is None
    ]
    assert invented == [], "admitted an item nobody produced"
    bad = {m.position for m in source.log if m.item is None}
    assert {letter.position for letter in sink.dead_letters} == bad

    assert final.corrections == 0, "a second reconciliation still found differences"
    delivered = await sink.delivered(TENANT, SOURCE)
    for key, item in source.items.items():
        assert delivered[key].digest == item_digest(item)
    for key, held in delivered.items():
        if key not in source.items:
            assert held.deleted


# Interleavings that matter and that random search reaches only rarely.
PUSH_STOPPED_THEN_CONSUMER_FORGOTTEN: list[Op] = [
    ("change", "a"),
    ("switch", "polling_only"),
    ("change", "b"),
    ("change", "c"),
    ("forget_consumer", None),
    ("switch", "event_only"),
]
TRIMMED_UNDER_THE_STORED_POSITION: list[Op] = [
    ("change", "a"),
    ("switch", "polling_only"),
    ("change", "b"),
    ("delete", "a"),
    ("trim", None),
    ("change", "c"),
    ("restart", None),
    ("switch", "event_only"),
]
COMMITTED_WITHOUT_ANSWER_THEN_ACK_LOST: list[Op] = [
    ("admit_fails", "after"),
    ("ack_fails", None),
    ("change", "a"),
    ("bad", None),
    ("change", "b"),
    ("advance", 1),
    ("redeliver", 0),
    ("advance", 2),
]
RECONCILED_WHILE_PUSH_LAGGED: list[Op] = [
    ("push_outage", 1),
    ("change", "a"),
    ("change", "a"),
    ("change", "a"),
    ("reconcile", None),
    ("advance", 1),
    ("reconcile", None),
]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(ops, max_size=40), seed=st.integers(0, 2**16))
@example(steps=PUSH_STOPPED_THEN_CONSUMER_FORGOTTEN, seed=1)
@example(steps=TRIMMED_UNDER_THE_STORED_POSITION, seed=2)
@example(steps=COMMITTED_WITHOUT_ANSWER_THEN_ACK_LOST, seed=3)
@example(steps=RECONCILED_WHILE_PUSH_LAGGED, seed=4)
def test_every_produced_item_is_admitted_exactly_once_whatever_happens(
    steps: list[Op], seed: int
) -> None:
    asyncio.run(scenario(steps, seed))
