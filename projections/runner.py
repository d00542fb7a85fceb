"""Keeps the read model caught up with the notification log, supervised.

:meth:`ProjectionRunner.catch_up` pulls notifications after the read model's tracked position
in pages and hands each page to :meth:`ReadModel.process <.view.ReadModel.process>` (one
transaction per page). It works on SQLite and PostgreSQL alike (a pull loop over
``select_notifications``; eventsourcing's live runner needs PostgreSQL's LISTEN/NOTIFY and
stops at the first error).

:meth:`start` runs it in a thread: it catches up every ``interval`` seconds, or at once after
:meth:`poke` (the center pokes it after each commit). An error does not stop it: it is logged
with the position, counted and kept in :attr:`status`, and the runner tries again after a
back-off that doubles up to ``max_backoff``. Another reader that processed the same page
first (a CLI beside the running center) is no error: the page is refused by the tracking and
the runner goes on from the new position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError

from eventcenter.domain.errors import EventCenterError
from eventcenter.projections.view import ReadModel

__all__ = ["NotificationSource", "ProjectionRunner", "ProjectionStatus", "ReadModelDiverged"]

log = logging.getLogger("eventcenter.projections")


class ReadModelDiverged(EventCenterError):
    """Raised when the read model refuses notifications after its tracked position although no
    other reader moved it: its tables hold rows the tracking does not account for (a tracking
    row lost or changed by hand). Going on would refuse the same page forever; a rebuild
    mends it."""

    def __init__(self, notifications: Sequence[tuple[int, Any]], position: int) -> None:
        super().__init__(
            f"the read model refused notifications {notifications[0][0]}-{notifications[-1][0]}"
            f" although its tracked position is {position}: its tables hold rows its tracking"
            " does not know (rebuild it: eventcenter projections rebuild)"
        )


class NotificationSource(Protocol):
    """The notification log a read model follows."""

    def read(self, after: int, limit: int) -> Sequence[tuple[int, Any]]:
        """Up to ``limit`` ``(notification id, domain event)`` after ``after``, in order."""
        ...

    def head(self) -> int:
        """The id of the last notification stored (0: none)."""
        ...


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where the read model stands: ``lag`` notifications behind the log's ``head``."""

    position: int
    head: int
    running: bool
    errors: int
    last_error: str
    caught_up_at: float | None

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "running": self.running,
            "errors": self.errors,
            "last_error": self.last_error,
            "caught_up_at": self.caught_up_at,
        }


class ProjectionRunner:
    """Follows ``log`` into ``model`` in pages of ``page`` notifications."""

    def __init__(
        self,
        model: ReadModel,
        log_source: NotificationSource,
        *,
        page: int = 500,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if page < 1:
            raise ValueError("page must be at least 1")
        self.model = model
        self.log = log_source
        self.page = page
        self.interval = interval
        self.max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = 0
        self._head = 0
        self._errors = 0
        self._last_error = ""
        self._caught_up_at: float | None = None

    # one pass -------------------------------------------------------------------------------

    def catch_up(self, limit: int | None = None) -> int:
        """Process what the log holds after the model's position (at most ``limit``
        notifications); the number of notifications processed. Raises what the store raises."""
        done = 0
        with self._lock:
            position = self.model.position
            while limit is None or done < limit:
                size = self.page if limit is None else min(self.page, limit - done)
                notifications = self.log.read(position, size)
                if not notifications:
                    break
                try:
                    self.model.process(notifications)
                except IntegrityError as error:
                    # Another reader processed these first: go on from where it left them.
                    moved = self.model.position
                    if moved <= position:  # nobody did: the tables and the tracking disagree
                        raise ReadModelDiverged(notifications, position) from error
                    position = moved
                    continue
                position = notifications[-1][0]
                done += len(notifications)
                if len(notifications) < size:
                    break
            self._position = position
            self._head = max(self.log.head(), position)
            self._caught_up_at = self._clock()
        return done

    def rebuild(self) -> int:
        """Empty the tables and process the whole log again; the number of notifications."""
        with self._lock:
            self.model.reset()
        return self.catch_up()

    @property
    def status(self) -> ProjectionStatus:
        """The last known position and head (a running runner refreshes them each pass)."""
        return ProjectionStatus(
            position=self._position,
            head=self._head,
            running=self._thread is not None and self._thread.is_alive(),
            errors=self._errors,
            last_error=self._last_error,
            caught_up_at=self._caught_up_at,
        )

    def refresh(self) -> ProjectionStatus:
        """Read the position and the head from the store now (raises what the store raises)."""
        self._position = self.model.position
        self._head = max(self.log.head(), self._position)
        return self.status

    # in a thread ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="eventcenter-projections", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        """Catch up now rather than at the next interval."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                self.catch_up()
            except Exception as error:
                self._errors += 1
                self._last_error = f"{type(error).__name__}: {error}"[:500]
                backoff = min(self.max_backoff, max(self.interval, backoff * 2 or 0.5))
                log.warning(
                    "read model stopped at position %s: %s; trying again in %.1f s",
                    self._position,
                    self._last_error,
                    backoff,
                )
                self._stopping.wait(backoff)
                continue
            backoff = 0.0
            self._last_error = ""
            self._wake.wait(self.interval)
            self._wake.clear()
