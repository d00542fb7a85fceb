"""The throughput record of a deployment signature, the deployment order of a service, and the
capacity regression gate between two signatures."""

from __future__ import annotations

import math
from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from eventcenter.domain.deployments import RECENT, ServiceDeployments
from eventcenter.domain.errors import ThroughputRefused
from eventcenter.domain.knee import KneeRule, Step, find_knee
from eventcenter.domain.throughput import (
    CapacityRegression,
    Measurement,
    RegressionGate,
    ThroughputRecorder,
    capacity_regression,
)

BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}
CURVE = [
    Step(50, 50, 0.01, 0.02, 0.03, 0.0, 10),
    Step(100, 99.5, 0.012, 0.03, 0.04, 0.0, 10),
    Step(200, 160, 0.4, 1.2, 1.8, 0.0, 10),
]
SETTINGS = {"plan": {"start_rate": 50}, "rule": {"slo_p95": 0.2}}
GATE = RegressionGate(max_drop=0.2)


def recorded(aggregate: Aggregate) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if k not in BOOKKEEPING})
        for e in aggregate.collect_events()
    ]


def measurement(max_rps: float = 99.5, verdict: str = "capacity", **changes: Any) -> Measurement:
    values: dict[str, Any] = {
        "max_rps": max_rps,
        "verdict": verdict,
        "lower": max_rps,
        "upper": 200.0 if verdict in ("capacity", "below_range") else None,
        "p50": 0.012,
        "p95": 0.03,
        "p99": 0.04,
        "error_rate": 0.0,
        "duration": 36.0,
    }
    return Measurement(**(values | changes))


def new_record() -> ThroughputRecorder:
    record = ThroughputRecorder.register("orders", "sha256:aa", at=0.0)
    record.collect_events()
    return record


class TestMeasurement:
    def test_a_knee_becomes_a_measurement_with_its_curve_and_settings(self) -> None:
        knee = find_knee(CURVE, KneeRule(slo_p95=0.2))

        made = Measurement.from_knee(knee, CURVE, duration=36.0, settings=SETTINGS)

        assert (made.max_rps, made.verdict, made.upper) == (99.5, "capacity", 200)
        assert made.curve[2] == CURVE[2].as_dict()
        assert Measurement.from_dict(made.as_dict()) == made

    @pytest.mark.parametrize(
        ("verdict", "usable", "at_least", "at_most"),
        [
            ("capacity", True, 99.5, 99.5),
            ("generator_bound", True, 99.5, math.inf),
            ("above_range", True, 99.5, math.inf),
            ("below_range", False, 0.0, 200.0),
        ],
    )
    def test_each_verdict_bounds_the_capacity_its_own_way(
        self, verdict: str, usable: bool, at_least: float, at_most: float
    ) -> None:
        made = measurement(verdict=verdict)

        assert (made.usable, made.at_least, made.at_most) == (usable, at_least, at_most)


class TestRecorder:
    def test_the_id_derives_from_service_and_signature(self) -> None:
        record = new_record()

        assert record.id == ThroughputRecorder.create_id("orders", "sha256:aa")
        assert record.id != ThroughputRecorder.create_id("orders", "sha256:ab")
        assert record.id != ThroughputRecorder.create_id("billing", "sha256:aa")

    @pytest.mark.parametrize(("service", "signature"), [("", "sha"), ("orders", "")])
    def test_a_record_needs_a_service_and_a_signature(self, service: str, signature: str) -> None:
        with pytest.raises(ThroughputRefused, match="is empty"):
            ThroughputRecorder.register(service, signature, at=0.0)

    def test_a_new_record_needs_a_test(self) -> None:
        record = new_record()

        assert record.retest_reason(now=10.0) == "never measured"
        assert record.needs_retest(now=10.0)
        assert not record.has_usable_record(now=10.0)

    def test_a_measurement_is_recorded_with_its_cause(self) -> None:
        record = new_record()

        record.record_measurement(measurement(), at=5.0, correlation_id="dep-1")

        [(name, values)] = recorded(record)
        assert name == "Measured"
        assert values == {"at": 5.0, "correlation_id": "dep-1", **measurement().as_dict()}
        assert record.latest == measurement()
        assert record.has_usable_record(now=10.0)

    def test_the_same_measurement_for_the_same_cause_is_recorded_once(self) -> None:
        record = new_record()

        record.record_measurement(measurement(), at=5.0, correlation_id="dep-1")
        record.record_measurement(measurement(), at=6.0, correlation_id="dep-1")
        record.record_measurement(measurement(98.0), at=7.0, correlation_id="dep-1")

        assert [name for name, _ in recorded(record)] == ["Measured", "Measured"]
        assert record.measurements == 2

    def test_a_flag_asks_for_a_retest_until_the_next_measurement(self) -> None:
        record = new_record()
        record.record_measurement(measurement(), at=5.0, correlation_id="dep-1")

        record.flag_for_retest("latency spike 900ms", at=8.0, correlation_id="spike-1")
        record.flag_for_retest("another spike", at=9.0, correlation_id="spike-2")

        assert record.retest_reason(now=10.0) == "flagged for retest: latency spike 900ms"
        record.record_measurement(measurement(90.0), at=20.0, correlation_id="retest-1")
        assert record.has_usable_record(now=21.0)
        names = [name for name, _ in recorded(record)]
        assert names == ["Measured", "FlaggedForRetest", "Measured"]

    def test_a_flag_needs_a_reason(self) -> None:
        with pytest.raises(ThroughputRefused, match="say why"):
            new_record().flag_for_retest("", at=1.0, correlation_id="x")

    def test_an_old_measurement_counts_as_missing_when_an_age_is_given(self) -> None:
        record = new_record()
        record.record_measurement(measurement(), at=100.0, correlation_id="dep-1")

        assert record.has_usable_record(now=10_000.0)
        assert record.retest_reason(now=10_000.0, max_age=3600) == (
            "measured 9900s ago, older than 3600s"
        )

    def test_a_capacity_below_the_lowest_rate_is_no_usable_record(self) -> None:
        record = new_record()
        record.record_measurement(measurement(0.0, "below_range"), at=5.0, correlation_id="dep-1")

        reason = record.retest_reason(now=10.0)
        assert reason is not None
        assert "test lower" in reason

    def test_a_long_history_loads_from_a_snapshot(self) -> None:
        class Records(Application[Any]):
            snapshotting_intervals = {ThroughputRecorder: 5}

        app = Records()
        try:
            record = ThroughputRecorder.register("orders", "sha256:aa", at=0.0)
            for i in range(12):
                record.record_measurement(measurement(100.0 + i), at=i, correlation_id=f"c{i}")
                record.flag_for_retest(f"spike {i}", at=i + 0.5, correlation_id=f"s{i}")
            app.save(record)

            loaded: ThroughputRecorder = app.repository.get(record.id)

            assert app.snapshots is not None
            assert list(app.snapshots.get(record.id))
            assert vars(loaded) == vars(record) | {"_pending_events": []}
        finally:
            app.close()


class TestRegressionGate:
    def test_a_drop_past_the_gate_is_a_regression_with_both_figures(self) -> None:
        found = capacity_regression(
            GATE,
            service="orders",
            previous_signature="sha256:aa",
            previous=measurement(100.0),
            signature="sha256:bb",
            new=measurement(70.0),
        )

        assert found is not None
        assert found.drop == pytest.approx(0.3)
        assert found == CapacityRegression(
            "orders", "sha256:bb", "sha256:aa", 70.0, 100.0, found.drop, 0.2
        )
        assert found.reason == (
            "orders sha256:bb sustains 70 req/s, 30% below sha256:aa (100 req/s);"
            " the gate allows 20%"
        )

    def test_a_drop_within_the_gate_is_none(self) -> None:
        assert (
            capacity_regression(
                GATE,
                service="orders",
                previous_signature="a",
                previous=measurement(100.0),
                signature="b",
                new=measurement(80.0),
            )
            is None
        )

    def test_a_new_lower_bound_never_proves_a_regression(self) -> None:
        found = capacity_regression(
            GATE,
            service="orders",
            previous_signature="a",
            previous=measurement(100.0),
            signature="b",
            new=measurement(10.0, "generator_bound"),
        )

        assert found is None

    def test_a_previous_lower_bound_still_shows_a_slower_new_capacity(self) -> None:
        found = capacity_regression(
            GATE,
            service="orders",
            previous_signature="a",
            previous=measurement(100.0, "generator_bound"),
            signature="b",
            new=measurement(50.0),
        )

        assert found is not None
        assert found.drop == pytest.approx(0.5)

    def test_a_new_capacity_below_its_lowest_rate_is_a_regression_below_that_rate(self) -> None:
        found = capacity_regression(
            GATE,
            service="orders",
            previous_signature="a",
            previous=measurement(300.0),
            signature="b",
            new=measurement(0.0, "below_range", upper=50.0),
        )

        assert found is not None
        assert found.max_rps == 50.0
        assert "sustains less than 50 req/s" in found.reason

    def test_the_gate_is_validated(self) -> None:
        with pytest.raises(ValidationError, match="max_drop"):
            RegressionGate(max_drop=1.0)

    def test_a_regression_is_recorded_once_on_the_new_signature(self) -> None:
        record = new_record()
        record.record_measurement(measurement(70.0), at=5.0, correlation_id="dep-2")
        regression = CapacityRegression("orders", "sha256:aa", "sha256:00", 70.0, 100.0, 0.3, 0.2)

        record.record_regression(regression, at=6.0, correlation_id="dep-2")
        record.record_regression(regression, at=7.0, correlation_id="dep-2")

        events = recorded(record)
        assert [name for name, _ in events] == ["Measured", "CapacityRegressed"]
        assert events[1][1]["previous_rps"] == 100.0
        assert record.regression is not None
        assert record.regression["max_rps"] == 70.0

    def test_a_regression_of_another_record_or_before_a_measurement_is_refused(self) -> None:
        record = new_record()
        other = CapacityRegression("orders", "sha256:bb", "sha256:aa", 70.0, 100.0, 0.3, 0.2)
        mine = CapacityRegression("orders", "sha256:aa", "sha256:00", 70.0, 100.0, 0.3, 0.2)

        with pytest.raises(ThroughputRefused, match="nothing was measured"):
            record.record_regression(mine, at=1.0, correlation_id="x")
        record.record_measurement(measurement(70.0), at=2.0, correlation_id="x")
        with pytest.raises(ThroughputRefused, match="is about orders@sha256:bb"):
            record.record_regression(other, at=3.0, correlation_id="x")


verdicts = st.sampled_from(["capacity", "generator_bound", "above_range", "below_range"])


@given(
    before=st.floats(1, 1e4),
    after=st.floats(0.5, 1e4),
    old=verdicts,
    new=verdicts,
    drop=st.floats(0.01, 0.99),
)
def test_the_gate_flags_exactly_what_the_bounds_prove(
    before: float, after: float, old: str, new: str, drop: float
) -> None:
    previous = measurement(before, old, upper=before)
    latest = measurement(after, new, upper=after)

    found = capacity_regression(
        RegressionGate(max_drop=drop),
        service="s",
        previous_signature="a",
        previous=previous,
        signature="b",
        new=latest,
    )

    proven = latest.at_most < previous.at_least * (1 - drop)
    assert (found is not None) == proven
    if found is not None:
        assert found.drop > drop
        assert new in ("capacity", "below_range")
        assert old != "below_range"


class TestDeployments:
    def test_each_deployment_makes_the_one_before_it_previous(self) -> None:
        history = ServiceDeployments.register("orders", at=0.0)

        history.deployed("a", at=1.0, correlation_id="d1")
        history.deployed("b", at=2.0, correlation_id="d2")
        history.deployed("a", at=3.0, correlation_id="d3")  # a rollback

        assert (history.current, history.previous, history.deployments) == ("a", "b", 3)
        assert ServiceDeployments.create_id("orders") == history.id

    def test_the_running_signature_reported_again_changes_nothing(self) -> None:
        history = ServiceDeployments.register("orders", at=0.0)
        history.deployed("a", at=1.0, correlation_id="d1")
        history.collect_events()

        history.deployed("a", at=2.0, correlation_id="d1")

        assert history.collect_events() == []
        assert history.previous is None

    def test_only_the_recent_deployments_are_kept_in_the_state(self) -> None:
        history = ServiceDeployments.register("orders", at=0.0)
        for i in range(RECENT + 5):
            history.deployed(f"sig{i}", at=float(i), correlation_id=f"d{i}")

        assert len(history.recent) == RECENT
        assert history.recent[-1]["signature"] == f"sig{RECENT + 4}"

    def test_empty_names_are_refused(self) -> None:
        with pytest.raises(ThroughputRefused):
            ServiceDeployments.register("", at=0.0)
        with pytest.raises(ThroughputRefused, match="signature is empty"):
            ServiceDeployments.register("orders", at=0.0).deployed("", at=1.0, correlation_id="x")
