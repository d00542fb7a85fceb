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

Cost, with n the tenants that have items pending in one priority (a *lane*):

* ``push`` and ``push_front``: O(1), plus O(log n) when a tenant joins a lane that keeps a heap
  (below) or an item older than its tenant's head is put back.
* ``pop`` while nothing is overdue: O(1) amortised. The scheduler keeps a lower bound on the
  earliest deadline and does not look for overdue items until ``now`` reaches it.
* ``pop`` by rule b: O(log n) amortised, O(n) at worst. Each lane finds its oldest item as the
  top of a binary heap of its tenants' heads keyed by (push time, place in the turn order), so
  that on equal push times the tenant whose turn comes first is taken. The heap is kept
  lazily: an entry whose key grew (its tenant's turn came, or its head was taken) is refreshed
  only if it reaches the top, entries of tenants that left are dropped when they surface, and a
  key that shrank (an older item put back) gets a new entry at once. Once the work owed exceeds
  a quarter of the lane's tenants (plus 64), the heap is dropped and rebuilt, in O(n), the next
  time it is needed; that is the O(n) worst case, for instance the first aged pop after every
  tenant had a turn. A lane of at most 8 tenants keeps no heap and compares their heads
  directly. The turn order is a FIFO of tenants that skips those an aged take emptied, rebuilt
  once they outnumber the others.
* ``oldest_wait``: one look per lane, as in a pop by rule b. ``tenant_depths``: O(tenants with
  items pending), which the processor bounds by ``max_queued``. Memory: O(pending items).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from heapq import heapify, heappop, heappush, heapreplace
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


class _Tenant(Generic[T]):
    """One tenant's FIFO within a lane, its place in the turn order, and its heap entry.

    ``turn`` orders the tenants of a lane: the turn order is ascending ``turn`` (a tenant sent to
    the back gets a number above all others, one put at the front a number below all others).
    While the lane keeps a heap, ``entry`` is the heap entry this tenant owns,
    ``(push time, turn, self)``, and its key is never above the tenant's current key (its head's
    push time, ``turn``). A tenant whose queue ran empty has left the lane for good: its queue
    stays empty (if the tenant comes back, it gets a new object), and ``entry`` is set to None
    if the heap that holds it is still in use, so that the entry is seen as stale.
    """

    __slots__ = ("entry", "name", "queue", "turn")

    def __init__(self, name: str, turn: int, first: _Entry[T]) -> None:
        self.name = name
        self.turn = turn
        self.queue: deque[_Entry[T]] = deque((first,))
        self.entry: _HeapEntry[T] | None = None


_HeapEntry = tuple[float, int, _Tenant[T]]

#: Heap work owed, or stale turn slots, tolerated beyond a share of the tenants.
_SLACK = 64
#: Up to this many tenants, a lane finds its oldest head by comparing them all: for so few,
#: that is cheaper than keeping a heap up to date.
_SCAN_MAX = 8


class _Lane(Generic[T]):
    """The pending items of one priority: a FIFO per tenant, the turn order, the heads' heap.

    ``queues`` holds exactly the tenants that have items in this lane. ``turns`` holds each of
    them once, in the order they will be served, plus tenants that left out of turn (an aged take
    emptied them), which are skipped. ``heap`` holds every tenant's owned entry (see
    :class:`_Tenant`) plus *debts*: entries of tenants that left or got a newer entry (dropped
    when they surface) and owned entries below their tenant's key (refreshed when they
    surface). ``debt`` counts them from above.

    A lane of up to 8 tenants keeps no heap (None). It builds one when a ninth tenant arrives and
    keeps it up to date from then on. Once the debt passes a quarter of the tenants (plus a
    constant), the heap is dropped and nothing maintains it until :meth:`oldest` rebuilds it,
    in O(tenants): that rebuild is paid for by the debts, and a lane that is not asked for its
    oldest item meanwhile (nothing overdue) does no heap work. A lane that runs empty starts
    again without a heap.
    """

    __slots__ = ("back", "debt", "front", "heap", "max_wait", "queues", "size", "turns")

    def __init__(self, max_wait: float | None) -> None:
        self.max_wait = max_wait
        self.queues: dict[str, _Tenant[T]] = {}
        self.turns: deque[_Tenant[T]] = deque()
        self.heap: list[_HeapEntry[T]] | None = None
        self.debt = 0
        self.size = 0
        self.back = 0  # the next turn number at the back of the line
        self.front = -1  # the next turn number at the front of the line

    def push(self, entry: _Entry[T], tenant: str) -> None:
        state = self.queues.get(tenant)
        if state is None:
            state = self.queues[tenant] = _Tenant(tenant, self.back, entry)
            self.back += 1
            self.turns.append(state)
            if self.heap is not None:
                self._track(state, entry.pushed_at, self.heap)
            elif len(self.queues) == _SCAN_MAX + 1:  # too many to compare: a heap from now on
                self._rebuild_heap()
        else:
            state.queue.append(entry)
        self.size += 1

    def push_front(self, entry: _Entry[T], tenant: str) -> None:
        state = self.queues.get(tenant)
        heap = self.heap
        if state is None:
            state = self.queues[tenant] = _Tenant(tenant, self.front, entry)
            self.front -= 1
            self.turns.appendleft(state)
            if heap is not None:
                self._track(state, entry.pushed_at, heap)
            elif len(self.queues) == _SCAN_MAX + 1:
                self._rebuild_heap()
        else:
            queue = state.queue
            if heap is not None:
                self._moved(state, queue[0].pushed_at, entry.pushed_at, heap)
            queue.appendleft(entry)
        self.size += 1

    def take_next(self) -> _Entry[T]:
        """The head of the tenant whose turn it is; that tenant goes to the back of the line."""
        turns = self.turns
        state = turns.popleft()
        while not state.queue:  # left out of turn
            state = turns.popleft()
        queue = state.queue
        entry = queue.popleft()
        self.size -= 1
        if queue:
            state.turn = self.back
            self.back += 1
            turns.append(state)
            heap = self.heap
            if heap is not None:  # the turn grew, so the key changed: as _moved, inlined
                if queue[0].pushed_at < entry.pushed_at:
                    self._track(state, queue[0].pushed_at, heap)
                self.debt += 1
                if self.debt > (len(self.queues) >> 2) + _SLACK:
                    self.heap = None
        elif self.size:
            self._leave(state)
        else:  # the lane ran empty (the common case of a short queue): as _leave, inlined
            del self.queues[state.name]
            turns.clear()
            self.heap = None
        return entry

    def take_from(self, state: _Tenant[T]) -> _Entry[T]:
        """The head of ``state``'s queue, out of turn: the turn order stays as it was."""
        queue = state.queue
        entry = queue.popleft()
        self.size -= 1
        if queue:
            if self.heap is not None:
                self._moved(state, entry.pushed_at, queue[0].pushed_at, self.heap)
        else:
            self._leave(state)
            turns = self.turns
            if len(turns) > 2 * len(self.queues) + _SLACK:
                self.turns = deque(other for other in turns if other.queue)
        return entry

    def oldest(self) -> _Tenant[T] | None:
        """The tenant holding the oldest head; None if the lane is empty.

        On equal push times the tenant whose turn comes first wins. Entries of tenants that
        left, or that a newer entry replaced, are dropped; an entry whose tenant's key grew is
        replaced by one with the current key; until the top entry is current: it is the
        smallest key, since no entry is above its tenant's current key. Either way this does at
        most ``debt`` heap operations or one rebuild, so O(tenants) at worst and O(log tenants)
        amortised.
        """
        queues = self.queues
        if len(queues) <= _SCAN_MAX:  # a few tenants: compare them all, no heap needed
            best: _Tenant[T] | None = None
            best_at = math.inf
            for state in queues.values():
                pushed_at = state.queue[0].pushed_at
                if (
                    best is None
                    or pushed_at < best_at
                    or (pushed_at == best_at and state.turn < best.turn)
                ):
                    best = state
                    best_at = pushed_at
            return best
        heap = self.heap
        if heap is None:
            heap = self._rebuild_heap()
        while heap:
            top = heap[0]
            state = top[2]
            if state.entry is not top:
                heappop(heap)
                self.debt -= 1
                continue
            pushed_at = state.queue[0].pushed_at
            turn = state.turn
            if top[0] == pushed_at and top[1] == turn:
                return state
            state.entry = fresh = (pushed_at, turn, state)
            heapreplace(heap, fresh)
            self.debt -= 1
        return None

    def drain(self) -> list[T]:
        """Every item in round-robin order; the lane is empty afterwards."""
        items: list[T] = []
        while self.size:  # the last tenant to leave resets the turn order and the heap
            items.append(self.take_next().item)
        return items

    def _track(self, state: _Tenant[T], pushed_at: float, heap: list[_HeapEntry[T]]) -> None:
        """Give ``state`` a heap entry with its current key."""
        state.entry = entry = (pushed_at, state.turn, state)
        heappush(heap, entry)

    def _moved(
        self, state: _Tenant[T], before: float, after: float, heap: list[_HeapEntry[T]]
    ) -> None:
        """``state``'s head changed from one pushed at ``before`` to one pushed at ``after``
        (its turn as it was)."""
        if after < before:  # the key shrank (an item put back, or after one): an entry at once
            self._track(state, after, heap)
            self._owe()  # the entry it replaces is a debt
        elif after > before:
            self._owe()  # the key grew: the entry is refreshed if it ever surfaces

    def _leave(self, state: _Tenant[T]) -> None:
        """``state``'s queue ran empty: it leaves the lane (its entry becomes a debt)."""
        del self.queues[state.name]
        if not self.size:  # nothing left: start again, without a heap until one is needed
            self.turns.clear()
            self.heap = None
        elif self.heap is not None:
            state.entry = None
            self._owe()

    def _owe(self) -> None:
        self.debt += 1
        if self.debt > (len(self.queues) >> 2) + _SLACK:
            self.heap = None  # cheaper to rebuild than to pay the debts one by one

    def _rebuild_heap(self) -> list[_HeapEntry[T]]:
        """One current entry per tenant, O(tenants)."""
        heap = [(state.queue[0].pushed_at, state.turn, state) for state in self.queues.values()]
        for entry in heap:
            entry[2].entry = entry
        heapify(heap)
        self.heap = heap
        self.debt = 0
        return heap


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
        # nothing can be overdue and rule b need not look at the lanes' heaps. Taking items only
        # moves the true earliest deadline later, so the bound stays valid; only a push into an
        # empty lane (or push_front) can bring it earlier: items pushed behind others have later
        # deadlines, as now never decreases.
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
            drained.extend(lane.drain())
        self._size = 0
        self._next_check = math.inf
        return drained

    def depths(self) -> dict[Priority, int]:
        """Pending items per priority, every priority present (zero included)."""
        return {priority: self._lanes[priority].size for priority in Priority}

    def tenant_depths(self) -> dict[str, int]:
        """Pending items per tenant, across priorities; tenants with nothing pending are absent.

        O(tenants with pending items), at most O(len(self)).
        """
        depths: dict[str, int] = {}
        for lane in self._lanes:
            for tenant, state in lane.queues.items():
                depths[tenant] = depths.get(tenant, 0) + len(state.queue)
        return depths

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest pending item has waited at ``now``; 0.0 when nothing is pending.

        "Oldest" compares the heads of the tenants' queues, as rule b does.
        """
        oldest = math.inf
        for lane in self._lanes:
            found = lane.oldest()
            if found is not None and found.queue[0].pushed_at < oldest:
                oldest = found.queue[0].pushed_at
        return 0.0 if oldest == math.inf else max(0.0, now - oldest)

    def _take_overdue(self, now: float) -> _Entry[T] | None:
        """Rule b: take the overdue oldest item with the earliest deadline, if there is one.

        Also resets the lower bound on deadlines to the exact earliest one found.
        """
        earliest = math.inf
        chosen: tuple[_Lane[T], _Tenant[T]] | None = None
        for priority in _AGED:
            lane = self._lanes[priority]
            if not lane.size or lane.max_wait is None:
                continue
            found = lane.oldest()
            if found is None:
                continue
            deadline = found.queue[0].pushed_at + lane.max_wait
            if deadline < earliest:  # strict: on a tie the higher priority, seen first, wins
                earliest = deadline
                chosen = (lane, found)
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
