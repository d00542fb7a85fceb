"""What the dispatcher sends and the limits of its policy (pure: no HTTP)."""

from __future__ import annotations

import pytest

from eventcenter.domain.adjustment import AdjustmentCoordinator, Agent, TuningConfig
from eventcenter.domain.errors import ConfigurationError
from eventcenter.pressure.dispatcher import (
    DispatchPolicy,
    breaker_name,
    frequency_body,
    idempotency_key,
)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"timeout": 0.0}, "timeout must be positive"),
        ({"retry_after_max": -1.0}, "retry_after_max must be >= 0"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(changes: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        DispatchPolicy(**changes)  # type: ignore[arg-type]


def test_names_and_keys_say_service_agent_and_version() -> None:
    assert breaker_name("orders", "a") == "dispatch:orders:a"
    assert idempotency_key("orders", "a", 7) == "orders:a:7"


def test_a_paused_body_stops_the_agent_whatever_its_share() -> None:
    control = AdjustmentCoordinator(TuningConfig())
    running = control.capacity_measured("orders", 80.0, at=1.0, agents=[Agent(name="a")])
    paused = control.pause("orders", at=2.0, reason="idle")

    sent = frequency_body(running, running.agents[0], "c")
    stopped = frequency_body(paused, running.agents[0], "c")

    assert sent["rate"] == running.agents[0].rate > 0
    assert sent["interval"] == running.agents[0].interval
    assert (stopped["rate"], stopped["interval"], stopped["paused"]) == (0.0, None, True)
    assert stopped["version"] == paused.version == running.version + 1
