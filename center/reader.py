"""Read-only access to a center's store: never takes the lease, never creates anything.

Works beside a running center (it only reads the notification log). A store that does not
exist (no SQLite file where it was told to look, no tables in the database) raises
StoreNotFound naming the place, instead of creating an empty one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from eventcenter.center.settings import CenterSettings
from eventcenter.domain.errors import StoreNotFound, StoreUnavailable
from eventcenter.projections.audit import DeadLetterIndex, DeadLetterRow, DecisionRow, DecisionTrail
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import is_transient, short_error


class CenterReader:
    """The audit trail and dead letters of a center, folded from its notification log."""

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

    def _catch_up(self) -> None:
        with self._lock:
            if self._app is None:
                self._app = CenterApplication(
                    self.settings.effective_url, cache_size=0, create_tables=False
                )
            after = min(self._trail.position, self._letters.position)
            try:
                for position, domain_event in self._app.read_events(after):
                    self._trail.apply(position, domain_event)
                    self._letters.apply(position, domain_event)
            except Exception as error:
                shown = self.settings.shown_url
                if is_transient(error):
                    raise StoreUnavailable(
                        f"cannot use the store at {shown}: {short_error(error)}"
                    ) from None
                raise StoreNotFound(
                    f"no eventcenter store at {shown} (its tables are missing)"
                ) from None

    def decisions(self) -> list[DecisionRow]:
        self._catch_up()
        return list(self._trail.rows)

    def dead_letters(self, status: str | None = None) -> list[DeadLetterRow]:
        self._catch_up()
        rows = self._letters.letters.values()
        return [row for row in rows if status is None or row.status == status]

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
