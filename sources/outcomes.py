"""What an engine reports after each attempt on its path, for the manager above it.

Engines do not decide modes: they report each attempt as a :class:`PathOutcome` through an
``on_outcome`` callback, and the manager feeds them to the hysteresis policy, the health
figures and the recorded history. The record is plain data, so a recorded sequence of outcomes
can be replayed through another policy configuration.

How to read one:

- ``ok=True``: the path worked: a push batch received and admitted (``items`` > 0: an open
  connection or a quiet wait is no evidence that push delivers, so neither is reported), a poll
  answered (``items`` may be 0), a reconciliation ran (``items`` = corrections);
- ``ok=False`` with a ``kind``: the path failed (:class:`SourceErrorKind`); count it against
  the path;
- ``ok=False`` without a ``kind``: the center's admission failed (the store); the path is not
  to blame and the policy must not count it against the path. Nothing was acknowledged, so
  the items come again.

``last_message_at`` (push only) is the clock time of the last message received, None before
the first: the policy derives silence from it. ``retry_in`` (failures only) is how long the
engine waits before its next attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.sources import SourceError, SourceErrorKind

PathName = Literal["push", "poll", "reconcile"]


class AdmissionFailed(EventCenterError):
    """Raised inside an engine when the center's side failed: admitting a batch, or reading
    the stored position or what was delivered.

    ``error`` is the sink's error, ``items`` the size of the batch (0 for a read). Nothing was
    acknowledged, so the messages come again; the engine backs off and retries.
    """

    def __init__(self, error: EventCenterError, items: int, action: str | None = None) -> None:
        doing = action or f"admitting {items} message(s)"
        super().__init__(f"the center failed {doing}, nothing acknowledged: {error}")
        self.error = error
        self.items = items


@dataclass(frozen=True, slots=True)
class PathOutcome:
    """One attempt on one path of a source, at clock time ``at``."""

    at: float
    path: PathName
    ok: bool
    kind: SourceErrorKind | None = None
    detail: str = ""
    items: int = 0
    dead_lettered: int = 0
    last_message_at: float | None = None
    retry_in: float | None = None

    def __post_init__(self) -> None:
        if self.ok and self.kind is not None:
            raise ValueError("a successful outcome has no error kind")
        if self.items < 0 or self.dead_lettered < 0 or self.dead_lettered > self.items:
            raise ValueError(
                f"items ({self.items}) and dead_lettered ({self.dead_lettered}) must be "
                "counts, dead-lettered ones among the items"
            )

    @property
    def path_failed(self) -> bool:
        """True when the path itself failed (not the center's admission)."""
        return not self.ok and self.kind is not None

    @classmethod
    def success(
        cls,
        at: float,
        path: PathName,
        *,
        items: int,
        dead_lettered: int = 0,
        detail: str = "",
        last_message_at: float | None = None,
    ) -> PathOutcome:
        return cls(
            at=at,
            path=path,
            ok=True,
            items=items,
            dead_lettered=dead_lettered,
            detail=detail,
            last_message_at=last_message_at,
        )

    @classmethod
    def failure(
        cls,
        at: float,
        path: PathName,
        error: SourceError,
        *,
        retry_in: float | None,
        last_message_at: float | None = None,
    ) -> PathOutcome:
        """The path failed with ``error``."""
        return cls(
            at=at,
            path=path,
            ok=False,
            kind=error.kind,
            detail=str(error),
            retry_in=retry_in,
            last_message_at=last_message_at,
        )

    @classmethod
    def admission_failure(
        cls,
        at: float,
        path: PathName,
        failed: AdmissionFailed,
        *,
        retry_in: float | None,
        last_message_at: float | None = None,
    ) -> PathOutcome:
        """The center could not admit a batch; the path is not to blame."""
        return cls(
            at=at,
            path=path,
            ok=False,
            kind=None,
            detail=str(failed),
            items=failed.items,
            retry_in=retry_in,
            last_message_at=last_message_at,
        )


OnOutcome = Callable[[PathOutcome], None]
