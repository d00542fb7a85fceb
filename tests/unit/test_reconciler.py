"""The reconciler: lists, finds exactly what is missing, changed or deleted, and corrects it."""

from __future__ import annotations

import asyncio

import pytest

from eventcenter.domain.errors import ConfigurationError, StoreUnavailable
from eventcenter.domain.reconcile import ReconcileReport
from eventcenter.domain.sources import Received, SourceError, SourceErrorKind, SourceItem
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.event_engine import EventEngine
from eventcenter.sources.outcomes import AdmissionFailed
from eventcenter.sources.reconciler import Reconciler
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakeListing,
    FakePushPath,
    FakeSource,
    FixedJitter,
    MemorySink,
    Outcomes,
    connection_lost,
)


class Rig:
    def __init__(self, *, chunk: int = 500) -> None:
        self.clock = FakeClock()
        self.source = FakeSource()
        self.sink = MemorySink()
        self.listing = FakeListing(self.source)
        self.reports: list[ReconcileReport] = []
        self.outcomes = Outcomes()
        self.reconciler = Reconciler(
            TENANT,
            SOURCE,
            self.listing,
            self.sink,
            self.clock,
            self.reports.append,
            on_outcome=self.outcomes,
            chunk=chunk,
            rng=FixedJitter(0.0),
        )

    async def deliver(self, *items: SourceItem) -> None:
        """What the live paths delivered earlier."""
        received = [Received(position=str(n), item=item) for n, item in enumerate(items)]
        await self.sink.admit(TENANT, SOURCE, "push", received, None)


async def test_missing_changed_and_deleted_items_are_corrected_exactly() -> None:
    rig = Rig()
    same = rig.source.change("same")
    stale = rig.source.change("changed")
    gone = rig.source.change("gone")
    await rig.deliver(same, stale, gone)
    rig.source.change("changed", total=2)
    rig.source.delete("gone")
    rig.source.change("new")
    rig.sink.calls.clear()

    report = await rig.reconciler.reconcile_once()

    assert report == ReconcileReport(at=0.0, listed=3, missing=1, changed=1, deleted=1)
    corrections = {
        identity[2:]: admission.correction
        for identity, admission in rig.sink.accepted.items()
        if admission.path == "reconcile"
    }
    assert corrections == {
        ("new", "1"): "missing",
        ("changed", "2"): "changed",
        ("gone", "deleted@1"): "deleted",
    }
    assert rig.sink.accepted[(TENANT, SOURCE, "gone", "deleted@1")].item.deleted
    assert rig.reports == [report]
    assert rig.reconciler.last_report == report
    (outcome,) = rig.outcomes.seen
    assert (outcome.ok, outcome.path, outcome.items) == (True, "reconcile", 3)


async def test_a_second_run_finds_nothing() -> None:
    rig = Rig()
    await rig.deliver(rig.source.change("a"), rig.source.change("b"))
    rig.source.change("a", total=9)
    rig.source.delete("b")
    rig.source.change("c")
    await rig.reconciler.reconcile_once()
    calls = len(rig.sink.calls)

    again = await rig.reconciler.reconcile_once()

    assert (again.missing, again.changed, again.deleted) == (0, 0, 0)
    assert again.listed == 2
    assert len(rig.sink.calls) == calls  # nothing admitted


async def test_corrections_are_admitted_in_bounded_chunks() -> None:
    rig = Rig(chunk=2)
    for n in range(5):
        rig.source.change(f"k{n}")

    await rig.reconciler.reconcile_once()

    assert rig.sink.calls == [
        ("reconcile", 2, None, "missing"),
        ("reconcile", 2, None, "missing"),
        ("reconcile", 1, None, "missing"),
    ]


async def test_a_failed_listing_is_reported_and_raised() -> None:
    rig = Rig()
    rig.listing.errors.append(SourceError(SourceErrorKind.AUTH, "401 from the listing"))

    with pytest.raises(SourceError, match="401"):
        await rig.reconciler.reconcile_once()

    (failure,) = rig.outcomes.seen
    assert (failure.ok, failure.kind, failure.path) == (False, SourceErrorKind.AUTH, "reconcile")
    assert rig.reports == []


async def test_a_refused_admission_is_reported_and_raised_and_the_next_run_finishes() -> None:
    rig = Rig()
    rig.source.change("a")
    rig.sink.fail_before = 1

    with pytest.raises(AdmissionFailed):
        await rig.reconciler.reconcile_once()
    assert rig.outcomes.seen[0].kind is None

    report = await rig.reconciler.reconcile_once()
    assert report.missing == 1


async def test_runs_asked_for_together_do_not_overlap() -> None:
    rig = Rig()
    rig.source.change("a")

    first, second = await asyncio.gather(
        rig.reconciler.reconcile_once(), rig.reconciler.reconcile_once()
    )

    assert (first.missing, second.missing) == (1, 0)


async def test_it_runs_on_its_interval_and_backs_off_after_a_failure() -> None:
    rig = Rig()
    rig.listing.errors.extend([connection_lost(), connection_lost()])

    rig.reconciler.start(interval=900.0)
    await rig.clock.advance(1_000.0)
    await rig.reconciler.stop()

    assert [o.ok for o in rig.outcomes.seen] == [False, False, True, True]
    assert [o.at for o in rig.outcomes.seen] == pytest.approx([0.0, 0.8, 2.4, 902.4])
    assert not rig.reconciler.running


async def test_a_lost_push_position_is_filled_by_the_reconciliation_it_triggers() -> None:
    """The manager's wiring in small: the event engine's callback starts a reconciliation."""
    rig = Rig()
    for key in ("a", "b", "c"):
        rig.source.change(key)
    rig.sink.positions[(TENANT, SOURCE, "push")] = "1"
    await rig.deliver(rig.source.items["a"])
    rig.source.trim()  # b and c are gone from the stream
    rig.source.change("d")
    started: list[asyncio.Task[ReconcileReport]] = []

    def relist() -> None:
        started.append(asyncio.create_task(rig.reconciler.reconcile_once()))

    path = FakePushPath(rig.source, rig.clock, rig.sink)
    engine = EventEngine(
        TENANT, SOURCE, path, rig.sink, rig.clock, Outcomes(), on_position_lost=relist
    )
    engine.start()
    await rig.clock.advance(1.0)
    await engine.stop()

    (task,) = started
    assert (await task).missing >= 2
    assert rig.sink.identities() == rig.source.produced()


async def test_a_correction_that_is_a_repeat_goes_again_under_a_version_naming_the_record() -> None:
    """Reconciliation admitted v3 while push lagged; push then brought v2 late, so the center's
    record of the key went back to v2. Admitting v3 again would be dropped as a repeat."""
    rig = Rig()
    rig.source.change("a")
    v2 = rig.source.change("a", total=2)
    rig.source.change("a", total=3)
    await rig.reconciler.reconcile_once()  # v3, missing
    await rig.deliver(v2)  # late, from the push path

    report = await rig.reconciler.reconcile_once()

    assert report.changed == 1
    refreshed = rig.sink.accepted[(TENANT, SOURCE, "a", "3~2")]
    assert refreshed.item.data == {"total": 3}
    assert refreshed.correction == "changed"
    assert (await rig.reconciler.reconcile_once()).corrections == 0


async def test_a_store_that_cannot_say_what_was_delivered_is_an_admission_failure() -> None:
    rig = Rig()

    async def delivered(tenant: str, source: str) -> dict[str, object]:
        raise StoreUnavailable("the store is down (test)")

    rig.sink.delivered = delivered  # type: ignore[assignment,method-assign]

    with pytest.raises(AdmissionFailed, match="reading what was delivered"):
        await rig.reconciler.reconcile_once()
    assert rig.outcomes.seen[0].kind is None


@pytest.mark.parametrize("interval", [0.0, -5.0, float("inf")])
def test_an_interval_that_cannot_work_is_refused(interval: float) -> None:
    rig = Rig()
    with pytest.raises(ConfigurationError, match="reconciliation interval"):
        rig.reconciler.start(interval)
