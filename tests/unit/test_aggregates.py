"""Event-sourced aggregates (in memory), the retry back-off and the frequency factor."""

from __future__ import annotations

import math
from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.backoff import backoff_delay
from eventcenter.domain.decisions import Decision, Transition, frequency_factor
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.fsm import ADJUSTING, LOAD_TESTING, STABLE

#: Attributes every eventsourcing domain event carries; the tests look at the rest.
BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def recorded(aggregate: Aggregate) -> list[tuple[str, dict[str, Any]]]:
    """The aggregate's pending events as (name, attributes), collecting them."""
    return [
        (
            type(event).__name__,
            {k: v for k, v in vars(event).items() if k not in BOOKKEEPING},
        )
        for event in aggregate.collect_events()
    ]


@pytest.fixture
def processor() -> ProcessorLog:
    """A freshly opened log, with its Opened event already collected."""
    log = ProcessorLog("center-1")
    log.collect_events()
    return log


def dead_letter() -> DeadLetter:
    return DeadLetter(
        envelope={"type": "order.placed", "payload": {"n": 1}},
        subscription="billing",
        error_type="ConnectionError",
        error="billing API down",
        attempts=5,
    )


# --- ProcessorLog ------------------------------------------------------------------------------


def test_the_processor_log_id_is_derived_from_the_name() -> None:
    assert ProcessorLog.create_id("center-1") == ProcessorLog.create_id("center-1")
    assert ProcessorLog.create_id("center-1") != ProcessorLog.create_id("center-2")
    assert ProcessorLog("center-1").id == ProcessorLog.create_id("center-1")


def test_a_new_processor_log_is_opened_stable_with_no_history() -> None:
    log = ProcessorLog("center-1")
    assert (log.name, log.state, log.transitions, log.decisions) == ("center-1", STABLE, 0, 0)
    assert recorded(log) == [("Opened", {"name": "center-1"})]


def test_a_transition_is_recorded_with_its_cause_and_moves_the_state(
    processor: ProcessorLog,
) -> None:
    processor.transition(
        Transition("begin_adjustment", STABLE, ADJUSTING, "latency spike", "evt-1")
    )
    assert recorded(processor) == [
        (
            "Transitioned",
            {
                "trigger": "begin_adjustment",
                "source": STABLE,
                "dest": ADJUSTING,
                "reason": "latency spike",
                "correlation_id": "evt-1",
            },
        )
    ]
    assert (processor.state, processor.transitions) == (ADJUSTING, 1)


def test_transitions_chain_from_state_to_state(processor: ProcessorLog) -> None:
    processor.transition(Transition("begin_adjustment", STABLE, ADJUSTING, "spike", "e1"))
    processor.transition(Transition("begin_load_test", ADJUSTING, LOAD_TESTING, "probe", "e1"))
    assert [attrs["dest"] for _, attrs in recorded(processor)] == [ADJUSTING, LOAD_TESTING]
    assert (processor.state, processor.transitions) == (LOAD_TESTING, 2)


def test_a_transition_from_another_state_is_refused_and_records_nothing(
    processor: ProcessorLog,
) -> None:
    with pytest.raises(EventCenterError, match="center-1") as caught:
        processor.transition(Transition("settle", ADJUSTING, STABLE, "calm", "e1"))
    assert "'stable'" in str(caught.value)
    assert "'adjusting'" in str(caught.value)
    assert recorded(processor) == []
    assert (processor.state, processor.transitions, processor.version) == (STABLE, 0, 1)


def test_a_decision_is_recorded_with_its_reason_cause_tenant_and_details(
    processor: ProcessorLog,
) -> None:
    details = {"factor": 0.5, "service": "orders"}
    processor.decide(
        Decision("frequency.reduce", "p95 over 200 ms", "evt-9", "acme", details, "e9/sub/1")
    )
    assert recorded(processor) == [
        (
            "DecisionRecorded",
            {
                "kind": "frequency.reduce",
                "reason": "p95 over 200 ms",
                "correlation_id": "evt-9",
                "tenant": "acme",
                "details": details,
                "cause": "e9/sub/1",
            },
        )
    ]
    assert processor.decisions == 1
    assert processor.state == STABLE


def test_a_decision_records_a_copy_of_its_details(processor: ProcessorLog) -> None:
    details: dict[str, Any] = {"factor": 0.5}
    processor.decide(Decision("frequency.reduce", "slow", "evt-9", details=details))
    details["factor"] = 0.1
    [(_, attrs)] = recorded(processor)
    assert attrs["details"] == {"factor": 0.5}
    assert attrs["tenant"] == "default"


# --- DeadLetter --------------------------------------------------------------------------------


def test_a_dead_letter_records_the_envelope_and_why_it_failed() -> None:
    letter = dead_letter()
    assert recorded(letter) == [
        (
            "Recorded",
            {
                "envelope": {"type": "order.placed", "payload": {"n": 1}},
                "subscription": "billing",
                "error_type": "ConnectionError",
                "error": "billing API down",
                "attempts": 5,
                "replay_of": "",
            },
        )
    ]
    assert letter.status == DeadLetter.PENDING == "pending"
    assert letter.replays == 0


def test_replaying_a_dead_letter_marks_it_replayed_with_the_reason() -> None:
    letter = dead_letter()
    letter.collect_events()
    letter.replay("billing API is back")
    assert recorded(letter) == [("Replayed", {"reason": "billing API is back"})]
    assert (letter.status, letter.replays) == (DeadLetter.REPLAYED, 1)


def test_a_dead_letter_cannot_be_replayed_twice() -> None:
    letter = dead_letter()
    letter.replay("first")
    letter.collect_events()
    with pytest.raises(EventCenterError, match="already replayed"):
        letter.replay("second")
    assert recorded(letter) == []
    assert letter.replays == 1


# --- backoff_delay -----------------------------------------------------------------------------


def test_the_back_off_ceiling_doubles_with_each_attempt() -> None:
    delays = [backoff_delay(attempt, base=0.1, cap=100.0, jitter=1.0) for attempt in range(1, 6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])


def test_the_back_off_never_exceeds_the_cap() -> None:
    delays = [backoff_delay(attempt, base=1.0, cap=5.0, jitter=1.0) for attempt in range(1, 10)]
    assert delays == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0])


@pytest.mark.parametrize(("jitter", "expected"), [(0.0, 0.0), (0.25, 1.0), (0.5, 2.0), (1.0, 4.0)])
def test_full_jitter_scales_the_delay_between_zero_and_the_ceiling(
    jitter: float, expected: float
) -> None:
    assert backoff_delay(3, base=1.0, cap=60.0, jitter=jitter) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [0, -1])
def test_an_attempt_below_one_is_rejected(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        backoff_delay(attempt, base=1.0, cap=10.0, jitter=0.5)


@pytest.mark.parametrize("jitter", [-0.1, 1.1, math.nan])
def test_a_jitter_outside_zero_to_one_is_rejected(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter must be in"):
        backoff_delay(1, base=1.0, cap=10.0, jitter=jitter)


def test_a_very_late_attempt_is_still_capped() -> None:
    assert backoff_delay(2_000, base=0.05, cap=5.0, jitter=1.0) == 5.0


# --- frequency_factor --------------------------------------------------------------------------


@pytest.mark.parametrize("observed_ms", [0.0, 150.0, 200.0])
def test_latency_at_or_under_the_threshold_leaves_the_frequency_alone(observed_ms: float) -> None:
    assert frequency_factor(observed_ms, threshold_ms=200.0) == 1.0


@pytest.mark.parametrize(("observed_ms", "expected"), [(400.0, 0.5), (250.0, 0.8), (300.0, 0.667)])
def test_the_factor_is_proportional_to_how_far_over_the_threshold(
    observed_ms: float, expected: float
) -> None:
    assert frequency_factor(observed_ms, threshold_ms=200.0) == expected


def test_the_factor_never_drops_below_the_floor() -> None:
    assert frequency_factor(10_000.0, threshold_ms=200.0) == 0.25
    assert frequency_factor(10_000.0, threshold_ms=200.0, floor=0.1) == 0.1


@pytest.mark.parametrize("threshold_ms", [0.0, -5.0])
def test_a_threshold_that_is_not_positive_is_rejected(threshold_ms: float) -> None:
    with pytest.raises(ValueError, match="threshold_ms must be positive"):
        frequency_factor(100.0, threshold_ms=threshold_ms)
