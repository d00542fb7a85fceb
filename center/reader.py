"""Read-only access to a center's store: never takes the lease, never creates anything.

Works beside a running center (it only reads the notification log and the outcome rows). A
store that does not exist (no SQLite file where it was told to look, no tables in the database)
raises StoreNotFound naming the place, instead of creating an empty one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from eventcenter.center.settings import CenterSettings
from eventcenter.domain.errors import RcaCaseNotFound, StoreNotFound, StoreUnavailable
from eventcenter.domain.rca_case import CaseRow, CaseStep
from eventcenter.domain.tuning_run import TuningRun
from eventcenter.projections.audit import (
    DeadLetterIndex,
    DeadLetterRow,
    DecisionRow,
    DecisionTrail,
    Projection,
)
from eventcenter.projections.sources import ModeHistory, SourceIndex, SourceRow
from eventcenter.sources.manager import SourceNotFound
from eventcenter.storage import rca_state, source_state, tuning_store
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.source_state import OutcomeRow
from eventcenter.storage.writer import is_transient, short_error

OUTCOME_PAGE = 10_000


class CenterReader:
    """The audit trail, dead letters and data sources of a center, folded from its
    notification log, and the outcomes its sources recorded."""

    def __init__(self, settings: CenterSettings) -> None:
        self.settings = settings
        url = make_url(settings.effective_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database)
            if not path.is_file():
                raise StoreNotFound(f"no store at {path} (check --data-dir / --database-url)")
        self._app: CenterApplication | None = None
        self._lock = threading.Lock()
        self._trail = DecisionTrail()
        self._letters = DeadLetterIndex()
        self._sources = SourceIndex()

    def _open(self) -> CenterApplication:
        if self._app is None:
            self._app = CenterApplication(
                self.settings.effective_url, cache_size=0, create_tables=False
            )
        return self._app

    def _catch_up(self, *extra: Projection) -> None:
        """Fold the events not seen yet into the projections (and ``extra`` ones, from their
        own position)."""
        projections: tuple[Projection, ...] = (self._trail, self._letters, self._sources, *extra)
        with self._lock:
            app = self._open()
            after = min(projection.position for projection in projections)
            try:
                for position, domain_event in app.read_events(after):
                    for projection in projections:
                        projection.apply(position, domain_event)
            except Exception as error:
                raise self._problem(error, "its tables are missing") from None

    def _problem(self, error: Exception, missing: str) -> StoreUnavailable:
        shown = self.settings.shown_url
        if is_transient(error) and "no such table" not in str(error):  # SQLite's is no outage
            return StoreUnavailable(f"cannot use the store at {shown}: {short_error(error)}")
        return StoreNotFound(f"no eventcenter store at {shown} ({missing})")

    def decisions(self) -> list[DecisionRow]:
        self._catch_up()
        return list(self._trail.rows)

    def dead_letters(self, status: str | None = None) -> list[DeadLetterRow]:
        self._catch_up()
        rows = self._letters.letters.values()
        return [row for row in rows if status is None or row.status == status]

    # data sources ------------------------------------------------------------------------------

    def sources(self) -> list[SourceRow]:
        """Every source recorded in the store, by tenant and name."""
        self._catch_up()
        return self._sources.sorted()

    def source(self, tenant: str, name: str) -> SourceRow:
        """One source; SourceNotFound (naming the recorded ones) if the store has none such."""
        self._catch_up()
        row = self._sources.find(tenant, name)
        if row is None:
            known = ", ".join(r.key for r in self._sources.sorted()) or "none"
            raise SourceNotFound(
                f"no source '{tenant}/{name}' in the store at {self.settings.shown_url}"
                f" (recorded: {known})"
            )
        return row

    def mode_history(self, tenant: str, name: str) -> ModeHistory:
        """Every mode change of one source (read from the start of the log)."""
        history = ModeHistory(tenant=tenant, name=name)
        self._catch_up(history)
        return history

    def outcomes(self, tenant: str, name: str) -> list[OutcomeRow]:
        """What the source's paths did, oldest first, as recorded by this center (its
        ``name``): one row per push batch received, poll, failure, rollback, start and stop.
        Outcomes older than the key retention are purged. A store without the outcome table
        (no source ever ran on it) has none."""
        rows: list[OutcomeRow] = []
        with self._session() as session:
            if not inspect(session.connection()).has_table(source_state.outcomes.name):
                return rows
            after = 0
            while True:
                page = source_state.read_outcomes(
                    session, self.settings.name, tenant, name, after, OUTCOME_PAGE
                )
                rows.extend(row for _, row in page)
                if len(page) < OUTCOME_PAGE:
                    return rows
                after = page[-1][0]

    # RCA cases ---------------------------------------------------------------------------------

    def rca_cases(self, *, open_only: bool = False, tenant: str | None = None) -> list[CaseRow]:
        """This center's RCA cases, newest first (a store without RCA has none)."""
        with self._session() as session:
            return rca_state.list_cases(
                session, self.settings.name, open_only=open_only, tenant=tenant
            )

    def rca_history(self, case_id: str) -> list[CaseStep]:
        """Every recorded step of one case, in order; RcaCaseNotFound if there is none such."""
        try:
            key = UUID(case_id)
        except ValueError:
            raise RcaCaseNotFound(f"{case_id!r} is not an RCA case id (a UUID)") from None
        with self._lock:
            app = self._open()
            try:
                return rca_state.case_history(app, key)
            except RcaCaseNotFound:
                raise
            except Exception as error:
                raise self._problem(error, "its tables are missing") from None

    # tuning runs ------------------------------------------------------------------------------

    def tuning_runs(self, limit: int = 50) -> list[TuningRun]:
        """This center's latest tuning runs (one per deployment event), newest first."""
        with self._session() as session:
            ids = tuning_store.run_ids(session, self.settings.name, limit=limit)
        runs: list[TuningRun] = []
        with self._lock:
            app = self._open()
            for run_id in ids:
                try:
                    found: Any = app.repository.get(run_id)
                except Exception as error:
                    raise self._problem(error, "its tables are missing") from None
                if isinstance(found, TuningRun):
                    runs.append(found)
        return runs

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A read-only session on the store (a transaction that is never committed)."""
        with self._lock:
            datastore: Any = self._open().recorder.datastore  # type: ignore[attr-defined]
            try:
                with datastore.transaction(commit=False) as session:
                    yield session
            except StoreUnavailable:
                raise
            except Exception as error:
                if not is_transient(error):
                    raise
                raise self._problem(error, "") from None

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
