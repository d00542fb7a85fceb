"""The pure health rules, with ``now`` passed in: status from thresholds, the spread of checks,
recovery back-off and cool-down, statistics, alert hysteresis, the report, and the config."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from eventcenter.domain.health import (
    RECENT_FAILURES,
    AlertThresholds,
    AlertTracker,
    CheckResult,
    CheckSchedule,
    CheckSettings,
    HealthStatus,
    HealthThresholds,
    IncidentOutcome,
    RecoveryAttempt,
    RecoveryPolicy,
    RecoveryRule,
    ServiceHealth,
    health_report,
    recovery_stats,
)

HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN = (
    HealthStatus.HEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNHEALTHY,
    HealthStatus.UNKNOWN,
)
PASS = CheckResult.passed()
FAIL = CheckResult.failed("connection refused")
T = HealthThresholds(degraded_after=2, unhealthy_after=3, healthy_after=2, slow_after=1.0)


def run(outcomes: str, thresholds: HealthThresholds = T, seconds: float = 0.1) -> ServiceHealth:
    """Fold checks written as a string: ``+`` passed, ``-`` failed, ``s`` passed but slow."""
    record = ServiceHealth("db")
    for now, outcome in enumerate(outcomes, start=1):
        result = FAIL if outcome == "-" else PASS
        took = 2.0 if outcome == "s" else seconds
        record = record.observe(result, took, float(now), thresholds)
    return record


def statuses(outcomes: str, thresholds: HealthThresholds = T) -> list[HealthStatus]:
    return [run(outcomes[:n], thresholds).status for n in range(1, len(outcomes) + 1)]


# status ------------------------------------------------------------------------------------------


def test_a_service_is_unknown_until_its_first_check() -> None:
    record = ServiceHealth("db")
    assert record.status is UNKNOWN
    assert record.reason == "not checked yet"
    assert record.success_rate is None
    assert run("+").status is HEALTHY


def test_failures_make_a_service_degraded_then_unhealthy_at_their_thresholds() -> None:
    assert statuses("+----") == [HEALTHY, HEALTHY, DEGRADED, UNHEALTHY, UNHEALTHY]
    record = run("+---")
    assert record.reason == "3 consecutive failed checks (last: connection refused)"


def test_fewer_failures_than_degraded_after_change_nothing_a_blip_is_absorbed() -> None:
    assert statuses("+-+-+") == [HEALTHY] * 5
    assert statuses("-") == [UNKNOWN]  # one failure proves no more than no check yet
    assert run("-").reason == "1 failed check(s), degraded after 2 (last: connection refused)"


def test_coming_back_takes_healthy_after_passed_checks_degraded_until_then() -> None:
    assert statuses("---++") == [UNKNOWN, DEGRADED, UNHEALTHY, DEGRADED, HEALTHY]
    assert run("---+").reason == "recovering: 1 of 2 passed checks"
    assert run("---++").reason == "2 consecutive passed checks"


def test_a_slow_pass_is_degraded_and_slow_after_none_never_is() -> None:
    assert statuses("+s+") == [HEALTHY, DEGRADED, HEALTHY]
    assert run("+s").reason == "slow: 2s > 1s"
    never = T.model_copy(update={"slow_after": None})
    assert statuses("+s+", never) == [HEALTHY, HEALTHY, HEALTHY]


def test_the_record_counts_totals_streaks_and_keeps_the_last_error() -> None:
    record = run("+--++")
    assert record.total_checks == 5
    assert record.total_failures == 2
    assert record.total_successes == 3
    assert record.success_rate == pytest.approx(0.6)
    assert (record.consecutive_failures, record.consecutive_successes) == (0, 2)
    assert record.last_error == "connection refused"  # kept after the service came back
    assert (record.last_checked, record.last_success, record.last_failure) == (5.0, 5.0, 3.0)
    assert record.response_time == pytest.approx(0.1)


def test_status_since_moves_only_when_the_status_changes() -> None:
    record = run("++")
    assert record.status_since == 1.0  # unknown -> healthy at the first check
    assert run("++--").status_since == 4.0
    assert run("++---").status_since == 5.0


def test_the_record_is_a_snapshot_observe_returns_a_new_one() -> None:
    before = run("+")
    after = before.observe(FAIL, 0.1, 2.0, T)
    assert before.total_checks == 1
    assert after.total_checks == 2


@given(st.lists(st.sampled_from("+-s"), max_size=40))
def test_property_counts_and_status_follow_the_trailing_run(outcomes: list[str]) -> None:
    text = "".join(outcomes)
    record = run(text)
    assert record.total_checks == len(text)
    assert record.total_failures == text.count("-")
    trailing_failures = len(text) - len(text.rstrip("-"))
    assert record.consecutive_failures == trailing_failures
    if trailing_failures >= T.unhealthy_after:
        assert record.status is UNHEALTHY
    if record.status is UNHEALTHY:
        assert trailing_failures >= T.unhealthy_after
    if record.status is HEALTHY:  # the last answer was a fast pass, then at most a blip
        assert trailing_failures < T.degraded_after
        assert text.rstrip("-")[-1] == "+"
    if record.status is UNKNOWN:
        assert set(text) <= {"-"}
        assert len(text) < T.degraded_after


# schedule ----------------------------------------------------------------------------------------


def test_first_checks_spread_over_the_interval_with_a_seeded_random() -> None:
    schedule = CheckSchedule(interval=10.0, timeout=1.0, jitter=0.1)
    rng = random.Random(42)
    starts = [schedule.first_delay(rng.random()) for _ in range(200)]
    assert all(0.0 <= start < 10.0 for start in starts)
    per_second = Counter(int(start) for start in starts)
    assert len(per_second) == 10  # every second of the interval has some
    assert max(per_second.values()) <= 40  # none holds a herd (uniform: 20 each)
    again = random.Random(42)
    assert starts == [schedule.first_delay(again.random()) for _ in range(200)]


def test_each_interval_varies_by_the_jitter_around_its_mean() -> None:
    schedule = CheckSchedule(interval=10.0, timeout=1.0, jitter=0.2)
    assert schedule.next_delay(0.0) == pytest.approx(8.0)
    assert schedule.next_delay(1.0) == pytest.approx(12.0)
    assert schedule.next_delay(0.5) == pytest.approx(10.0)
    rng = random.Random(7)
    gaps = [schedule.next_delay(rng.random()) for _ in range(1000)]
    assert all(8.0 <= gap <= 12.0 for gap in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(10.0, rel=0.02)
    assert CheckSchedule(interval=5, timeout=1, jitter=0).next_delay(0.9) == 5.0


def test_a_random_draw_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"random draw must be in \[0, 1\]"):
        CheckSchedule().first_delay(1.5)


# recovery rules ----------------------------------------------------------------------------------


def test_the_first_attempt_runs_at_once_later_ones_back_off_exponentially() -> None:
    rule = RecoveryRule(backoff_base=1.0, backoff_cap=5.0, jitter=0.0)
    assert [rule.delay_before(n, 0.5) for n in range(1, 7)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_back_off_jitter_takes_off_at_most_its_share_and_repeats_with_the_seed() -> None:
    rule = RecoveryRule(backoff_base=2.0, backoff_cap=60.0, jitter=0.5)
    assert rule.delay_before(3, 0.0) == pytest.approx(4.0)
    assert rule.delay_before(3, 1.0) == pytest.approx(2.0)
    first = [rule.delay_before(3, random.Random(3).random()) for _ in range(2)]
    assert first[0] == first[1]
    rng = random.Random(11)
    delays = [rule.delay_before(4, rng.random()) for _ in range(500)]
    assert all(4.0 <= delay <= 8.0 for delay in delays)
    assert len({round(delay, 6) for delay in delays}) > 400  # spread, not a single value
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        rule.delay_before(0, 0.5)


def test_an_incident_opens_at_the_failure_threshold_and_not_twice() -> None:
    policy = RecoveryPolicy(RecoveryRule(failure_threshold=3))
    assert not policy.should_start(2, now=10.0)
    assert policy.should_start(3, now=10.0)
    policy.start(10.0)
    assert not policy.should_start(5, now=11.0)
    with pytest.raises(ValueError, match="already open"):
        policy.start(11.0)


def test_a_verified_attempt_ends_the_incident_and_starts_the_cool_down() -> None:
    policy = RecoveryPolicy(RecoveryRule(failure_threshold=1, max_attempts=3, cool_down=60.0))
    policy.start(0.0)
    assert policy.next_attempt() == 1
    assert policy.attempted(False, 1.0) is None
    assert policy.next_attempt() == 2
    assert policy.attempted(True, 4.0) is IncidentOutcome.RECOVERED
    assert not policy.in_incident
    assert policy.state.cool_down_until == 64.0
    assert not policy.should_start(10, now=63.9)  # no thrashing
    assert policy.should_start(10, now=64.0)


def test_max_attempts_without_a_green_re_check_gives_up() -> None:
    policy = RecoveryPolicy(RecoveryRule(max_attempts=2, cool_down=5.0))
    policy.start(0.0)
    assert policy.attempted(False, 1.0) is None
    assert policy.attempted(False, 2.0) is IncidentOutcome.GAVE_UP
    assert policy.state.attempts == 2
    assert policy.state.cool_down_until == 7.0
    with pytest.raises(ValueError, match="no recovery incident is open"):
        policy.next_attempt()


# recovery statistics -----------------------------------------------------------------------------


def attempt(action: str, verified: bool, since: float, done: float, n: int = 1) -> RecoveryAttempt:
    error = None if verified else "re-check 1 failed: refused"
    return RecoveryAttempt("cache", action, n, since, done - 1.0, done, verified, error)


def test_stats_give_attempts_success_rate_mean_recovery_time_by_action() -> None:
    stats = recovery_stats(
        [
            attempt("reconnect", False, since=0.0, done=2.0),
            attempt("restart", True, since=0.0, done=10.0, n=2),
            attempt("restart", True, since=100.0, done=120.0),
            attempt("restart", False, since=200.0, done=201.0),
        ]
    )
    stats.incident_ended(IncidentOutcome.RECOVERED)
    stats.incident_ended(IncidentOutcome.RECOVERED)
    report = stats.as_dict()
    assert report["total_attempts"] == 4
    assert report["successful_attempts"] == 2
    assert report["success_rate"] == pytest.approx(0.5)
    assert report["average_recovery_time"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert report["actions_by_type"] == {
        "reconnect": {
            "attempts": 1,
            "successes": 0,
            "success_rate": 0.0,
            "average_recovery_time": None,
        },
        "restart": {
            "attempts": 3,
            "successes": 2,
            "success_rate": pytest.approx(2 / 3),
            "average_recovery_time": pytest.approx(15.0),
        },
    }
    assert report["incidents"] == {"recovered": 2, "recovered_alone": 0, "gave_up": 0}
    assert [f["action"] for f in report["recent_failures"]] == ["reconnect", "restart"]


def test_stats_before_any_attempt_say_none_not_zero() -> None:
    report = recovery_stats([]).as_dict()
    assert report["success_rate"] is None
    assert report["average_recovery_time"] is None


def test_recent_failures_are_bounded() -> None:
    stats = recovery_stats(attempt("restart", False, 0.0, float(n + 1)) for n in range(50))
    assert len(stats.as_dict()["recent_failures"]) == RECENT_FAILURES
    assert stats.as_dict()["recent_failures"][-1]["at"] == 50.0


# alerts ------------------------------------------------------------------------------------------

RATE = AlertThresholds(
    window=10,
    min_checks=5,
    success_rate_below=0.8,
    success_rate_clear=0.9,
    response_time_above=None,
    response_time_clear=None,
)


def feed(tracker: AlertTracker, outcomes: str, seconds: float = 0.1) -> list[tuple[str, bool]]:
    fired: list[tuple[str, bool]] = []
    for now, outcome in enumerate(outcomes):
        for alert in tracker.observe(outcome == "+", seconds, float(now)):
            fired.append((alert.kind, alert.firing))
    return fired


def test_nothing_fires_before_min_checks() -> None:
    assert feed(AlertTracker("api", RATE), "----") == []
    assert feed(AlertTracker("api", RATE), "-----") == [("success_rate", True)]


def test_a_success_rate_hovering_at_its_line_alerts_once() -> None:
    tracker = AlertTracker("api", RATE)
    # 10 passes, then failures push the rate to 0.7 (fires), then it wobbles between
    # 0.7 and 0.8 (below the clearing line 0.9): no second alert, no clear.
    fired = feed(tracker, "++++++++++" + "---" + "+-+-+-" + "-+-+")
    assert fired == [("success_rate", True)]
    assert tracker.firing == {"success_rate"}


def test_an_alert_clears_past_its_clearing_line_and_can_fire_again() -> None:
    tracker = AlertTracker("api", RATE)
    fired = feed(tracker, "++++++++++" + "---" + "+" * 9 + "---")
    assert fired == [("success_rate", True), ("success_rate", False), ("success_rate", True)]


def test_one_slow_blip_does_not_alert_a_sustained_slowdown_does_once() -> None:
    slow = AlertThresholds(
        window=10,
        min_checks=5,
        success_rate_below=None,
        success_rate_clear=None,
        response_time_above=1.0,
        response_time_clear=0.5,
    )
    tracker = AlertTracker("api", slow)
    alerts = [tracker.observe(True, t, float(n)) for n, t in enumerate([0.1] * 9 + [5.0])]
    assert [a for batch in alerts for a in batch] == []  # mean 0.59: one blip
    later = [tracker.observe(True, 2.0, float(10 + n)) for n in range(10)]
    fired = [a for batch in later for a in batch]
    assert [(a.kind, a.firing) for a in fired] == [("response_time", True)]
    assert fired[0].message.startswith("ALERT: api mean response time")
    back = [a for n in range(10) for a in tracker.observe(True, 0.1, float(20 + n))]
    assert [(a.kind, a.firing) for a in back] == [("response_time", False)]
    assert back[0].message.startswith("cleared: api mean response time")


# report ------------------------------------------------------------------------------------------


def test_the_report_has_each_service_and_counts_by_status() -> None:
    records = [run("+", T), run("+---", T), run("+--", T), ServiceHealth("new")]
    named = [
        replace(record, service=name)
        for record, name in zip(records, ["api", "db", "cache", "new"], strict=True)
    ]
    report = health_report(named, now=10.0, monitoring_active=True).as_dict()
    assert list(report["services"]) == ["api", "cache", "db", "new"]
    assert report["summary"] == {
        "total": 4,
        "healthy": 1,
        "degraded": 1,
        "unhealthy": 1,
        "unknown": 1,
    }
    db = report["services"]["db"]
    assert db["status"] == "unhealthy"
    assert db["consecutive_failures"] == 3
    assert db["consecutive_successes"] == 0
    assert db["total_checks"] == 4
    assert db["response_time"] == pytest.approx(0.1)
    assert db["last_error"] == "connection refused"
    assert db["checked_ago"] == pytest.approx(6.0)
    assert report["services"]["new"]["checked_ago"] is None
    assert report["timestamp"] == 10.0
    assert report["monitoring_active"] is True


def test_a_failed_result_keeps_a_bounded_error() -> None:
    assert CheckResult.failed("x" * 10_000).error == "x" * 500
    assert CheckResult.failed("").error == "failed"


# configuration -----------------------------------------------------------------------------------


def test_settings_take_durations_as_text() -> None:
    settings = CheckSettings.model_validate(
        {"schedule": {"interval": "1m", "timeout": "500ms"}, "thresholds": {"slow_after": "2s"}}
    )
    assert settings.schedule.interval == 60.0
    assert settings.schedule.timeout == 0.5
    assert settings.thresholds.slow_after == 2.0
    assert RecoveryRule.model_validate({"cool_down": "5m"}).cool_down == 300.0


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (HealthThresholds, {"degraded_after": 4, "unhealthy_after": 3}, "must not exceed"),
        (HealthThresholds, {"unhealthy_after": 0}, "greater than or equal to 1"),
        (HealthThresholds, {"slow_after": "fast"}, "not a duration"),
        (CheckSchedule, {"interval": 5, "timeout": 10}, "checks of one service would pile up"),
        (CheckSchedule, {"jitter": 1.5}, "less than or equal to 1"),
        (CheckSchedule, {"intervall": 5}, "Extra inputs are not permitted"),
        (AlertThresholds, {"min_checks": 30, "window": 20}, "must not exceed window"),
        (AlertThresholds, {"success_rate_below": 0.9, "success_rate_clear": 0.8}, "at least"),
        (AlertThresholds, {"response_time_above": 1, "response_time_clear": 2}, "not exceed"),
        (AlertThresholds, {"success_rate_clear": None}, "or neither"),
        (RecoveryRule, {"backoff_base": 10, "backoff_cap": 5}, "at least backoff_base"),
        (RecoveryRule, {"max_attempts": 0}, "greater than or equal to 1"),
        (RecoveryRule, {"cool_down": "-5s"}, "duration"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    model: type[HealthThresholds], values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate(values)
