"""A COMMIT whose answer is lost: the store committed, the writer was told the connection broke.

That is what a network cut at the wrong moment does (the outage tests met it through the
proxy, as ``duplicate key value violates unique constraint "center_deliveries_pkey"``). Here
the real store commits and the connection's answer is then replaced by the error a cut
connection gives, once, so the moment is exact. The writer retries the batch, as for any cut;
it must find that the batch is already stored and not apply it a second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from eventcenter.domain.decisions import Transition
from eventcenter.domain.event import Event
from eventcenter.domain.ports import AdmissionRecord, Target
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.queue import DurableDeliveries
from eventcenter.storage.writer import StoreWriter

WAIT_S = 10.0  # only turns a hang into a failure


class LostAnswer:
    """Once armed, the next commit happens, then raises what a cut connection raises."""

    def __init__(self) -> None:
        self.armed = False
        self.fired = 0

    def __call__(self, session: Session) -> None:
        if self.armed:
            self.armed = False
            self.fired += 1
            raise OperationalError(
                "COMMIT", {}, Exception("server closed the connection unexpectedly")
            )


@pytest.fixture
def app(database_url: str) -> Iterator[CenterApplication]:
    application = CenterApplication(database_url)
    application.create_tables()
    yield application
    application.close()


@pytest.fixture
def writer(app: CenterApplication) -> Iterator[StoreWriter]:
    built = StoreWriter(app, "default", backoff_base=0.001, backoff_max=0.002)
    built.open()
    yield built
    built.close()


@pytest.fixture
def lost_answer(app: CenterApplication) -> Iterator[LostAnswer]:
    """Arm it just before the write under test: the writer is idle, so the next commit is
    that write's."""
    makers = app.recorder.datastore.session_maker  # type: ignore[attr-defined]
    fault = LostAnswer()
    event.listen(makers, "after_commit", fault)
    yield fault
    event.remove(makers, "after_commit", fault)


async def test_an_admission_whose_commit_answer_was_lost_is_accepted_once(
    writer: StoreWriter, lost_answer: LostAnswer
) -> None:
    deliveries = DurableDeliveries(writer)
    work = Event.create("work.item", {"n": 1})
    record = AdmissionRecord(work, work.model_dump_json(), (Target(1, "all"), Target(2, "odd")))
    lost_answer.armed = True

    earlier = await asyncio.wait_for(deliveries.admit([record]), WAIT_S)

    assert lost_answer.fired == 1
    assert earlier == [None], "accepted, not refused by its own rows"
    counts, top = await deliveries.summary()
    assert (sum(c.count for c in counts), top) == (2, 2)


async def test_a_dead_letter_whose_commit_answer_was_lost_is_stored_once(
    writer: StoreWriter, app: CenterApplication, lost_answer: LostAnswer
) -> None:
    lost_answer.armed = True

    letter_id = await asyncio.wait_for(
        writer.add(Event.create("work.item"), "all", RuntimeError("broken"), 3), WAIT_S
    )

    assert lost_answer.fired == 1
    stored = [e for _, e in app.read_events() if type(e).__qualname__ == "DeadLetter.Recorded"]
    assert [e.originator_id for e in stored] == [letter_id]


async def test_a_transition_whose_commit_answer_was_lost_is_recorded_once(
    writer: StoreWriter, app: CenterApplication, lost_answer: LostAnswer
) -> None:
    lost_answer.armed = True
    move = Transition("begin_adjustment", "stable", "adjusting", "spike", "c1")

    await asyncio.wait_for(writer.record_transition(move), WAIT_S)
    then = Transition("settle", "adjusting", "stable", "calm", "c2")
    await asyncio.wait_for(writer.record_transition(then), WAIT_S)

    assert lost_answer.fired == 1
    moves = [e.trigger for _, e in app.read_events() if hasattr(e, "trigger")]
    assert moves == ["begin_adjustment", "settle"]
    assert writer.processor_state == "stable"


async def test_an_answer_lost_before_the_commit_means_the_batch_is_written_again(
    writer: StoreWriter, app: CenterApplication
) -> None:
    """The other side of the doubt: a transaction that really failed is applied again."""
    makers = app.recorder.datastore.session_maker  # type: ignore[attr-defined]
    failures = [1]

    def before_commit(session: Session) -> None:
        if failures:
            failures.pop()
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    event.listen(makers, "before_commit", before_commit)
    try:
        letter_id = await asyncio.wait_for(
            writer.add(Event.create("work.item"), "all", RuntimeError("broken"), 1), WAIT_S
        )
    finally:
        event.remove(makers, "before_commit", before_commit)
    assert failures == []
    stored = [e for _, e in app.read_events() if type(e).__qualname__ == "DeadLetter.Recorded"]
    assert [e.originator_id for e in stored] == [letter_id]
