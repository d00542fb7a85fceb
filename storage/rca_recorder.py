"""The CaseRecorder port on the store writer: RCA cases and healing stats, made durable.

A step of a case (:class:`CaseCommand`) runs in the writer's transaction: the case's new
events, the events of the healing stats the step counted in, and the case's index row
(``center_rca_cases``) commit together or not at all. So an outcome is counted exactly when its
verdict is recorded, and the list never disagrees with the cases.

``apply`` runs on copies: a step the case refuses leaves nothing behind in the batch, and a
batch retried after an outage applies every step again on fresh copies of what is stored.
Reads go through the writer too, so they see every step submitted before them.
"""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from eventcenter.domain.healing_choice import HealingStats
from eventcenter.domain.rca_case import CaseChange, CaseRow, CaseStep, RcaCase
from eventcenter.storage import rca_answers, rca_state
from eventcenter.storage.rca_answers import PendingAnswer
from eventcenter.storage.writer import Batch, Command, StoreWriter


def _working_copy(writer: StoreWriter, batch: Batch, aggregate_id: UUID) -> Any:
    """The aggregate as this batch sees it (an earlier step may have changed it), copied so a
    step that fails changes nothing; None if it was never recorded."""
    touched = batch.aggregates.get(aggregate_id)
    if touched is not None:
        return copy.deepcopy(touched)
    found = rca_state.load_case(writer.app, aggregate_id)
    if found is not None:
        return found  # the repository hands out a copy already
    return None


class CaseCommand(Command):
    """Apply one step to a case (see ``CaseRecorder.change``) in the writer's transaction."""

    def __init__(self, case_id: UUID, apply: CaseChange) -> None:
        self.case_id = case_id
        self.apply_change = apply

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        current = _working_copy(writer, batch, self.case_id)
        touched: dict[UUID, HealingStats] = {}

        def stats_for(category: str) -> HealingStats:
            stats_id = HealingStats.create_id(batch.center, category)
            if stats_id not in touched:
                earlier = batch.aggregates.get(stats_id)
                if earlier is not None:
                    assert isinstance(earlier, HealingStats)
                    touched[stats_id] = copy.deepcopy(earlier)
                else:
                    stored = rca_state.load_stats(writer.app, batch.center, category)
                    touched[stats_id] = stored or HealingStats.start(batch.center, category)
            return touched[stats_id]

        changed, result = self.apply_change(current, stats_for)
        if changed is not None:
            if changed.id != self.case_id:
                raise ValueError(f"the step returned case {changed.id}, not {self.case_id}")
            if _pending(changed):
                assert batch.session is not None
                batch.touch(changed)
                rca_state.store_case(batch.session, batch.center, CaseRow.of(changed))
        for stats in touched.values():
            if _pending(stats):
                batch.touch(stats)
        return result


def _pending(aggregate: Aggregate) -> bool:
    return bool(aggregate.pending_events)


class _AnswerApplied(Command):
    def __init__(self, answer_id: int, at: float, outcome: str) -> None:
        self.answer_id = answer_id
        self.at = at
        self.outcome = outcome

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        assert batch.session is not None
        rca_answers.mark_applied(batch.session, self.answer_id, self.at, self.outcome)


class CaseReadCommand(Command):
    """Read cases (one, the open ones, a listing, a history) or a category's stats."""

    def __init__(self, what: str, **args: Any) -> None:
        self.what = what
        self.args = args

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        session = batch.session
        assert session is not None
        app = writer.app
        if self.what == "case":
            return _working_copy(writer, batch, self.args["case_id"])
        if self.what == "open":
            ids = rca_state.open_case_ids(session, writer.center)
            found = (rca_state.load_case(app, case_id) for case_id in ids)
            return [case for case in found if case is not None]
        if self.what == "stats":
            return rca_state.load_stats(app, writer.center, self.args["category"])
        if self.what == "list":
            return rca_state.list_cases(session, writer.center, **self.args)
        if self.what == "history":
            return rca_state.case_history(app, self.args["case_id"])
        if self.what == "answers":
            return rca_answers.pending(session, writer.center)
        raise ValueError(f"unknown read {self.what!r}")


class DurableCaseRecorder:
    """Implements :class:`~eventcenter.domain.rca_case.CaseRecorder` with :class:`StoreWriter`,
    plus the reads ``rca list`` and ``rca show`` need while the center runs."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def change(self, case_id: UUID, apply: CaseChange) -> Any:
        return await self.writer.submit(CaseCommand(case_id, apply))

    async def case(self, case_id: UUID) -> RcaCase | None:
        found: RcaCase | None = await self.writer.submit(CaseReadCommand("case", case_id=case_id))
        return found

    async def open_cases(self) -> list[RcaCase]:
        found: list[RcaCase] = await self.writer.submit(CaseReadCommand("open"))
        return found

    async def stats(self, category: str) -> HealingStats | None:
        found: HealingStats | None = await self.writer.submit(
            CaseReadCommand("stats", category=category)
        )
        return found

    async def cases(
        self, *, open_only: bool = False, tenant: str | None = None, limit: int = 1_000
    ) -> list[CaseRow]:
        """Cases newest first (``rca list [--open] [--tenant]``)."""
        rows: list[CaseRow] = await self.writer.submit(
            CaseReadCommand("list", open_only=open_only, tenant=tenant, limit=limit)
        )
        return rows

    async def pending_answers(self) -> list[PendingAnswer]:
        """People's answers left for this center and not applied yet (see rca_answers)."""
        found: list[PendingAnswer] = await self.writer.submit(CaseReadCommand("answers"))
        return found

    async def answered(self, answer_id: int, at: float, outcome: str) -> None:
        """Mark an answer applied, with what came of it."""
        await self.writer.submit(_AnswerApplied(answer_id, at, outcome))

    async def history(self, case_id: UUID) -> list[CaseStep]:
        """The case's events in order (``rca show``); RcaCaseNotFound if there is none."""
        steps: list[CaseStep] = await self.writer.submit(
            CaseReadCommand("history", case_id=case_id)
        )
        return steps
