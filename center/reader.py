"""Access to a center's store for reading: never takes the lease, never writes a decision.

Works beside a running center. The audit trail, dead letters and data sources are read from
the read model's tables (:mod:`eventcenter.projections`), caught up with the notification log
first (the reader writes only those tables and their tracking row; a running center's own
runner and this reader never process one notification twice). A store that does not exist (no
SQLite file where it was told to look, no center tables in the database) raises StoreNotFound
naming the place, instead of creating an empty one.
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
from eventcenter.domain.errors import (
    EventCenterError,
    RcaCaseNotFound,
    StoreNotFound,
    StoreUnavailable,
)
from eventcenter.domain.rca_case import CaseRow, CaseStep
from eventcenter.domain.tuning_run import TuningRun
from eventcenter.projections import queries
from eventcenter.projections.audit import DeadLetterRow, DecisionRow
from eventcenter.projections.catalog import AuditEntry
from eventcenter.projections.explain import Explanation, explain
from eventcenter.projections.runner import ProjectionRunner, ProjectionStatus
from eventcenter.projections.sources import ModeHistory, SourceRow
from eventcenter.projections.view import ReadModel
from eventcenter.sources.manager import SourceNotFound
from eventcenter.storage import rca_state, source_state, tuning_store
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.source_state import OutcomeRow
from eventcenter.storage.writer import is_transient, short_error

OUTCOME_PAGE = 10_000


class CenterReader:
    """The audit trail, dead letters and data sources of a center from its read model, and
    the outcomes its sources recorded.

    ``projections`` is the running center's own read-model runner: given, the reader catches
    up through it (one runner per process, serialised with the center's thread) instead of
    running a second one beside it."""

    def __init__(
        self, settings: CenterSettings, projections: ProjectionRunner | None = None
    ) -> None:
        self.settings = settings
        url = make_url(settings.effective_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database)
            if not path.is_file():
                raise StoreNotFound(f"no store at {path} (check --data-dir / --database-url)")
        self._app: CenterApplication | None = None
        self._runner: ProjectionRunner | None = projections
        self._lock = threading.RLock()

    def _open(self) -> CenterApplication:
        if self._app is None:
            self._app = CenterApplication(
                self.settings.effective_url, cache_size=0, create_tables=False
            )
        return self._app

    def _projections(self) -> ProjectionRunner:
        """The read model on this store (its tables created if the store has none yet)."""
        if self._runner is None:
            app = self._open()
            datastore: Any = app.recorder.datastore  # type: ignore[attr-defined]
            model = ReadModel(datastore, app.name)
            try:
                with datastore.transaction(commit=False) as session:
                    has_events = inspect(session.connection()).has_table(
                        app.recorder.events_table_name  # type: ignore[attr-defined]
                    )
                if not has_events:
                    raise StoreNotFound(
                        f"no eventcenter store at {self.settings.shown_url} (its tables are"
                        " missing)"
                    )
                model.create_table()
            except StoreNotFound:
                raise
            except Exception as error:
                raise self._problem(error, "its tables are missing") from None
            self._runner = ProjectionRunner(model, app)
        return self._runner

    def catch_up(self) -> int:
        """Bring the read model up to the notification log; how many events it took in."""
        with self._lock:
            runner = self._projections()
            try:
                return runner.catch_up()
            except EventCenterError:
                raise
            except Exception as error:
                raise self._problem(error, "its tables are missing") from None

    def rebuild(self) -> int:
        """Empty the read model and fold the whole log into it again."""
        with self._lock:
            runner = self._projections()
            try:
                return runner.rebuild()
            except EventCenterError:
                raise
            except Exception as error:
                raise self._problem(error, "its tables are missing") from None

    def projection_status(self) -> ProjectionStatus:
        """Where the read model stands against the log, without catching up."""
        with self._lock:
            runner = self._projections()
            try:
                return runner.refresh()
            except Exception as error:
                raise self._problem(error, "its tables are missing") from None

    def _problem(self, error: Exception, missing: str) -> StoreUnavailable:
        shown = self.settings.shown_url
        if is_transient(error) and "no such table" not in str(error):  # SQLite's is no outage
            return StoreUnavailable(f"cannot use the store at {shown}: {short_error(error)}")
        return StoreNotFound(f"no eventcenter store at {shown} ({missing})")

    @contextmanager
    def _view(self, *, fresh: bool = True) -> Iterator[Session]:
        """A read-only session on the read model, caught up first unless ``fresh`` is False."""
        if fresh:
            self.catch_up()
        else:
            self._projections()
        with self._session() as session:
            yield session

    # audit trail -------------------------------------------------------------------------------

    def audit(
        self,
        flt: queries.AuditFilter,
        *,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
        fresh: bool = True,
    ) -> queries.AuditPage:
        """One page of decisions matching ``flt`` (see :func:`queries.audit_page`)."""
        with self._view(fresh=fresh) as session:
            return queries.audit_page(
                session, flt, after=after, limit=limit, newest_first=newest_first
            )

    def audit_entry(self, position: int, tenant: str | None = None) -> AuditEntry | None:
        with self._view() as session:
            return queries.audit_entry(session, position, tenant)

    def explain(self, position: int, tenant: str | None = None) -> Explanation | None:
        """Why the decision at ``position`` was taken (None if there is none, or not
        ``tenant``'s)."""
        with self._view() as session:
            return explain(session, position, tenant=tenant)

    def decisions(self, last: int | None = None) -> list[DecisionRow]:
        """Processor transitions and handler decisions in recorded order (the ``last`` ones)."""
        with self._view() as session:
            return queries.decisions(session, last)

    def dead_letters(
        self, status: str | None = None, tenant: str | None = None
    ) -> list[DeadLetterRow]:
        with self._view() as session:
            return queries.dead_letters(session, status, tenant)

    # data sources ------------------------------------------------------------------------------

    def sources(self, tenant: str | None = None) -> list[SourceRow]:
        """Every source recorded in the store, by tenant and name."""
        with self._view() as session:
            return queries.sources(session, tenant)

    def source(self, tenant: str, name: str) -> SourceRow:
        """One source; SourceNotFound (naming the recorded ones) if the store has none such."""
        with self._view() as session:
            row = queries.source(session, tenant, name)
            if row is None:
                known = ", ".join(r.key for r in queries.sources(session)) or "none"
                raise SourceNotFound(
                    f"no source '{tenant}/{name}' in the store at {self.settings.shown_url}"
                    f" (recorded: {known})"
                )
            return row

    def mode_history(self, tenant: str, name: str) -> ModeHistory:
        """Every mode change of one source."""
        with self._view() as session:
            return queries.mode_history(session, tenant, name)

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

    def __enter__(self) -> CenterReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
