"""The scheduler against a reference: the same choices as the former scanning algorithm, less work.

``ReferenceScheduler`` is the scheduler as it was before each lane kept a heap of its tenants'
heads: it finds a lane's oldest head by scanning every tenant, which is obviously right and
O(tenants) per look. The property test runs both on the same random operations (``push``,
``push_front``, ``pop`` on a fake clock) and requires identical results; the work test counts the
tenant-name lookups and push-time comparisons each one makes (no timing).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventcenter.domain.priority import Priority
from eventcenter.handlers import scheduling
from eventcenter.handlers.scheduling import PriorityScheduler

T = TypeVar("T")
CRITICAL, HIGH, NORMAL, LOW = Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW
_AGED = (HIGH, NORMAL, LOW)


# --- the reference: the former algorithm, unchanged but for names ------------------------------


class _RefEntry(Generic[T]):
    __slots__ = ("item", "pushed_at")

    def __init__(self, item: T, pushed_at: float) -> None:
        self.item = item
        self.pushed_at = pushed_at


class _RefLane(Generic[T]):
    __slots__ = ("max_wait", "queues", "size", "turns")

    def __init__(self, max_wait: float | None) -> None:
        self.max_wait = max_wait
        self.queues: dict[str, deque[_RefEntry[T]]] = {}
        self.turns: deque[str] = deque()
        self.size = 0

    def push(self, entry: _RefEntry[T], tenant: str) -> None:
        queue = self.queues.get(tenant)
        if queue is None:
            self.queues[tenant] = deque((entry,))
            self.turns.append(tenant)
        else:
            queue.append(entry)
        self.size += 1

    def push_front(self, entry: _RefEntry[T], tenant: str) -> None:
        queue = self.queues.get(tenant)
        if queue is None:
            self.queues[tenant] = deque((entry,))
            self.turns.appendleft(tenant)
        else:
            queue.appendleft(entry)
        self.size += 1

    def take_next(self) -> _RefEntry[T]:
        tenant = self.turns.popleft()
        queue = self.queues[tenant]
        entry = queue.popleft()
        if queue:
            self.turns.append(tenant)
        else:
            del self.queues[tenant]
        self.size -= 1
        return entry

    def take_from(self, tenant: str) -> _RefEntry[T]:
        queue = self.queues[tenant]
        entry = queue.popleft()
        if not queue:
            del self.queues[tenant]
            self.turns.remove(tenant)
        self.size -= 1
        return entry

    def oldest(self) -> tuple[str, _RefEntry[T]] | None:
        best: tuple[str, _RefEntry[T]] | None = None
        for tenant in self.turns:
            head = self.queues[tenant][0]
            if best is None or head.pushed_at < best[1].pushed_at:
                best = (tenant, head)
        return best


class ReferenceScheduler(Generic[T]):
    """The former PriorityScheduler (max_wait is trusted: the tests pass valid ones)."""

    def __init__(self, max_wait: Mapping[Priority, float | None]) -> None:
        self._lanes: tuple[_RefLane[T], ...] = tuple(
            _RefLane(None if priority is CRITICAL else max_wait[priority]) for priority in Priority
        )
        self._size = 0
        self._next_check = math.inf

    def __len__(self) -> int:
        return self._size

    def push(self, item: T, priority: Priority, tenant: str, now: float) -> None:
        lane = self._lanes[priority]
        if not lane.size and lane.max_wait is not None:
            deadline = now + lane.max_wait
            if deadline < self._next_check:
                self._next_check = deadline
        lane.push(_RefEntry(item, now), tenant)
        self._size += 1

    def push_front(self, item: T, priority: Priority, tenant: str, pushed_at: float) -> None:
        lane = self._lanes[priority]
        if lane.max_wait is not None:
            self._next_check = min(self._next_check, pushed_at + lane.max_wait)
        lane.push_front(_RefEntry(item, pushed_at), tenant)
        self._size += 1

    def pop(self, now: float) -> T:
        if not self._size:
            raise IndexError("pop from an empty PriorityScheduler")
        lanes = self._lanes
        lane = lanes[CRITICAL]
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
        drained: list[T] = []
        for lane in self._lanes:
            while lane.size:
                drained.append(lane.take_next().item)
        self._size = 0
        self._next_check = math.inf
        return drained

    def depths(self) -> dict[Priority, int]:
        return {priority: self._lanes[priority].size for priority in Priority}

    def tenant_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        for lane in self._lanes:
            for tenant, queue in lane.queues.items():
                depths[tenant] = depths.get(tenant, 0) + len(queue)
        return depths

    def oldest_wait(self, now: float) -> float:
        oldest = math.inf
        for lane in self._lanes:
            found = lane.oldest()
            if found is not None and found[1].pushed_at < oldest:
                oldest = found[1].pushed_at
        return 0.0 if oldest == math.inf else max(0.0, now - oldest)

    def _take_overdue(self, now: float) -> _RefEntry[T] | None:
        earliest = math.inf
        chosen: tuple[_RefLane[T], str] | None = None
        for priority in _AGED:
            lane = self._lanes[priority]
            if not lane.size or lane.max_wait is None:
                continue
            found = lane.oldest()
            if found is None:
                continue
            tenant, head = found
            deadline = head.pushed_at + lane.max_wait
            if deadline < earliest:
                earliest = deadline
                chosen = (lane, tenant)
        self._next_check = earliest
        if chosen is None or now < earliest:
            return None
        lane, tenant = chosen
        return lane.take_from(tenant)


# --- same choices as the reference -------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    priority: Priority
    tenant: str
    ticks: int  # time since the previous operation


@dataclass(frozen=True)
class PushFront:
    priority: Priority
    tenant: str
    age: int  # how long before ``now`` the item was first pushed


@dataclass(frozen=True)
class Pop:
    ticks: int


@dataclass(frozen=True)
class Look:
    """Read the metrics side (tenant_depths, oldest_wait), which also tidies the heaps."""


# Whole ticks, so that push times, deadlines and turns tie often: ties are where a heap keyed
# on the wrong thing would part from the scan.
ticks = st.sampled_from([0, 0, 0, 1, 2, 5])
max_waits = st.sampled_from([None, 0.0, 1.0, 3.0, 10.0])
priorities = st.sampled_from([CRITICAL, HIGH, HIGH, NORMAL, NORMAL, LOW, LOW])
tenants = st.sampled_from(["a", "b", "c", "d", "e"])
operations = st.lists(
    st.one_of(
        st.builds(Push, priorities, tenants, ticks),
        st.builds(Push, priorities, tenants, ticks),
        st.builds(PushFront, priorities, tenants, st.sampled_from([0, 1, 3, 8, 20])),
        st.builds(Pop, ticks),
        st.builds(Pop, ticks),
        st.builds(Pop, ticks),
        st.just(Look()),
    ),
    max_size=300,
)


@settings(max_examples=400, deadline=None)
@given(st.booleans(), max_waits, max_waits, max_waits, operations)
def test_the_scheduler_makes_the_same_choices_as_the_reference(
    heaps_only: bool,
    high_wait: float | None,
    normal_wait: float | None,
    low_wait: float | None,
    ops: list[Push | PushFront | Pop | Look],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        if heaps_only:  # a lane of a few tenants compares them all; here it keeps a heap too
            patch.setattr(scheduling, "_SCAN_MAX", 0)
        same_choices_as_the_reference(high_wait, normal_wait, low_wait, ops)


def same_choices_as_the_reference(
    high_wait: float | None,
    normal_wait: float | None,
    low_wait: float | None,
    ops: list[Push | PushFront | Pop | Look],
) -> None:
    waits = {HIGH: high_wait, NORMAL: normal_wait, LOW: low_wait}
    queue: PriorityScheduler[int] = PriorityScheduler(waits)
    reference: ReferenceScheduler[int] = ReferenceScheduler(waits)
    now = 0.0
    for number, op in enumerate(ops):
        if isinstance(op, Push):
            now += op.ticks
            queue.push(number, op.priority, op.tenant, now)
            reference.push(number, op.priority, op.tenant, now)
        elif isinstance(op, PushFront):
            queue.push_front(number, op.priority, op.tenant, now - op.age)
            reference.push_front(number, op.priority, op.tenant, now - op.age)
        elif isinstance(op, Pop):
            now += op.ticks
            if len(reference):
                assert queue.pop(now) == reference.pop(now)
        else:
            assert queue.tenant_depths() == reference.tenant_depths()
            assert queue.oldest_wait(now) == reference.oldest_wait(now)
        assert len(queue) == len(reference)
        assert queue.depths() == reference.depths()
    assert queue.oldest_wait(now) == reference.oldest_wait(now)
    assert queue.drain() == reference.drain()
    assert len(queue) == 0


# Two aged lanes, three tenants, mostly equal times, and frequent looks (which build the heaps):
# the cases where a heap entry is out of date only by its tenant's turn, or put back older.
tied_operations = st.lists(
    st.one_of(
        st.builds(Push, st.sampled_from([NORMAL, LOW]), st.sampled_from("abc"), st.just(0)),
        st.builds(Push, st.sampled_from([NORMAL, LOW]), st.sampled_from("abc"), ticks),
        st.builds(PushFront, st.sampled_from([NORMAL, LOW]), st.sampled_from("abc"), ticks),
        st.builds(Pop, st.sampled_from([0, 0, 1])),
        st.builds(Pop, st.sampled_from([0, 0, 1])),
        st.just(Look()),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([1.0, 2.0]), st.sampled_from([1.0, 2.0]), tied_operations)
# a's entry is out of date only by its turn: b's turn comes first, at the same push time
@example(1.0, 1.0, [*(Push(NORMAL, t, 0) for t in "aab"), Look(), Pop(0), Pop(1)])
# a's head is put back older than its entry says: it, not b, is the oldest
@example(
    1.0,
    1.0,
    [Push(NORMAL, "b", 3), Push(NORMAL, "a", 2), Look(), PushFront(NORMAL, "a", 4), Pop(0)],
)
def test_ties_in_time_are_broken_by_turn_as_the_reference_does(
    normal_wait: float, low_wait: float, ops: list[Push | PushFront | Pop | Look]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scheduling, "_SCAN_MAX", 0)
        same_choices_as_the_reference(None, normal_wait, low_wait, ops)


def test_a_head_older_than_the_one_taken_is_found_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An item put back in front with a later push time, then taken in turn: the head behind
    it is older than the heap entry says, and must still be found as the oldest."""
    monkeypatch.setattr(scheduling, "_SCAN_MAX", 0)  # two tenants: keep a heap anyway
    waits: dict[Priority, float | None] = {HIGH: None, NORMAL: 10.0, LOW: None}
    queue: PriorityScheduler[str] = PriorityScheduler(waits)
    reference: ReferenceScheduler[str] = ReferenceScheduler(waits)
    for scheduler in (queue, reference):
        scheduler.push("a-old", NORMAL, "a", 0.0)
        scheduler.push("c", NORMAL, "c", 0.5)
        scheduler.push_front("a-back", NORMAL, "a", 1.0)
        scheduler.oldest_wait(1.0)  # the heap now has a at 1.0, c at 0.5
    assert queue.pop(1.0) == reference.pop(1.0) == "a-back"  # a's turn; its head is at 0.0
    # a-old (0.0) is overdue at 10.0 and c (0.5) is not, whatever a's old heap entry said (1.0)
    assert queue.pop(10.0) == reference.pop(10.0) == "a-old"


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([HIGH, NORMAL, LOW]), st.integers(1, 3), st.integers(0, 2)),
        min_size=150,
        max_size=400,
    ),
    st.integers(100, 500),
)
def test_crowds_of_tenants_that_run_dry_get_the_same_choices(
    crowd: list[tuple[Priority, int, int]], early_pops: int
) -> None:
    """Hundreds of tenants with an item or three: first served in turn (those that run dry
    leave stale heap entries behind), then all overdue (those aged out of their turn leave
    stale places in the turn order), enough to make the lanes rebuild both."""
    waits: dict[Priority, float | None] = {HIGH: 1000.0, NORMAL: 1000.0, LOW: 1000.0}
    queue: PriorityScheduler[int] = PriorityScheduler(waits)
    reference: ReferenceScheduler[int] = ReferenceScheduler(waits)
    now = 0.0
    number = 0
    for tenant, (priority, items, ticks) in enumerate(crowd):
        now += ticks
        for _ in range(items):
            queue.push(number, priority, f"t{tenant}", now)
            reference.push(number, priority, f"t{tenant}", now)
            number += 1
    for priority in (HIGH, NORMAL, LOW):  # the youngest items, so that no lane runs dry early
        for _ in range(100):
            queue.push(number, priority, "anchor", now)
            reference.push(number, priority, "anchor", now)
            number += 1
    for _ in range(min(early_pops, len(reference))):  # before the deadlines: in turn
        assert queue.pop(now) == reference.pop(now)
    assert queue.tenant_depths() == reference.tenant_depths()
    now += 1000.0
    while len(reference):  # past them: aged, earliest deadline first
        assert queue.pop(now) == reference.pop(now)
        now += 0.5
    assert len(queue) == 0


# --- work, counted -----------------------------------------------------------------------------


class Work:
    """Counts the scheduler's touches of tenants and push times (shared by the two types below)."""

    count = 0


class Tenant(str):
    """A tenant name that counts each time a dict hashes or compares it."""

    __slots__ = ()

    def __hash__(self) -> int:
        Work.count += 1
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        Work.count += 1
        return str.__eq__(self, other)


class Instant(float):
    """A push time that counts each comparison (heap sifts and scans compare push times)."""

    __slots__ = ()

    def __lt__(self, other: float) -> bool:
        Work.count += 1
        return float.__lt__(self, other)

    def __le__(self, other: float) -> bool:
        Work.count += 1
        return float.__le__(self, other)

    def __gt__(self, other: float) -> bool:
        Work.count += 1
        return float.__gt__(self, other)

    def __ge__(self, other: float) -> bool:
        Work.count += 1
        return float.__ge__(self, other)

    def __eq__(self, other: object) -> bool:
        Work.count += 1
        return float.__eq__(self, other)

    __hash__ = float.__hash__


Scheduler = PriorityScheduler[int] | ReferenceScheduler[int]


def crowded_run(queue: Scheduler, tenants: int) -> tuple[int, int]:
    """Mixed priorities from ``tenants`` tenants, then pops while LOW and NORMAL are overdue.

    Every tenant has two NORMAL and two LOW items; a flood tenant keeps pushing HIGH. First the
    pops serve HIGH and then NORMAL round-robin (each tenant takes a turn, which moves it in
    the turn order); then, past the deadlines, every pop ages an item out of turn. Returns
    (work counted, operations).
    """
    names = [Tenant(f"tenant-{index}") for index in range(tenants)]
    operations = 0
    Work.count = 0
    for round_ in range(2):
        for name in names:
            queue.push(len(queue), NORMAL, name, Instant(round_))
            queue.push(len(queue), LOW, name, Instant(round_))
            operations += 2
    flood = Tenant("flood")
    for index in range(tenants + 200):  # every NORMAL tenant takes its turn: heads move on
        now = Instant(2.0 + index * 1e-6)
        if index < 200:
            queue.push(index, HIGH, flood, now)
        queue.pop(now)
        operations += 2
    for index in range(tenants):  # now everything is overdue: each pop is an aged take
        now = Instant(100.0 + index)
        queue.push(index, HIGH, flood, now)
        queue.pop(now)
        operations += 2
    return Work.count, operations


def test_a_pop_does_not_touch_every_tenant() -> None:
    """Work per operation grows like log(tenants) for the scheduler, like tenants for the scan."""
    waits: dict[Priority, float | None] = {HIGH: 50.0, NORMAL: 10.0, LOW: 20.0}
    per_operation = {}
    for tenants in (100, 400, 3200):
        work, operations = crowded_run(PriorityScheduler(waits), tenants)
        per_operation[tenants] = work / operations
    reference_work, reference_operations = crowded_run(ReferenceScheduler(waits), 400)

    # The scan compares every tenant's head on each aged pop: a hundred touches per operation
    # for 400 tenants (a third of them per lane).
    assert reference_work / reference_operations > 100
    # The heaps: a handful, and 32 times the tenants adds little.
    assert max(per_operation.values()) < 20
    assert per_operation[3200] < 2 * per_operation[100]
