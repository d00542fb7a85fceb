"""The CaseRecorder port in memory: for tests, and for an embedded center without a store.

It behaves like the durable one where the runner can tell: ``apply`` runs on copies, so a
step that raises leaves nothing half-recorded; each change's new events are kept per case in
order (``history``), as the store would; a runner built again on the same recorder resumes
the cases it holds, as after a restart.
"""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

from eventcenter.domain.errors import RcaCaseNotFound
from eventcenter.domain.healing_choice import HealingStats
from eventcenter.domain.rca_case import CaseChange, CaseRow, CaseStep, RcaCase, case_step


class MemoryCaseRecorder:
    """Cases and healing stats in dicts; see the module docstring. ``scope`` names the stats
    (the center's name in the durable recorder)."""

    def __init__(self, scope: str = "default") -> None:
        self.scope = scope
        self._cases: dict[UUID, RcaCase] = {}
        self._stats: dict[str, HealingStats] = {}
        self._steps: dict[UUID, list[CaseStep]] = {}
        self.changes = 0

    async def change(self, case_id: UUID, apply: CaseChange) -> Any:
        current = self._cases.get(case_id)
        working = copy.deepcopy(current) if current is not None else None
        touched: dict[str, HealingStats] = {}

        def stats_for(category: str) -> HealingStats:
            if category not in touched:
                stored = self._stats.get(category)
                touched[category] = (
                    copy.deepcopy(stored)
                    if stored is not None
                    else HealingStats.start(self.scope, category)
                )
            return touched[category]

        changed, result = apply(working, stats_for)
        if changed is not None:
            if changed.id != case_id:
                raise ValueError(f"apply returned case {changed.id}, not {case_id}")
            events = changed.collect_events()
            self._steps.setdefault(case_id, []).extend(case_step(e) for e in events)
            self._cases[case_id] = changed
        for category, stats in touched.items():
            if stats.collect_events():
                self._stats[category] = stats
        self.changes += 1
        return result

    async def case(self, case_id: UUID) -> RcaCase | None:
        found = self._cases.get(case_id)
        return copy.deepcopy(found) if found is not None else None

    async def open_cases(self) -> list[RcaCase]:
        return [copy.deepcopy(c) for c in self._cases.values() if c.is_open]

    async def stats(self, category: str) -> HealingStats | None:
        found = self._stats.get(category)
        return copy.deepcopy(found) if found is not None else None

    # reading (what ``rca list`` / ``rca show`` print) --------------------------------------------

    async def cases(
        self, *, open_only: bool = False, tenant: str | None = None, limit: int = 1_000
    ) -> list[CaseRow]:
        """Cases, newest first; only open ones, or one tenant's, when asked."""
        rows = [
            CaseRow.of(case)
            for case in self._cases.values()
            if (not open_only or case.is_open) and (tenant is None or case.tenant == tenant)
        ]
        return sorted(rows, key=lambda row: (-row.opened_at, row.case_id))[:limit]

    async def history(self, case_id: UUID) -> list[CaseStep]:
        """The case's events in order."""
        if case_id not in self._steps:
            raise RcaCaseNotFound(f"no rca case {case_id}")
        return list(self._steps[case_id])
