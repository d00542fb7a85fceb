"""What healing may do to a running data source: the port the sources package implements
(``SourceManager.control``) and healing strategies call. Every action is recorded by the source
itself (a forced move is a switch in its log); the re-check is the source's own evidence."""

from __future__ import annotations

from typing import Protocol

from eventcenter.domain.reconcile import ReconcileReport


class SourceControl(Protocol):
    """One source's controls. Each raises
    :class:`~eventcenter.domain.errors.SourceModeRefused` when the source cannot do it (no
    such path, not running)."""

    @property
    def mode(self) -> str:
        """``event_only``, ``hybrid``, ``polling_only`` (``transition`` while switching)."""
        ...

    @property
    def paths(self) -> tuple[str, ...]:
        """The paths the source has: ``push``, ``poll``, ``reconcile`` (a listing)."""
        ...

    async def force_mode(self, to: str, reason: str) -> str:
        """Move down to ``to`` (``hybrid`` or ``polling_only``); the mode after."""
        ...

    async def restart_push(self, reason: str, *, longer_timeout: bool = False) -> float:
        """Close and reopen the push path from the stored position; with ``longer_timeout``
        its silence is measured with a longer event timeout from then on (see
        :meth:`~eventcenter.domain.hysteresis.Hysteresis.extended`). Returns the event timeout
        in effect (seconds)."""
        ...

    async def reconcile_now(self) -> ReconcileReport:
        """List, compare, correct, now."""
        ...

    def set_load_factor(self, factor: float) -> None:
        """Scale the polling interval (2.0: half as often)."""
        ...

    @property
    def load_factor(self) -> float:
        """The polling interval's scale now (1.0 without a poll path)."""
        ...

    def slow_down(self, by: float, cap: float, relax_after: float) -> float:
        """Poll ``by`` times slower (at most ``cap`` times) until it wears off, one step after
        each ``relax_after`` seconds without a rate-limited answer (see
        :class:`~eventcenter.domain.slowdown.SlowDown`); the load factor now."""
        ...

    def poll_now(self) -> None:
        """Poll at once if polling runs (the re-check after a change to polling)."""
        ...

    def push_delivered_since(self, since: float) -> bool:
        """The push path delivered at or after ``since`` (epoch s) and has not failed since."""
        ...

    def path_succeeded_since(self, path: str, since: float) -> bool:
        """``push`` or ``poll`` worked at or after ``since`` and has not failed since."""
        ...


class SourceControls(Protocol):
    """Finds a source's controls by tenant and name."""

    def control(self, tenant: str, source: str) -> SourceControl:
        """Raises ``LookupError`` (``SourceNotFound``) for a source not registered."""
        ...
