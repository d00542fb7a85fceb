"""A bounded memory of recently seen event ids, so a re-published event is processed once."""

from __future__ import annotations

import math
from collections import OrderedDict
from uuid import UUID


class DedupeWindow:
    """Remembers ids for ``window`` seconds, and at most ``max_ids`` of them (oldest go first).

    An id seen again inside the window is a duplicate. The bound is what keeps memory flat under
    any load: at 10,000 events/s and the default 100,000 ids, the effective window is 10 s even
    if ``window`` says more. ``window == 0`` turns deduplication off.
    """

    __slots__ = ("_next_expiry", "_seen", "max_ids", "window")

    def __init__(self, window: float, max_ids: int) -> None:
        if window < 0 or max_ids < 1:
            raise ValueError("window must be >= 0 and max_ids >= 1")
        self.window = window
        self.max_ids = max_ids
        self._seen: OrderedDict[UUID, float] = OrderedDict()
        self._next_expiry = math.inf  # when the oldest remembered id falls out of the window

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        seen = self._seen
        horizon = now - self.window
        while seen:
            oldest_id, seen_at = next(iter(seen.items()))
            if seen_at > horizon:
                self._next_expiry = seen_at + self.window
                return
            del seen[oldest_id]
        self._next_expiry = math.inf

    def is_duplicate(self, event_id: UUID, now: float) -> bool:
        """True if ``event_id`` was admitted inside the window; otherwise remember it."""
        if not self.window:
            return False
        if now >= self._next_expiry:
            self._expire(now)
        seen = self._seen
        if event_id in seen:
            return True
        if not seen:
            self._next_expiry = now + self.window
        seen[event_id] = now
        if len(seen) > self.max_ids:
            seen.popitem(last=False)
            self._next_expiry = next(iter(seen.values())) + self.window
        return False

    def forget(self, event_id: UUID) -> None:
        """Drop an id again (its event was not admitted after all)."""
        self._seen.pop(event_id, None)
