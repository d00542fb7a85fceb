"""The processor's ready-queue: strict priorities, aging by deadline, tenant round-robin."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.priority import Priority
from eventcenter.handlers.scheduling import PriorityScheduler

CRITICAL, HIGH, NORMAL, LOW = Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW

NEVER_AGED: dict[Priority, float | None] = {HIGH: None, NORMAL: None, LOW: None}
HIGH_WAIT, NORMAL_WAIT, LOW_WAIT = 0.05, 0.5, 2.0
AGED: dict[Priority, float | None] = {HIGH: HIGH_WAIT, NORMAL: NORMAL_WAIT, LOW: LOW_WAIT}
POPS_PER_SECOND = 1000  # the flood simulations pop once per millisecond


def at(pop_index: int) -> float:
    """The time of pop number ``pop_index`` in a flood simulation."""
    return pop_index / POPS_PER_SECOND


def scheduler(max_wait: Mapping[Priority, float | None] = NEVER_AGED) -> PriorityScheduler[str]:
    return PriorityScheduler(max_wait)


def pop_all(queue: PriorityScheduler[str], now: float) -> list[str]:
    return [queue.pop(now) for _ in range(len(queue))]


# --- strict priority ---------------------------------------------------------------------------


def test_without_aging_items_come_out_in_strict_priority_order() -> None:
    queue = scheduler()
    for priority in (LOW, NORMAL, CRITICAL, LOW, HIGH, NORMAL, CRITICAL):
        queue.push(priority.name, priority, "acme", now=0.0)
    assert pop_all(queue, now=100.0) == [
        "CRITICAL",
        "CRITICAL",
        "HIGH",
        "NORMAL",
        "NORMAL",
        "LOW",
        "LOW",
    ]


def test_before_any_deadline_items_come_out_in_strict_priority_order() -> None:
    queue = scheduler(AGED)
    queue.push("low", LOW, "acme", now=0.0)
    queue.push("normal", NORMAL, "acme", now=0.0)
    queue.push("high", HIGH, "acme", now=0.0)
    assert pop_all(queue, now=0.049) == ["high", "normal", "low"]


def test_items_of_one_tenant_and_priority_come_out_first_in_first_out() -> None:
    queue = scheduler()
    for index in range(5):
        queue.push(f"n{index}", NORMAL, "acme", now=float(index))
    assert pop_all(queue, now=10.0) == ["n0", "n1", "n2", "n3", "n4"]


def test_critical_is_served_first_even_when_others_are_long_overdue() -> None:
    queue = scheduler(AGED)
    queue.push("low", LOW, "acme", now=0.0)
    queue.push("high", HIGH, "acme", now=0.0)
    queue.push("critical-1", CRITICAL, "acme", now=50.0)
    queue.push("critical-2", CRITICAL, "acme", now=50.0)
    # then the overdue ones, earliest deadline first: high (0.05) before low (2.0)
    assert pop_all(queue, now=100.0) == ["critical-1", "critical-2", "high", "low"]


def test_critical_entry_of_max_wait_is_ignored() -> None:
    queue = scheduler({CRITICAL: -1.0, HIGH: None, NORMAL: None, LOW: None})
    queue.push("high", HIGH, "acme", now=0.0)
    queue.push("critical", CRITICAL, "acme", now=0.0)
    assert pop_all(queue, now=1000.0) == ["critical", "high"]


# --- tenant fairness -------------------------------------------------------------------------


def test_a_tenant_with_one_item_alternates_with_a_tenant_with_a_thousand() -> None:
    queue = scheduler()
    for index in range(1000):
        queue.push(f"big-{index}", NORMAL, "big", now=0.0)
    queue.push("small-0", NORMAL, "small", now=0.0)
    assert [queue.pop(now=0.0) for _ in range(3)] == ["big-0", "small-0", "big-1"]


def test_tenants_take_turns_in_the_order_they_arrived() -> None:
    queue = scheduler()
    for index in range(3):
        for tenant in ("a", "b", "c"):
            queue.push(f"{tenant}{index}", HIGH, tenant, now=0.0)
    assert pop_all(queue, now=0.0) == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_a_tenant_that_runs_dry_and_comes_back_joins_the_end_of_the_line() -> None:
    queue = scheduler()
    queue.push("a0", NORMAL, "a", now=0.0)
    queue.push("a1", NORMAL, "a", now=0.0)
    queue.push("b0", NORMAL, "b", now=0.0)
    queue.push("c0", NORMAL, "c", now=0.0)
    queue.push("c1", NORMAL, "c", now=0.0)
    assert queue.pop(now=0.0) == "a0"
    assert queue.pop(now=0.0) == "b0"  # b has nothing left and leaves the line
    queue.push("b1", NORMAL, "b", now=0.0)  # and rejoins behind a
    assert pop_all(queue, now=0.0) == ["c0", "a1", "b1", "c1"]


def test_each_priority_has_its_own_turn_order() -> None:
    queue = scheduler()
    queue.push("a-high", HIGH, "a", now=0.0)
    queue.push("b-normal", NORMAL, "b", now=0.0)
    queue.push("a-normal", NORMAL, "a", now=0.0)
    queue.push("b-high", HIGH, "b", now=0.0)
    assert pop_all(queue, now=0.0) == ["a-high", "b-high", "b-normal", "a-normal"]


def test_critical_items_are_shared_round_robin_between_tenants() -> None:
    queue = scheduler()
    for index in range(3):
        queue.push(f"noisy{index}", CRITICAL, "noisy", now=0.0)
    queue.push("quiet0", CRITICAL, "quiet", now=0.0)
    assert pop_all(queue, now=0.0) == ["noisy0", "quiet0", "noisy1", "noisy2"]


def test_an_item_aged_out_of_turn_leaves_the_turn_order_of_the_others_as_it_was() -> None:
    queue = scheduler({HIGH: None, NORMAL: 1.0, LOW: None})
    queue.push("c1", NORMAL, "c", now=0.0)
    queue.push("c2", NORMAL, "c", now=0.0)
    queue.push("c3", NORMAL, "c", now=0.05)
    queue.push("a1", NORMAL, "a", now=0.1)
    queue.push("a2", NORMAL, "a", now=0.1)
    assert queue.pop(now=0.1) == "c1"  # turn order is now a, c
    queue.push("b1", NORMAL, "b", now=0.2)  # a, c, b
    # c2 (pushed at 0.0) reaches its deadline at 1.0 while it is a's turn: it is taken out of
    # turn, and the line a, c, b carries on unchanged. c3's deadline (1.05) is still ahead.
    assert queue.pop(now=1.0) == "c2"
    assert pop_all(queue, now=1.0) == ["a1", "c3", "b1", "a2"]


def test_the_oldest_item_across_tenants_is_the_one_aged() -> None:
    queue = scheduler({HIGH: None, NORMAL: None, LOW: 1.0})
    queue.push("a-0", LOW, "a", now=0.0)
    queue.push("a-1", LOW, "a", now=0.0)
    queue.push("b-0", LOW, "b", now=0.5)
    assert queue.pop(now=0.5) == "a-0"  # b's turn next, but a-1 is older than b-0
    queue.push("high-0", HIGH, "a", now=1.0)
    queue.push("high-1", HIGH, "a", now=1.0)
    assert queue.pop(now=1.0) == "a-1"  # deadline 1.0
    assert queue.pop(now=1.0) == "high-0"  # b-0 waits until 1.5
    assert queue.pop(now=1.5) == "b-0"
    assert queue.pop(now=1.5) == "high-1"


def test_among_equally_old_items_the_tenant_whose_turn_comes_first_is_aged_first() -> None:
    queue = scheduler({HIGH: None, NORMAL: None, LOW: 1.0})
    queue.push("a-0", LOW, "a", now=0.0)
    queue.push("b-0", LOW, "b", now=0.0)
    queue.push("high", HIGH, "a", now=1.0)
    assert pop_all(queue, now=1.0) == ["a-0", "b-0", "high"]


# --- aging and the starvation bound ------------------------------------------------------------


def flood_with_high(queue: PriorityScheduler[str], pops: int, first_pop: int = 0) -> list[str]:
    """Push one HIGH item before every pop, ``now`` advancing by one millisecond per pop."""
    popped = []
    for index in range(first_pop, first_pop + pops):
        now = at(index)
        queue.push(f"high-{index}", HIGH, "flood", now)
        popped.append(queue.pop(now))
    return popped


@pytest.mark.parametrize("pushed_at_pop", [0, 500, 1250])
def test_under_a_high_flood_a_low_item_is_served_at_the_first_pop_after_its_max_wait(
    pushed_at_pop: int,
) -> None:
    queue = scheduler(AGED)
    before = flood_with_high(queue, pushed_at_pop)
    queue.push("low", LOW, "batch", now=at(pushed_at_pop))
    popped = flood_with_high(queue, 3000, first_pop=pushed_at_pop)

    # max_wait[LOW] = 2.0 s at one pop per ms: the deadline falls on pop 2000 after the push.
    expected_pop = pushed_at_pop + round(LOW_WAIT * POPS_PER_SECOND)
    assert at(expected_pop - 1) < at(pushed_at_pop) + LOW_WAIT <= at(expected_pop)
    assert "low" not in before
    assert popped.index("low") + pushed_at_pop == expected_pop
    assert all(item.startswith("high-") for item in popped if item != "low")
    assert len(queue) == 1  # one HIGH item is left: the one pushed in the pop that served LOW


def test_under_a_high_flood_each_lower_priority_is_served_at_its_own_deadline() -> None:
    queue = scheduler(AGED)
    queue.push("low", LOW, "batch", now=0.0)
    queue.push("normal", NORMAL, "batch", now=0.0)
    popped = flood_with_high(queue, 2500)
    assert popped.index("normal") == round(NORMAL_WAIT * POPS_PER_SECOND)  # pop 500
    assert popped.index("low") == round(LOW_WAIT * POPS_PER_SECOND)  # pop 2000


def test_under_a_high_flood_a_low_item_with_no_max_wait_is_never_served() -> None:
    queue = scheduler({HIGH: HIGH_WAIT, NORMAL: NORMAL_WAIT, LOW: None})
    queue.push("low", LOW, "batch", now=0.0)
    popped = flood_with_high(queue, 10_000)
    assert "low" not in popped
    assert queue.depths() == {CRITICAL: 0, HIGH: 0, NORMAL: 0, LOW: 1}
    assert queue.pop(now=1e9) == "low"  # served once the flood is over


def test_a_critical_flood_starves_even_overdue_items_by_design() -> None:
    queue = scheduler(AGED)
    queue.push("low", LOW, "batch", now=0.0)
    for index in range(5000):
        now = at(index)
        queue.push(f"critical-{index}", CRITICAL, "flood", now)
        assert queue.pop(now) == f"critical-{index}"
    assert queue.pop(now=5.0) == "low"


def test_overdue_items_are_served_earliest_deadline_first_not_by_priority() -> None:
    queue = scheduler({HIGH: 0.05, NORMAL: 1.0, LOW: 0.2})
    queue.push("normal", NORMAL, "acme", now=0.0)  # deadline 1.0
    queue.push("low", LOW, "acme", now=0.1)  # deadline 0.3
    queue.push("high", HIGH, "acme", now=2.0)  # not overdue yet
    assert pop_all(queue, now=2.0) == ["low", "normal", "high"]


def test_overdue_items_with_equal_deadlines_go_by_priority() -> None:
    queue = scheduler({HIGH: 0.5, NORMAL: 1.0, LOW: 0.5})
    queue.push("low", LOW, "acme", now=0.5)  # deadline 1.0
    queue.push("normal", NORMAL, "acme", now=0.0)  # deadline 1.0
    queue.push("high", HIGH, "acme", now=0.75)  # deadline 1.25
    assert queue.pop(now=1.0) == "normal"
    assert queue.pop(now=1.0) == "low"
    assert queue.pop(now=1.0) == "high"


def test_only_overdue_items_jump_the_queue() -> None:
    queue = scheduler(AGED)
    queue.push("low", LOW, "acme", now=0.0)  # deadline 2.0
    queue.push("normal", NORMAL, "acme", now=0.0)  # deadline 0.5
    queue.push("high-1", HIGH, "acme", now=0.6)
    queue.push("high-2", HIGH, "acme", now=0.6)
    assert queue.pop(now=0.6) == "normal"  # overdue since 0.5
    assert queue.pop(now=0.6) == "high-1"  # low (deadline 2.0) is not overdue yet
    assert queue.pop(now=0.6) == "high-2"
    assert queue.pop(now=0.6) == "low"


def test_zero_max_wait_ages_at_once() -> None:
    queue = scheduler({HIGH: None, NORMAL: None, LOW: 0.0})
    queue.push("high", HIGH, "acme", now=0.0)
    queue.push("low", LOW, "acme", now=0.0)
    assert queue.pop(now=0.0) == "low"


def test_a_deadline_is_tracked_for_an_item_pushed_after_its_priority_ran_empty() -> None:
    queue = scheduler(AGED)
    queue.push("low-1", LOW, "acme", now=0.0)
    assert queue.pop(now=0.0) == "low-1"
    flood_with_high(queue, 100)  # with LOW empty, nothing can become overdue
    queue.push("low-2", LOW, "acme", now=at(100))
    popped = flood_with_high(queue, 2100, first_pop=100)
    assert popped.index("low-2") + 100 == 2100  # pushed at pop 100, waits 2.0 s


# --- bookkeeping -------------------------------------------------------------------------------


def test_an_empty_scheduler_has_nothing_to_pop() -> None:
    queue = scheduler()
    assert len(queue) == 0
    with pytest.raises(IndexError, match="empty"):
        queue.pop(now=0.0)


def test_len_depths_and_tenant_depths_count_pending_items() -> None:
    queue = scheduler()
    queue.push("1", HIGH, "acme", now=0.0)
    queue.push("2", HIGH, "globex", now=0.0)
    queue.push("3", LOW, "acme", now=0.0)
    queue.push("4", CRITICAL, "acme", now=0.0)
    assert len(queue) == 4
    assert queue.depths() == {CRITICAL: 1, HIGH: 2, NORMAL: 0, LOW: 1}
    assert queue.tenant_depths() == {"acme": 3, "globex": 1}

    queue.pop(now=0.0)
    queue.pop(now=0.0)
    assert len(queue) == 2
    assert queue.depths() == {CRITICAL: 0, HIGH: 1, NORMAL: 0, LOW: 1}
    assert queue.tenant_depths() == {"acme": 1, "globex": 1}


def test_drain_returns_everything_in_priority_then_turn_order_and_empties() -> None:
    queue = scheduler(AGED)
    queue.push("low-a", LOW, "a", now=0.0)
    queue.push("high-a1", HIGH, "a", now=0.0)
    queue.push("high-a2", HIGH, "a", now=0.0)
    queue.push("high-b1", HIGH, "b", now=0.0)
    queue.push("critical-b", CRITICAL, "b", now=0.0)
    assert queue.drain() == ["critical-b", "high-a1", "high-b1", "high-a2", "low-a"]
    assert len(queue) == 0
    assert queue.depths() == dict.fromkeys(Priority, 0)
    assert queue.tenant_depths() == {}
    assert queue.drain() == []
    with pytest.raises(IndexError):
        queue.pop(now=10.0)


def test_a_drained_scheduler_can_be_used_again() -> None:
    queue = scheduler(AGED)
    queue.push("low", LOW, "acme", now=0.0)
    queue.drain()
    queue.push("high", HIGH, "acme", now=5.0)
    queue.push("low", LOW, "acme", now=5.0)
    assert pop_all(queue, now=6.0) == ["high", "low"]


def test_oldest_wait_is_the_wait_of_the_oldest_pending_item() -> None:
    queue = scheduler()
    assert queue.oldest_wait(now=5.0) == 0.0
    queue.push("a", HIGH, "acme", now=2.0)
    queue.push("b", LOW, "globex", now=1.0)
    queue.push("c", CRITICAL, "acme", now=3.0)
    assert queue.oldest_wait(now=5.0) == 4.0
    queue.drain()
    assert queue.oldest_wait(now=5.0) == 0.0


@pytest.mark.parametrize("bad", [-0.001, -1.0, math.nan])
@pytest.mark.parametrize("priority", [HIGH, NORMAL, LOW])
def test_a_negative_or_nan_max_wait_is_refused(priority: Priority, bad: float) -> None:
    max_wait = dict(NEVER_AGED)
    max_wait[priority] = bad
    with pytest.raises(ValueError, match=rf"max_wait\[{priority.name}\] must be >= 0"):
        PriorityScheduler[str](max_wait)


def test_a_missing_max_wait_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="no entry for LOW"):
        PriorityScheduler[str]({HIGH: 1.0, NORMAL: 1.0})


def test_an_infinite_max_wait_is_accepted_and_never_ages() -> None:
    queue = scheduler({HIGH: None, NORMAL: None, LOW: math.inf})
    queue.push("low", LOW, "acme", now=0.0)
    queue.push("high", HIGH, "acme", now=0.0)
    assert queue.pop(now=1e12) == "high"


# --- properties --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    priority: Priority
    tenant: str
    ticks: int  # time since the previous operation


@dataclass(frozen=True)
class Pop:
    ticks: int


@dataclass(frozen=True)
class Pending:
    priority: Priority
    tenant: str
    pushed_at: float


# Time in whole ticks (the scheduler does not care about the unit), so that a pop falls exactly
# on a deadline, and deadlines of different priorities coincide, often enough to be tested.
ticks = st.sampled_from([0, 0, 1, 2, 5])
max_waits = st.sampled_from([None, 0.0, 1.0, 3.0, 10.0])
operations = st.lists(
    st.one_of(
        st.builds(
            Push,
            # CRITICAL rarer than the others: while one is pending, aging is switched off
            st.sampled_from([CRITICAL, HIGH, HIGH, NORMAL, NORMAL, LOW, LOW]),
            st.sampled_from(["a", "b", "c"]),
            ticks,
        ),
        st.builds(Pop, ticks),
    ),
    max_size=150,
)


def assert_follows_the_policy(
    taken: Pending,
    pending: Mapping[int, Pending],
    waits: Mapping[Priority, float | None],
    now: float,
) -> None:
    """The item taken is one the module docstring's rules a, b, c allow."""

    def deadline(entry: Pending) -> float:
        wait = waits.get(entry.priority)
        return math.inf if wait is None else entry.pushed_at + wait

    overdue = [entry for entry in pending.values() if now >= deadline(entry)]
    if any(entry.priority is CRITICAL for entry in pending.values()):
        assert taken.priority is CRITICAL
    elif overdue:
        assert now >= deadline(taken)
        earliest = min((deadline(entry), entry.priority) for entry in overdue)
        assert (deadline(taken), taken.priority) == earliest
    else:
        assert taken.priority == min(entry.priority for entry in pending.values())


@settings(max_examples=300)
@given(max_waits, max_waits, max_waits, operations)
def test_any_sequence_of_operations_loses_nothing_duplicates_nothing_and_follows_the_policy(
    high_wait: float | None,
    normal_wait: float | None,
    low_wait: float | None,
    ops: list[Push | Pop],
) -> None:
    waits = {HIGH: high_wait, NORMAL: normal_wait, LOW: low_wait}
    queue: PriorityScheduler[int] = PriorityScheduler(waits)
    pending: dict[int, Pending] = {}  # items are numbered in push order
    popped: list[int] = []
    now = 0.0
    for op in ops:
        now += op.ticks
        if isinstance(op, Push):
            item = len(popped) + len(pending)
            queue.push(item, op.priority, op.tenant, now)
            pending[item] = Pending(op.priority, op.tenant, now)
        elif not pending:
            with pytest.raises(IndexError):
                queue.pop(now)
        else:
            item = queue.pop(now)
            assert item in pending, "an item came out twice, or was never pushed"
            taken = pending[item]
            key = (taken.priority, taken.tenant)
            same_queue = [
                i for i, entry in pending.items() if (entry.priority, entry.tenant) == key
            ]
            assert item == min(same_queue), "FIFO broken within one tenant and priority"
            assert_follows_the_policy(taken, pending, waits, now)
            del pending[item]
            popped.append(item)

        assert len(queue) == len(pending)
        assert queue.depths() == {
            p: [e.priority for e in pending.values()].count(p) for p in Priority
        }
        assert queue.tenant_depths() == dict(Counter(e.tenant for e in pending.values()))

    drained = queue.drain()
    assert sorted(popped + drained) == list(range(len(popped) + len(pending)))
    assert sorted(drained) == sorted(pending)
    priorities = [pending[item].priority for item in drained]
    assert priorities == sorted(priorities), "drain is in priority order"
    for key in {(entry.priority, entry.tenant) for entry in pending.values()}:
        same_queue = [i for i in drained if (pending[i].priority, pending[i].tenant) == key]
        assert same_queue == sorted(same_queue), "drain keeps FIFO within a tenant and priority"
    assert len(queue) == 0


def test_an_item_pushed_back_to_the_front_comes_out_before_later_items_and_keeps_its_age() -> None:
    queue = scheduler({Priority.HIGH: None, Priority.NORMAL: None, Priority.LOW: 1.0})
    queue.push("later", Priority.LOW, "acme", now=5.0)
    queue.push_front("held", Priority.LOW, "acme", pushed_at=0.0)
    assert len(queue) == 2
    queue.push("high", Priority.HIGH, "acme", now=5.0)
    # "held" was first pushed at 0.0: at 5.0 it is long overdue and beats the HIGH item.
    assert [queue.pop(now=5.0) for _ in range(3)] == ["held", "high", "later"]
