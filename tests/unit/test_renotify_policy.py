"""Re-notification of an unanswered case, as a pure function of its state and an explicit now."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.escalation import (
    EscalationNotice,
    OpenEscalation,
    RenotifyPolicy,
    next_renotify_at,
    renotification_due,
)

SENT = 1_700_000_000.0


def sent(notification: int = 1, at: float = SENT, answered: bool = False) -> OpenEscalation:
    notice = EscalationNotice(
        case_id="case-1",
        tenant="acme",
        source="orders",
        category="connection_failure",
        severity="high",
        summary="connection refused",
        evidence=[],
        attempts=[],
        opened_at=SENT - 600.0,
        escalated_at=SENT,
        notification=notification,
        notified_at=at,
    )
    return OpenEscalation(notice, last_sent_at=at, answered=answered)


POLICY = RenotifyPolicy(after=600.0, factor=2.0, max_wait=2000.0, max_renotifications=4)


def test_nothing_is_due_before_the_wait_and_a_reminder_is_due_from_its_end() -> None:
    case = sent()

    assert renotification_due(POLICY, case, SENT + 599.999) is None
    reminder = renotification_due(POLICY, case, SENT + 600.0)

    assert reminder is not None
    assert reminder.notification == 2
    assert reminder.sent_at == SENT + 600.0
    assert reminder.notice_id != case.notice.notice_id


def test_a_late_pass_sends_one_reminder_dated_when_it_is_sent() -> None:
    reminder = renotification_due(POLICY, sent(), SENT + 5000.0)

    assert reminder is not None
    assert reminder.notification == 2
    assert reminder.sent_at == SENT + 5000.0


def test_each_wait_grows_by_the_factor_up_to_the_cap() -> None:
    waits = [POLICY.wait_before(n) for n in range(1, 6)]

    assert waits == [600.0, 1200.0, 2000.0, 2000.0, 2000.0]


def test_waits_count_from_the_last_sending() -> None:
    after_second = sent(notification=2, at=SENT + 700.0)

    assert next_renotify_at(POLICY, after_second) == SENT + 700.0 + 1200.0


def test_a_steady_rhythm_with_factor_one() -> None:
    steady = RenotifyPolicy(after=300.0, factor=1.0, max_wait=300.0, max_renotifications=3)

    assert [steady.wait_before(n) for n in (1, 2, 3)] == [300.0, 300.0, 300.0]


def test_reminders_stop_after_the_bounded_count() -> None:
    last_allowed = sent(notification=4)  # 3 reminders sent so far: one more is allowed
    spent = sent(notification=5)  # 4 reminders sent: the budget is spent

    assert renotification_due(POLICY, last_allowed, SENT + 10_000.0) is not None
    assert next_renotify_at(POLICY, spent) is None
    assert renotification_due(POLICY, spent, SENT + 1e9) is None


def test_an_answered_case_is_never_reminded() -> None:
    answered = sent(answered=True)

    assert next_renotify_at(POLICY, answered) is None
    assert renotification_due(POLICY, answered, SENT + 1e9) is None


def test_no_reminders_at_all_with_a_budget_of_zero() -> None:
    never = RenotifyPolicy(after=60.0, max_wait=60.0, max_renotifications=0)

    assert renotification_due(never, sent(), SENT + 1e9) is None


def test_a_clock_that_stepped_back_never_dates_a_reminder_before_the_last_sending() -> None:
    case = sent(notification=2, at=SENT + 700.0)
    # the owner recorded a last sending earlier than the notice's own time
    skewed = OpenEscalation(case.notice, last_sent_at=SENT, answered=False)

    reminder = renotification_due(POLICY, skewed, SENT + 1300.0)

    assert reminder is not None
    assert reminder.sent_at >= case.notice.sent_at


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"after": 0.0}, "after must be > 0"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"after": 600.0, "max_wait": 60.0}, "must be at least after"),
        ({"max_renotifications": -1}, "max_renotifications"),
        ({"after": float("inf")}, "after must be > 0"),
    ],
)
def test_a_policy_refuses_values_that_cannot_work(values: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        RenotifyPolicy(**values)  # type: ignore[arg-type]


@given(
    after=st.floats(1.0, 1e5),
    factor=st.floats(1.0, 10.0),
    cap_ratio=st.floats(1.0, 1e3),
    budget=st.integers(0, 12),
    steps=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=60),
)
def test_reminders_are_bounded_spaced_by_the_policy_and_numbered_in_order(
    after: float, factor: float, cap_ratio: float, budget: int, steps: list[float]
) -> None:
    policy = RenotifyPolicy(after, factor, after * cap_ratio, budget)
    case = sent()
    now = SENT
    sent_times = [SENT]
    for step in steps:
        now += step
        reminder = renotification_due(policy, case, now)
        if reminder is None:
            continue
        assert reminder.notification == case.notice.notification + 1
        assert now >= case.last_sent_at + policy.wait_before(case.notice.notification)
        sent_times.append(now)
        case = OpenEscalation(reminder, reminder.sent_at)

    assert len(sent_times) - 1 <= budget
    assert all(b >= a + after for a, b in itertools.pairwise(sent_times))
