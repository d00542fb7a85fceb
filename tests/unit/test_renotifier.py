"""The renotifier on a fake clock: reminders at the policy's pace, until answered, nothing held
in memory that a restart could lose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import pytest

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.escalation import EscalationNotice, OpenEscalation, RenotifyPolicy
from eventcenter.healing.escalation import (
    CallbackSink,
    EscalationReport,
    Escalator,
    Renotifier,
)
from eventcenter.sources.clock import FakeClock

NOW = 1_700_000_000.0
POLICY = RenotifyPolicy(after=600.0, factor=2.0, max_wait=2000.0, max_renotifications=3)


def escalated(case_id: str, at: float = NOW) -> EscalationNotice:
    return EscalationNotice(
        case_id=case_id,
        tenant="acme",
        source="orders",
        category="rate_limited",
        severity="medium",
        summary="429 from the orders API for 20 minutes",
        evidence=[],
        attempts=[],
        opened_at=at - 60.0,
        escalated_at=at,
    )


@dataclass
class CaseBook:
    """What the owner of the cases knows: the last notice of each, when sent, answered or not."""

    cases: dict[str, OpenEscalation] = field(default_factory=dict)
    recorded: list[tuple[EscalationNotice, EscalationReport]] = field(default_factory=list)
    fail_records: int = 0

    def escalate(self, notice: EscalationNotice) -> None:
        self.cases[notice.case_id] = OpenEscalation(notice, notice.sent_at)

    def answer(self, case_id: str) -> None:
        self.cases[case_id] = replace(self.cases[case_id], answered=True)

    async def open_escalations(self) -> Sequence[OpenEscalation]:
        return list(self.cases.values())

    async def record(self, notice: EscalationNotice, report: EscalationReport) -> None:
        if self.fail_records:
            self.fail_records -= 1
            raise ConnectionError("the case store is unreachable")
        self.recorded.append((notice, report))
        self.cases[notice.case_id] = replace(
            self.cases[notice.case_id], notice=notice, last_sent_at=notice.sent_at
        )


@dataclass
class Inbox:
    """A receiving person: each notice with the fake time it arrived."""

    clock: FakeClock
    got: list[tuple[float, str, int, str]] = field(default_factory=list)

    def __call__(self, notice: EscalationNotice) -> None:
        self.got.append(
            (self.clock.now() - NOW, notice.case_id, notice.notification, notice.notice_id)
        )

    def numbers(self, case_id: str) -> list[tuple[float, int]]:
        return [(at, number) for at, case, number, _ in self.got if case == case_id]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=NOW)


@asynccontextmanager
async def running(
    book: CaseBook, clock: FakeClock, inbox: Inbox | None = None, *, interval: float = 60.0
) -> AsyncIterator[Renotifier]:
    sink = CallbackSink("inbox", inbox if inbox is not None else (lambda notice: None))
    renotifier = Renotifier(
        Escalator([sink], default=["inbox"]),
        POLICY,
        open_escalations=book.open_escalations,
        record=book.record,
        clock=clock,
        now=clock.now,
        interval=interval,
    )
    task = asyncio.create_task(renotifier.run())
    try:
        await clock.advance(0)
        yield renotifier
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_unanswered_case_is_reminded_at_growing_intervals_a_bounded_number_of_times(
    clock: FakeClock,
) -> None:
    book, inbox = CaseBook(), Inbox(clock)
    book.escalate(escalated("case-1"))

    async with running(book, clock, inbox):
        await clock.advance(599)
        assert inbox.got == []
        await clock.advance(1)
        assert inbox.numbers("case-1") == [(600.0, 2)]
        await clock.advance(100_000)

    assert inbox.numbers("case-1") == [(600.0, 2), (1800.0, 3), (3800.0, 4)]
    assert [notice.notification for notice, _ in book.recorded] == [2, 3, 4]
    assert len({notice_id for *_, notice_id in inbox.got}) == 3


async def test_an_answer_stops_the_reminders(clock: FakeClock) -> None:
    book, inbox = CaseBook(), Inbox(clock)
    book.escalate(escalated("case-1"))

    async with running(book, clock, inbox):
        await clock.advance(600)
        book.answer("case-1")
        await clock.advance(100_000)

    assert inbox.numbers("case-1") == [(600.0, 2)]


async def test_a_case_escalated_meanwhile_is_found_within_the_interval(clock: FakeClock) -> None:
    book, inbox = CaseBook(), Inbox(clock)

    async with running(book, clock, inbox, interval=60.0):
        await clock.advance(1000)
        book.escalate(escalated("case-2", at=NOW + 1000))
        await clock.advance(600 + 60)

    [(at, number)] = inbox.numbers("case-2")
    assert number == 2
    assert 1600.0 <= at <= 1660.0


async def test_a_restart_continues_from_the_owners_records(clock: FakeClock) -> None:
    book, inbox = CaseBook(), Inbox(clock)
    book.escalate(escalated("case-1"))

    async with running(book, clock, inbox):
        await clock.advance(700)  # reminder 2 at 600
    await clock.advance(500)  # the center is down; nothing runs
    async with running(book, clock, inbox):  # a new renotifier, nothing carried over
        await clock.advance(100_000)

    assert inbox.numbers("case-1") == [(600.0, 2), (1800.0, 3), (3800.0, 4)]


async def test_a_reminder_not_recorded_is_sent_again_with_the_same_id(clock: FakeClock) -> None:
    book, inbox = CaseBook(fail_records=1), Inbox(clock)
    book.escalate(escalated("case-1"))

    async with running(book, clock, inbox, interval=60.0):
        await clock.advance(600)  # sent, then the record failed
        await clock.advance(60)  # the next pass sends it again

    [(first_at, _, first_number, first_id), (again_at, _, again_number, again_id)] = inbox.got
    assert (first_at, again_at) == (600.0, 660.0)
    assert first_number == again_number == 2
    assert first_id == again_id  # a receiver drops the repeat
    assert [notice.notification for notice, _ in book.recorded] == [2]


async def test_a_reminder_that_reached_nobody_is_recorded_and_waits_its_turn(
    clock: FakeClock,
) -> None:
    book = CaseBook()
    book.escalate(escalated("case-1"))
    calls: list[float] = []

    def down(notice: EscalationNotice) -> None:
        calls.append(clock.now() - NOW)
        raise ConnectionError("pager unreachable")

    renotifier = Renotifier(
        Escalator([CallbackSink("pager", down)], default=["pager"]),
        POLICY,
        open_escalations=book.open_escalations,
        record=book.record,
        clock=clock,
        now=clock.now,
    )
    task = asyncio.create_task(renotifier.run())
    await clock.advance(1800)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert calls == [600.0, 1800.0]  # the policy's pace, not every pass
    assert [report.reached for _, report in book.recorded] == [False, False]
    assert "ConnectionError: pager unreachable" in book.recorded[0][1].failed[0].reason


async def test_one_pass_reports_what_it_sent_and_when_the_next_is_due(clock: FakeClock) -> None:
    book = CaseBook()
    book.escalate(escalated("due"))
    book.escalate(escalated("later", at=NOW + 500))
    book.escalate(escalated("answered"))
    book.answer("answered")
    renotifier = Renotifier(
        Escalator([CallbackSink("inbox", lambda notice: None)], default=["inbox"]),
        POLICY,
        open_escalations=book.open_escalations,
        record=book.record,
        clock=clock,
        now=lambda: NOW + 600,
    )

    reports = await renotifier.run_once()

    assert [report.notice.case_id for report in reports] == ["due"]
    assert renotifier.next_due == NOW + 500 + 600  # "later"; "due" next at 600 + 1200


def test_the_interval_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ConfigurationError, match="interval must be > 0"):
        Renotifier(
            Escalator([CallbackSink("inbox", lambda notice: None)], default=["inbox"]),
            POLICY,
            open_escalations=CaseBook().open_escalations,
            record=CaseBook().record,
            clock=clock,
            interval=0.0,
        )
