"""The source log: its events and attributes, refusals, idempotent recording, snapshots, and
resuming the policy from it."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from eventcenter.domain.errors import SourceModeRefused
from eventcenter.domain.hysteresis import (
    Hysteresis,
    HysteresisConfig,
    HysteresisDecision,
    Switch,
    ThresholdDecayed,
    ThresholdRaised,
)
from eventcenter.domain.source_log import RECENT, SourceLog
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID, POLLING_ONLY

BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}
CONFIG = HysteresisConfig()


def recorded(aggregate: Aggregate) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if k not in BOOKKEEPING})
        for e in aggregate.collect_events()
    ]


def new_log(*, push: bool = True, poll: bool = True) -> SourceLog:
    log = SourceLog.register("acme", "orders", at=0.0, has_push=push, has_poll=poll, config=CONFIG)
    log.collect_events()
    return log


def down(at: float = 3.0) -> Switch:
    return Switch(at, EVENT_ONLY, HYBRID, "3 consecutive push failures", 3, 0, 3)


def flapping_decisions() -> tuple[Hysteresis, list[HysteresisDecision]]:
    policy = Hysteresis.start(CONFIG, now=0.0)
    made: list[HysteresisDecision] = []
    for second in range(1500):
        for k in range(10):
            now = second + k / 10
            if second % 2:
                made += policy.push_succeeded(now)
            else:
                made += policy.push_failed(now, "x")
    return policy, made


def test_the_log_id_is_derived_from_tenant_and_source() -> None:
    assert SourceLog.create_id("acme", "orders") == new_log().id
    assert SourceLog.create_id("acme", "orders") != SourceLog.create_id("other", "orders")
    assert SourceLog.create_id("acme", "orders") != SourceLog.create_id("acme", "order")


def test_registering_records_the_paths_and_the_configuration() -> None:
    log = SourceLog.register("acme", "orders", at=5.0, has_push=False, has_poll=True, config=CONFIG)

    assert recorded(log) == [
        (
            "Registered",
            {
                "tenant": "acme",
                "source": "orders",
                "at": 5.0,
                "has_push": False,
                "has_poll": True,
                "config": CONFIG.as_dict(),
            },
        )
    ]
    assert (log.mode, log.level, log.name) == (POLLING_ONLY, 0, "acme/orders")
    assert log.hysteresis_config == CONFIG


def test_a_source_without_paths_cannot_register() -> None:
    with pytest.raises(ValueError, match="push path, a poll path, or both"):
        SourceLog.register("acme", "x", at=0.0, has_push=False, has_poll=False, config=CONFIG)


def test_a_switch_is_recorded_with_its_reason_and_counts() -> None:
    log = new_log()

    log.record(down())

    assert recorded(log) == [
        (
            "ModeSwitched",
            {
                "at": 3.0,
                "previous": EVENT_ONLY,
                "to": HYBRID,
                "reason": "3 consecutive push failures",
                "failures": 3,
                "successes": 0,
                "threshold": 3,
                "cool_down_until": None,
            },
        )
    ]
    assert (log.mode, log.switches, log.stable_since) == (HYBRID, 1, 3.0)
    assert log.recent == [
        {"at": 3.0, "previous": EVENT_ONLY, "to": HYBRID, "reason": "3 consecutive push failures"}
    ]


def test_recording_the_latest_decision_again_changes_nothing() -> None:
    log = new_log()
    raised = ThresholdRaised(3.0, 1, 4, 6, "4 switches within 300s")
    log.record(down())
    log.record(raised)
    log.collect_events()

    log.record(raised)
    log.record(down())

    assert recorded(log) == []
    assert (log.switches, log.level) == (1, 1)


def test_a_switch_from_another_mode_than_the_log_holds_is_refused() -> None:
    log = new_log()

    with pytest.raises(SourceModeRefused, match="cannot record a switch hybrid -> event_only"):
        log.record(Switch(1.0, HYBRID, EVENT_ONLY, "x", 0, 5, 5))
    assert recorded(log) == []


def test_threshold_levels_must_follow_on_from_the_one_held() -> None:
    log = new_log()

    with pytest.raises(SourceModeRefused, match="the next level is 1, not 2"):
        log.record(ThresholdRaised(1.0, 2, 5, 7, "x"))
    with pytest.raises(SourceModeRefused, match="the next level is -1, not 0"):
        log.record(ThresholdDecayed(1.0, 0, 3, 5, "x"))


def test_thresholds_raised_and_decayed_are_recorded() -> None:
    log = new_log()
    log.record(ThresholdRaised(1.0, 1, 4, 6, "4 switches within 300s"))
    log.record(ThresholdDecayed(601.0, 0, 3, 5, "no switch for 600s"))

    assert [name for name, _ in recorded(log)] == ["ThresholdRaised", "ThresholdDecayed"]
    assert (log.level, log.stable_since) == (0, 601.0)


def test_a_rollback_is_recorded_and_moves_the_mode() -> None:
    log = new_log()
    log.record(down())
    log.collect_events()

    log.roll_back(at=3.5, attempted=HYBRID, landed=EVENT_ONLY, reason="poll path would not start")

    assert recorded(log) == [
        (
            "SwitchRolledBack",
            {
                "at": 3.5,
                "attempted": HYBRID,
                "to": EVENT_ONLY,
                "reason": "poll path would not start",
            },
        )
    ]
    assert (log.mode, log.rollbacks) == (EVENT_ONLY, 1)


def test_a_rollback_of_a_switch_not_recorded_is_refused() -> None:
    log = new_log()

    with pytest.raises(SourceModeRefused, match="did not go to hybrid"):
        log.roll_back(at=1.0, attempted=HYBRID, landed=EVENT_ONLY, reason="x")


def test_a_reconciliation_is_recorded_with_its_counts() -> None:
    log = new_log()

    log.reconciled(at=900.0, missing=2, changed=1, deleted=0)

    assert recorded(log) == [
        ("Reconciled", {"at": 900.0, "missing": 2, "changed": 1, "deleted": 0})
    ]
    assert log.last_reconciled == {"at": 900.0, "missing": 2, "changed": 1, "deleted": 0}


def test_reconfiguring_records_only_a_change_and_keeps_the_mode_possible() -> None:
    log = new_log()
    log.reconfigure(at=1.0, has_push=True, has_poll=True, config=CONFIG)
    assert recorded(log) == []

    log.reconfigure(
        at=2.0, has_push=False, has_poll=True, config=HysteresisConfig(failure_threshold=2)
    )

    assert [name for name, _ in recorded(log)] == ["Reconfigured"]
    assert (log.mode, log.has_push, log.hysteresis_config.failure_threshold) == (
        POLLING_ONLY,
        False,
        2,
    )


def test_the_log_keeps_only_the_recent_switches_in_its_state() -> None:
    log = new_log()
    policy, made = flapping_decisions()
    for decision in made:
        log.record(decision)

    assert log.switches == sum(isinstance(d, Switch) for d in made) > RECENT
    assert len(log.recent) == RECENT
    assert (log.mode, log.level) == (policy.mode, policy.state.level)


def test_the_policy_resumes_from_the_log_where_it_was() -> None:
    log = new_log()
    policy, made = flapping_decisions()
    for decision in made:
        log.record(decision)

    resumed = log.hysteresis_state(now=policy.state.clock)

    expected = policy.state.copy()
    expected.failures = expected.successes = expected.silences = 0
    expected.last_push_at = policy.state.clock
    assert resumed == expected


def test_times_from_another_clock_are_brought_back_to_now_on_resume() -> None:
    log = new_log()
    _, made = flapping_decisions()
    for decision in made:
        log.record(decision)

    resumed = log.hysteresis_state(now=10.0)  # the clock restarted from a smaller value

    assert resumed.stable_since <= 10.0
    assert all(at <= 10.0 for at in resumed.switch_times)
    assert resumed.cool_down_until is not None
    assert resumed.cool_down_until <= 10.0 + CONFIG.cool_down


def test_an_extended_timeout_is_recorded_once_and_resumed_while_it_runs() -> None:
    log = new_log()
    policy = Hysteresis(CONFIG, log.hysteresis_state(now=100.0))
    policy.extended(100.0, "restart the stream")
    state = policy.state
    assert state.extended_until is not None
    extension = {"factor": state.timeout_factor, "until": state.extended_until}

    log.extend_timeout(at=100.0, reason="restart the stream", **extension)
    log.extend_timeout(at=100.0, reason="restart the stream", **extension)  # again: no-op

    assert recorded(log) == [
        ("TimeoutExtended", {"at": 100.0, "reason": "restart the stream", **extension})
    ]
    resumed = log.hysteresis_state(now=200.0)
    assert (resumed.timeout_factor, resumed.extended_until) == (1.5, 100.0 + CONFIG.decay_period)
    assert Hysteresis(CONFIG, resumed).event_timeout == 1.5 * CONFIG.event_timeout
    # from another clock that restarted lower, the extension lasts at most one decay period
    assert log.hysteresis_state(now=10.0).extended_until == 10.0 + CONFIG.decay_period
    # once it ran out, a resumed policy measures silence with the configured timeout
    ended = log.hysteresis_state(now=100.0 + CONFIG.decay_period)
    assert (ended.timeout_factor, ended.extended_until) == (1.0, None)
    with pytest.raises(ValueError, match="positive factor"):
        log.extend_timeout(at=300.0, factor=0.0, until=400.0, reason="bad")


class Sources(Application[Any]):
    snapshotting_intervals = {SourceLog: 10}


def test_a_long_history_is_loaded_from_a_snapshot() -> None:
    app = Sources()
    try:
        log = SourceLog.register(
            "acme", "orders", at=0.0, has_push=True, has_poll=True, config=CONFIG
        )
        _, made = flapping_decisions()
        for decision in made:
            log.record(decision)
        log.reconciled(at=200.0, missing=1, changed=0, deleted=3)
        app.save(log)

        snapshots = list(app.snapshots.get(log.id)) if app.snapshots else []
        loaded: SourceLog = app.repository.get(log.id)

        assert snapshots, "no snapshot was taken"
        assert vars(loaded) == vars(log) | {"_pending_events": []}
    finally:
        app.close()
