"""The AdjustmentCoordinator: strategies per service, hot swaps, the deadband and versions,
the split across agents, request frequencies and polling intervals, pause and resume."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventcenter.domain.adjustment import (
    AdjustmentCoordinator,
    Agent,
    ServiceControl,
    TuningConfig,
    polling_interval,
    polling_load_factor,
    split_by_weight,
)
from eventcenter.domain.errors import TuningRefused
from eventcenter.domain.rate_strategies import Aimd, Headroom, Observation, Pid
from tests.unit.load_targets import QueueingPlant

AGENTS = [Agent(name="eu-1", weight=3), Agent(name="us-1", weight=1)]


def coordinator(**config: object) -> AdjustmentCoordinator:
    return AdjustmentCoordinator(TuningConfig.model_validate(config))


def seen(at: float, latency: float, throughput: float = 1e9) -> Observation:
    return Observation(at, throughput, latency)


class TestStart:
    def test_a_measured_capacity_is_split_by_weight_into_frequencies_and_intervals(self) -> None:
        tuner = coordinator(strategy={"strategy": "headroom", "utilisation": 0.8})

        adjustment = tuner.capacity_measured("orders", 200.0, at=10.0, agents=AGENTS)

        assert (adjustment.target, adjustment.version, adjustment.changed) == (160, 1, True)
        assert [(a.agent, a.rate, a.interval) for a in adjustment.agents] == [
            ("eu-1", 120, 0.01),  # 1/120 s, clamped to min_interval
            ("us-1", 40, 0.025),
        ]
        assert adjustment.reason == "capacity 200 req/s measured: headroom starts over"

    def test_each_service_gets_its_configured_strategy(self) -> None:
        tuner = coordinator(
            services={"billing": {"strategy": "aimd", "latency_limit": "300ms"}},
        )

        assert tuner.capacity_measured("orders", 100, at=0, agents=AGENTS).strategy == "headroom"
        billing = tuner.capacity_measured("billing", 100, at=0, agents=AGENTS)
        assert (billing.strategy, billing.target) == ("aimd", 50)

    def test_a_new_measurement_starts_the_strategy_over_within_new_bounds(self) -> None:
        tuner = coordinator(strategy={"strategy": "aimd", "latency_limit": 0.2})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)
        for t in range(1, 30):
            tuner.observe("orders", seen(t, 0.05))

        again = tuner.capacity_measured("orders", 40, at=30)

        assert (again.target, again.capacity) == (20, 40)
        assert [a.agent for a in again.agents] == ["eu-1", "us-1"]  # agents kept

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda t: t.observe("orders", seen(1, 0.1)), "no capacity is known for it yet"),
            (lambda t: t.capacity_measured("orders", 100, at=0), "no agent to send"),
            (lambda t: t.capacity_measured("orders", 0, at=0, agents=AGENTS), "positive rate"),
            (
                lambda t: t.capacity_measured("orders", 100, at=0, agents=AGENTS + AGENTS[:1]),
                "agents named more than once: eu-1",
            ),
        ],
    )
    def test_what_cannot_be_tuned_is_refused_with_the_reason(self, call, message: str) -> None:
        with pytest.raises(TuningRefused, match=message) as refused:
            call(coordinator())

        assert refused.value.service == "orders"


class TestPublishing:
    def test_a_move_within_the_deadband_keeps_the_published_version(self) -> None:
        tuner = coordinator(
            strategy={"strategy": "aimd", "latency_limit": 0.2, "increase": 0.01},
            deadband=0.05,
        )
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        small = tuner.observe("orders", seen(1, 0.05))  # 50 -> 51: 2 %
        assert (small.changed, small.version, small.target) == (False, 1, 50)
        assert "within the deadband: 50 req/s kept" in small.reason
        for t in range(2, 4):
            moved = tuner.observe("orders", seen(t, 0.05))
        assert (moved.changed, moved.version, moved.target) == (True, 2, 53)

    def test_a_latency_spike_lowers_the_frequency_at_once(self) -> None:
        tuner = coordinator(strategy={"strategy": "aimd", "latency_limit": 0.2, "backoff": 0.5})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        spike = tuner.observe("orders", seen(1, 0.9))

        assert (spike.target, spike.version) == (25, 2)
        assert spike.reason.startswith("latency 0.9s / errors 0.00% over the limits")

    def test_the_agents_can_change_under_the_same_target(self) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        moved = tuner.set_agents("orders", [Agent(name="ap-1")], at=1)

        assert [(a.agent, a.rate) for a in moved.agents] == [("ap-1", 80)]
        assert moved.version == 2

    def test_an_adjustment_reads_as_plain_values(self) -> None:
        values = coordinator().capacity_measured("orders", 100, at=0, agents=AGENTS).as_dict()

        assert values["agents"][1] == {"agent": "us-1", "weight": 1, "rate": 20, "interval": 0.05}
        assert values["version"] == 1


class TestSwap:
    def test_carrying_the_state_over_keeps_the_rate(self) -> None:
        tuner = coordinator(strategy={"strategy": "headroom", "utilisation": 0.9})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        swapped = tuner.swap("orders", Pid(latency_target=0.2), at=5, carry=True)

        assert (swapped.strategy, swapped.target, swapped.version) == ("pid", 90, 1)
        assert "strategy headroom -> pid (carried over)" in swapped.reason
        # bumpless: at the setpoint the PID holds the carried rate
        assert tuner.observe("orders", seen(6, 0.2)).target == 90

    def test_resetting_starts_the_new_strategy_from_its_own_initial_rate(self) -> None:
        tuner = coordinator(strategy={"strategy": "headroom", "utilisation": 0.9})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        swapped = tuner.swap("orders", Aimd(latency_limit=0.2, start_share=0.3), at=5, carry=False)

        assert (swapped.target, swapped.version, swapped.changed) == (30, 2, True)
        assert "(reset)" in swapped.reason

    def test_a_new_configuration_swaps_only_the_services_whose_strategy_changed(self) -> None:
        tuner = coordinator(strategy={"strategy": "headroom", "utilisation": 0.9})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)
        tuner.capacity_measured("billing", 100, at=0, agents=AGENTS)
        config = TuningConfig.model_validate(
            {
                "strategy": {"strategy": "headroom", "utilisation": 0.9},
                "services": {"billing": {"strategy": "headroom", "utilisation": 0.5}},
            }
        )

        changed = tuner.reconfigure(config, at=10, carry=False)

        assert [(a.service, a.target) for a in changed] == [("billing", 50)]
        assert tuner.control("orders").published == 90

    def test_a_lower_ceiling_brings_a_running_target_within_it(self) -> None:
        tuner = coordinator(strategy={"strategy": "aimd", "latency_limit": 0.2, "increase": 0.1})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)
        for t in range(1, 10):
            climbed = tuner.observe("orders", seen(t, 0.05))
        assert climbed.target == 125  # the default ceiling: 1.25 x capacity

        changed = tuner.reconfigure(
            tuner.config.model_copy(update={"ceiling": 1.1}), at=10, carry=True
        )

        assert [(a.service, a.reason) for a in changed] == [("orders", "configuration changed")]
        assert changed[0].target == pytest.approx(110)

    def test_min_rate_never_lifts_a_target_above_the_capacity(self) -> None:
        tuner = coordinator(strategy={"strategy": "headroom", "utilisation": 0.5}, min_rate=500)

        assert tuner.capacity_measured("orders", 100, at=0, agents=AGENTS).target == 100


class TestPause:
    def test_a_paused_service_stops_polling_and_resumes_where_it_was(self) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        paused = tuner.pause("orders", at=1, reason="system idle for 600s")
        ignored = tuner.observe("orders", seen(2, 0.01))
        resumed = tuner.resume("orders", at=3, reason="traffic is back")

        assert (paused.paused, paused.target, paused.version) == (True, 0, 2)
        assert all(a.rate == 0 and a.interval is None for a in paused.agents)
        assert (ignored.changed, ignored.version, ignored.reason) == (
            False,
            2,
            "paused: observation ignored",
        )
        assert (resumed.paused, resumed.target, resumed.version) == (False, 80, 3)

    def test_pausing_twice_or_resuming_a_running_service_changes_nothing(self) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        assert not tuner.resume("orders", at=1, reason="x").changed
        tuner.pause("orders", at=2, reason="idle")
        assert not tuner.pause("orders", at=3, reason="idle").changed


class TestReduce:
    """Healing lowers a service whose source is rate limited: the strategy starts again from
    the current rate divided by the factor and the rate holds at or below it until the
    service is observed recovered."""

    def test_a_reduction_divides_the_current_rate_and_is_published(self) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        reduced = tuner.reduce("orders", 2.0, at=1, reason="rca case c-1: 429 from orders")

        assert (reduced.target, reduced.version, reduced.changed) == (40, 2, True)
        assert reduced.reason == (
            "reduced 2x to 40 req/s, held until recovered: rca case c-1: 429 from orders"
        )
        assert [a.rate for a in reduced.agents] == [30, 10]
        assert tuner.reduce("orders", 2.0, at=2, reason="again").target == 20

    def test_a_reduction_stays_within_the_bounds(self) -> None:
        tuner = coordinator(min_rate=30)
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        assert tuner.reduce("orders", 2.0, at=1, reason="429").target == 40
        floor = tuner.reduce("orders", 2.0, at=2, reason="429")
        assert (floor.target, floor.changed) == (30, True)
        again = tuner.reduce("orders", 2.0, at=3, reason="429")
        assert (again.target, again.changed, again.version) == (30, False, 3)

    def test_observations_move_within_the_hold_until_the_service_recovered(self) -> None:
        tuner = coordinator(strategy={"strategy": "headroom", "latency_limit": 0.2})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)
        tuner.reduce("orders", 2.0, at=1, reason="429")

        calm = tuner.observe("orders", seen(2, 0.05))
        spike = tuner.observe("orders", seen(3, 0.8))  # headroom alone: 80 x 0.25 = 20
        mild = tuner.observe("orders", seen(4, 0.25))  # headroom alone: 80 x 0.8 = 64
        recovered = tuner.observe("orders", seen(5, 0.05), recovered=True)

        assert calm.target == 40
        assert "(held at 40 req/s since a reduction)" in calm.reason
        assert spike.target == 20, "the strategy may still come down further"
        assert mild.target == 40, "but not climb past the healing's hold"
        assert recovered.target == 80
        assert recovered.reason.startswith("recovered: the hold at 40 req/s is lifted; ")
        assert tuner.control("orders").hold is None

    def test_a_stateful_strategy_starts_again_from_the_reduced_rate(self) -> None:
        tuner = coordinator(strategy={"strategy": "aimd", "latency_limit": 0.2, "increase": 0.1})
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        assert tuner.reduce("orders", 4.0, at=1, reason="429").target == 12.5
        assert tuner.observe("orders", seen(2, 0.05)).target == 12.5, "held"
        assert tuner.observe("orders", seen(3, 0.05), recovered=True).target == 22.5

    def test_a_paused_service_stays_paused_and_resumes_at_the_reduced_rate(self) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)
        tuner.pause("orders", at=1, reason="idle")

        reduced = tuner.reduce("orders", 2.0, at=2, reason="429")
        resumed = tuner.resume("orders", at=3, reason="active")

        assert (reduced.paused, reduced.target, reduced.changed) == (True, 0, False)
        assert reduced.reason.startswith("paused; resumes at the reduced rate: reduced 2x")
        assert (resumed.paused, resumed.target) == (False, 40)

    def test_a_new_measurement_lifts_the_hold(self) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)
        tuner.reduce("orders", 2.0, at=1, reason="429")

        assert tuner.capacity_measured("orders", 100, at=2).target == 80
        assert tuner.control("orders").hold is None

    def test_the_hold_is_kept_across_a_restart(self) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)
        tuner.reduce("orders", 2.0, at=1, reason="429")
        saved = tuner.control("orders").as_dict()
        before = {k: v for k, v in saved.items() if k != "hold"}  # recorded before holds existed

        restored = AdjustmentCoordinator(tuner.config, [ServiceControl.from_dict(saved)])
        older = AdjustmentCoordinator(tuner.config, [ServiceControl.from_dict(before)])

        assert restored.observe("orders", seen(2, 0.05)).target == 40
        assert older.observe("orders", seen(2, 0.05)).target == 80

    @pytest.mark.parametrize("factor", [1.0, 0.5, float("nan")])
    def test_a_factor_that_would_not_reduce_is_refused(self, factor: float) -> None:
        tuner = coordinator()
        tuner.capacity_measured("orders", 100, at=0, agents=AGENTS)

        with pytest.raises(TuningRefused, match="must be above 1"):
            tuner.reduce("orders", factor, at=1, reason="429")

    def test_a_service_never_measured_cannot_be_reduced(self) -> None:
        with pytest.raises(TuningRefused, match="no capacity is known"):
            coordinator().reduce("orders", 2.0, at=0, reason="429")


class TestRestart:
    def test_a_coordinator_restored_from_its_controls_continues_identically(self) -> None:
        config = TuningConfig.model_validate(
            {"strategy": {"strategy": "pid", "latency_target": 0.5}, "deadband": 0.0}
        )
        first = AdjustmentCoordinator(config)
        first.capacity_measured("orders", 194.0, at=0, agents=AGENTS)
        plant = QueueingPlant()
        for t in range(1, 50):
            first.observe("orders", plant.run(first.control("orders").state.rate, 1, t))

        saved = [first.control(s).as_dict() for s in first.services]
        second = AdjustmentCoordinator(config, [ServiceControl.from_dict(v) for v in saved])

        observation = plant.run(first.control("orders").state.rate, 1, 50)
        assert second.observe("orders", observation) == first.observe("orders", observation)


class TestConfig:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"ceiling": 0.5}, "ceiling"),
            ({"min_interval": 10, "max_interval": 1}, "must not exceed max_interval"),
            ({"services": {"orders": {"strategy": "pid"}}}, "latency_target"),
            ({"strategy": {"strategy": "fast"}}, "does not match any of the expected tags"),
            ({"interval": 1}, "interval"),
        ],
    )
    def test_invalid_configuration_names_the_field(
        self, values: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValidationError, match=message):
            TuningConfig.model_validate(values)

    def test_agents_are_validated(self) -> None:
        with pytest.raises(ValidationError, match="weight"):
            Agent(name="a", weight=0)
        with pytest.raises(ValidationError, match="name"):
            Agent(name="")


def test_closing_the_loop_through_the_coordinator_settles_near_capacity() -> None:
    """AIMD through the coordinator on the 4 x 20 ms target (200 req/s) with a 500 ms limit:
    the published target stays within 10 % of capacity after settling, and the agents' shares
    always add up to it."""
    tuner = coordinator(strategy={"strategy": "aimd", "latency_limit": 0.5})
    plant = QueueingPlant(noise=0.05, seed=7)
    adjustment = tuner.capacity_measured("orders", plant.slo_rate(0.5), at=0, agents=AGENTS)
    published = []
    for t in range(1, 400):
        sent = sum(a.rate for a in adjustment.agents)
        assert sent == pytest.approx(adjustment.target)
        adjustment = tuner.observe("orders", plant.run(sent, 1.0, t))
        published.append(adjustment.target)

    tail = published[-100:]
    assert 0.9 * plant.capacity <= min(tail) <= max(tail) <= 1.1 * plant.capacity


@given(
    target=st.floats(0, 1e6),
    weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=8),
)
def test_the_split_adds_up_to_the_target_in_proportion_to_the_weights(
    target: float, weights: list[float]
) -> None:
    agents = [Agent(name=f"a{i}", weight=w) for i, w in enumerate(weights)]

    shares = split_by_weight(target, agents)

    assert sum(shares) == pytest.approx(target, rel=1e-9, abs=1e-9)
    total = sum(weights)
    for share, weight in zip(shares, weights, strict=True):
        assert share == pytest.approx(target * weight / total, rel=1e-9, abs=1e-12)


@settings(max_examples=200)
@given(
    low=st.floats(0.001, 10),
    high=st.floats(10, 1e4),
    per_poll=st.floats(0.1, 100),
    rates=st.tuples(st.floats(1e-6, 1e6), st.floats(1e-6, 1e6)),
)
def test_polling_intervals_stay_within_bounds_and_shrink_as_the_rate_grows(
    low: float, high: float, per_poll: float, rates: tuple[float, float]
) -> None:
    slow, fast = sorted(rates)

    a = polling_interval(slow, per_poll, low, high)
    b = polling_interval(fast, per_poll, low, high)

    assert a is not None
    assert b is not None
    assert low <= b <= a <= high
    assert polling_interval(0.0, per_poll, low, high) is None


def test_the_polling_load_factor_follows_the_published_rate() -> None:
    """Sources poll as configured at the normal rate, slower in proportion below it, never
    faster, and as slowly as they may while the service is paused."""
    config = TuningConfig(strategy=Headroom(utilisation=0.8, latency_limit=0.2))
    coordinator = AdjustmentCoordinator(config)
    normal = coordinator.capacity_measured("api", 100.0, at=0.0, agents=[Agent(name="a")])
    spike = coordinator.observe("api", Observation(at=1.0, throughput=80.0, latency=0.8))
    paused = coordinator.pause("api", at=2.0, reason="idle")

    assert polling_load_factor(config, normal) == pytest.approx(1.0)
    assert polling_load_factor(config, spike) == pytest.approx(4.0)  # a quarter of the rate
    assert polling_load_factor(config, paused) == 1e6
