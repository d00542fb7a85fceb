"""The ready-queue of the event processor: strict priorities, aging, and tenant fairness.

:class:`PriorityScheduler` decides which pending item the processor handles next. It is a pure
data structure: it never reads a clock, ``now`` (monotonic seconds) is passed to every call,
and it must never decrease from one call to the next.

Each pop applies three rules, in this order:

a. **CRITICAL first.** While any CRITICAL item is pending, a CRITICAL item is taken.
b. **Aging (earliest deadline first).** Otherwise, for HIGH, NORMAL and LOW, the oldest pending
   item of that priority is *overdue* once it has waited ``max_wait[priority]`` seconds, that is
   once ``now >= pushed_at + max_wait[priority]`` (its *deadline*). If any is overdue, the one
   with the earliest deadline is taken (on equal deadlines, the higher priority).
c. **Strict priority.** Otherwise the next item of the highest non-empty priority is taken.

Inside one priority, each tenant has its own FIFO queue and tenants take turns (round-robin):
a tenant with 1000 items queued and a tenant with 1 alternate, so one noisy tenant cannot hold
back the others. An item taken by rule b leaves the turn order of the tenants as it was.

Bound: with ``max_wait[LOW] = w``, a LOW item at the head of the LOW queue is served at the
first pop at or after ``pushed_at + w``, unless CRITICAL items are pending or other overdue items
have earlier deadlines. So a flood of HIGH items delays LOW work by ``w``, not forever. A flood
of CRITICAL items does starve everything else, by design: CRITICAL means "before anything
else", and the processor's queue bound limits how many CRITICAL items can be waiting.

Cost: ``push`` and ``pop`` are O(1) amortised. Finding the oldest item of a priority scans the
tenants that have items of that priority (O(tenants)); the scheduler keeps a lower bound on the
earliest deadline and only scans when ``now`` reaches it, so in the common case (a few tenants,
nothing overdue) a pop does no scan at all. ``tenant_depths`` and ``oldest_wait`` scan too;
they are meant for metrics, not for every pop.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Generic, TypeVar

from eventcenter.domain.priority import Priority

__all__ = ["PriorityScheduler"]

T = TypeVar("T")

_AGED = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


class _Entry(Generic[T]):
    """One pending item and when it was pushed."""

    __slots__ = ("item", "pushed_at")

    def __init__(self, item: T, pushed_at: float) -> None:
        self.item = item
        self.pushed_at = pushed_at


class _Lane(Generic[T]):
    """The pending items of one priority: a FIFO per tenant, and the tenants' turn order.

    ``turns`` holds exactly the tenants that have items in this lane, each once, in the order
    they will be served; a tenant with no items left is dropped from both ``queues`` and
    ``turns``.
    """

    __slots__ = ("max_wait", "queues", "size", "turns")

    def __init__(self, max_wait: float | None) -> None:
        self.max_wait = max_wait
        self.queues: dict[str, deque[_Entry[T]]] = {}
        self.turns: deque[str] = deque()
        self.size = 0

    def push(self, entry: _Entry[T], tenant: str) -> None:
        queue = self.queues.get(tenant)
        if queue is None:
            self.queues[tenant] = deque((entry,))
            self.turns.append(tenant)
        else:
            queue.append(entry)
        self.size += 1

    def push_front(self, entry: _Entry[T], tenant: str) -> None:
        queue = self.queues.get(tenant)
        if queue is None:
            self.queues[tenant] = deque((entry,))
            self.turns.appendleft(tenant)
        else:
            queue.appendleft(entry)
        self.size += 1

    def take_next(self) -> _Entry[T]:
        """The head of the tenant whose turn it is; that tenant goes to the back of the line."""
        tenant = self.turns.popleft()
        queue = self.queues[tenant]
        entry = queue.popleft()
        if queue:
            self.turns.append(tenant)
        else:
            del self.queues[tenant]
        self.size -= 1
        return entry

    def take_from(self, tenant: str) -> _Entry[T]:
        """The head of ``tenant``'s queue, out of turn: the turn order stays as it was."""
        queue = self.queues[tenant]
        entry = queue.popleft()
        if not queue:
            del self.queues[tenant]
            self.turns.remove(tenant)
        self.size -= 1
        return entry

    def oldest(self) -> tuple[str, _Entry[T]] | None:
        """The tenant holding the oldest item and that item (O(tenants)); None if empty.

        Each tenant's queue is FIFO, so its head is its oldest item. On equal push times the
        tenant whose turn comes first wins.
        """
        best: tuple[str, _Entry[T]] | None = None
        for tenant in self.turns:
            head = self.queues[tenant][0]
            if best is None or head.pushed_at < best[1].pushed_at:
                best = (tenant, head)
        return best


class PriorityScheduler(Generic[T]):
    """The processor's ready-queue; see the module docstring for the policy and its bound.

    ``max_wait`` gives, for HIGH, NORMAL and LOW, the seconds an item may wait before it is
    aged (served ahead of higher priorities, earliest deadline first); None means never aged.
    The CRITICAL entry, if present, is ignored: CRITICAL is always served first.
    """

    __slots__ = ("_lanes", "_next_check", "_size")

    def __init__(self, max_wait: Mapping[Priority, float | None]) -> None:
        waits = _validated_max_wait(max_wait)
        self._lanes: tuple[_Lane[T], ...] = tuple(
            _Lane(None if priority is Priority.CRITICAL else waits[priority])
            for priority in Priority
        )
        self._size = 0
        # A lower bound on the earliest deadline of any pending item: until ``now`` reaches it,
        # nothing can be overdue and rule b needs no scan. Taking items only moves the true
        # earliest deadline later, so the bound stays valid; only a push into an empty lane can
        # bring it earlier (items pushed behind others have later deadlines, as now never
        # decreases).
        self._next_check = math.inf

    def __len__(self) -> int:
        return self._size

    def push(self, item: T, priority: Priority, tenant: str, now: float) -> None:
        """Queue ``item`` of ``tenant`` at ``priority``, pushed at ``now``.

        ``now`` must not be earlier than in any previous call (read it from a monotonic clock):
        the aging rule relies on each tenant's queue being oldest-first.
        """
        lane = self._lanes[priority]
        if not lane.size and lane.max_wait is not None:
            deadline = now + lane.max_wait
            if deadline < self._next_check:
                self._next_check = deadline
        lane.push(_Entry(item, now), tenant)
        self._size += 1

    def push_front(self, item: T, priority: Priority, tenant: str, pushed_at: float) -> None:
        """Put ``item`` back at the head of its tenant's queue, keeping when it was first pushed.

        For items taken out and returned (a paused subscription's held deliveries): they keep
        their place ahead of what was pushed after them, and their age.
        """
        lane = self._lanes[priority]
        if lane.max_wait is not None:
            self._next_check = min(self._next_check, pushed_at + lane.max_wait)
        lane.push_front(_Entry(item, pushed_at), tenant)
        self._size += 1

    def pop(self, now: float) -> T:
        """Remove and return the next item by the policy; IndexError when nothing is pending."""
        if not self._size:
            raise IndexError("pop from an empty PriorityScheduler")
        lanes = self._lanes
        lane = lanes[Priority.CRITICAL]
        if not lane.size:
            if now >= self._next_check:
                aged = self._take_overdue(now)
                if aged is not None:
                    self._size -= 1
                    return aged.item
            for lane in lanes:
                if lane.size:
                    break
        self._size -= 1
        return lane.take_next().item

    def drain(self) -> list[T]:
        """Remove and return every pending item.

        The order is priority order (CRITICAL to LOW) and, within a priority, the tenants'
        round-robin order: what successive pops would return if nothing were overdue.
        """
        drained: list[T] = []
        for lane in self._lanes:
            while lane.size:
                drained.append(lane.take_next().item)
        self._size = 0
        self._next_check = math.inf
        return drained

    def depths(self) -> dict[Priority, int]:
        """Pending items per priority, every priority present (zero included)."""
        return {priority: self._lanes[priority].size for priority in Priority}

    def tenant_depths(self) -> dict[str, int]:
        """Pending items per tenant, across priorities; tenants with nothing pending are absent."""
        depths: dict[str, int] = {}
        for lane in self._lanes:
            for tenant, queue in lane.queues.items():
                depths[tenant] = depths.get(tenant, 0) + len(queue)
        return depths

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest pending item has waited at ``now``; 0.0 when nothing is pending."""
        oldest = math.inf
        for lane in self._lanes:
            found = lane.oldest()
            if found is not None and found[1].pushed_at < oldest:
                oldest = found[1].pushed_at
        return 0.0 if oldest == math.inf else max(0.0, now - oldest)

    def _take_overdue(self, now: float) -> _Entry[T] | None:
        """Rule b: take the overdue oldest item with the earliest deadline, if there is one.

        Also resets the lower bound on deadlines to the exact earliest one found.
        """
        earliest = math.inf
        chosen: tuple[_Lane[T], str] | None = None
        for priority in _AGED:
            lane = self._lanes[priority]
            if not lane.size or lane.max_wait is None:
                continue
            found = lane.oldest()
            if found is None:
                continue
            tenant, head = found
            deadline = head.pushed_at + lane.max_wait
            if deadline < earliest:  # strict: on a tie the higher priority, seen first, wins
                earliest = deadline
                chosen = (lane, tenant)
        self._next_check = earliest
        if chosen is None or now < earliest:
            return None
        lane, tenant = chosen
        return lane.take_from(tenant)


def _validated_max_wait(max_wait: Mapping[Priority, float | None]) -> dict[Priority, float | None]:
    waits: dict[Priority, float | None] = {}
    for priority in _AGED:
        if priority not in max_wait:
            raise ValueError(
                f"max_wait has no entry for {priority.name}; give seconds, or None to never age it"
            )
        wait = max_wait[priority]
        if wait is not None and not wait >= 0:  # `not >=` also refuses NaN
            raise ValueError(
                f"max_wait[{priority.name}] must be >= 0 seconds or None, got {wait!r}"
            )
        waits[priority] = wait
    return waits
