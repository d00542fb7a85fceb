"""The version rules a frequency agent keeps, per service (pure: no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from eventcenter.pressure.sample_agent import AgentState, FrequencyUpdate


def update(version: int, service: str = "orders", **changes: Any) -> FrequencyUpdate:
    values: dict[str, Any] = {
        "service": service,
        "agent": "agent-1",
        "version": version,
        "rate": 12.5,
        "interval": 0.08,
        "target": 50.0,
        "reason": "capacity measured",
        "at": 1_700_000_000.0,
    }
    return FrequencyUpdate(**{**values, **changes})


def test_a_newer_version_is_applied_the_same_is_unchanged_an_older_is_stale() -> None:
    state = AgentState("agent-1")

    assert state.offer(update(2)) == "applied"
    assert state.offer(update(2, rate=99.0)) == "unchanged"
    assert state.offer(update(1)) == 2, "stale: the version held"
    assert state.offer(update(3)) == "applied"

    (held,) = state.updates()
    assert held.version == 3


def test_each_service_has_its_own_versions() -> None:
    state = AgentState("agent-1")
    state.offer(update(5, "orders"))

    assert state.offer(update(1, "billing")) == "applied"
    assert [u.service for u in state.updates()] == ["billing", "orders"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate": -1.0}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"interval": 0.0}, "interval"),
        ({"version": -1}, "version"),
        ({"service": ""}, "service"),
    ],
)
def test_bad_values_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        update(**{"version": 1, **changes})

    assert [e["loc"] for e in refused.value.errors()] == [(field,)]


def test_a_paused_update_must_stop_the_agent() -> None:
    with pytest.raises(ValidationError, match="paused update carries rate 0"):
        update(1, paused=True)

    paused = update(1, paused=True, rate=0.0, interval=None)
    assert (
        paused.line() == "orders version 1: paused (0 req/s, polling stopped) - capacity measured"
    )


def test_the_console_line_says_rate_and_polling_interval() -> None:
    assert update(4).line() == "orders version 4: 12.5 req/s, poll every 0.08 s - capacity measured"
