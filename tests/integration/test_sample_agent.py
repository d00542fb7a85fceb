"""The sample agent over real HTTP on loopback: validation, version rules, what it shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from eventcenter.pressure.sample_agent import FrequencyUpdate, create_agent_app, serving


def body(version: int, **changes: Any) -> dict[str, Any]:
    return {
        "service": "orders",
        "agent": "agent-1",
        "version": version,
        "rate": 12.5,
        "interval": 0.08,
        "paused": False,
        "target": 50.0,
        "reason": "capacity measured",
        "at": 1_700_000_000.0,
        "correlation_id": "tune-1",
        **changes,
    }


class Heard:
    def __init__(self) -> None:
        self.updates: list[FrequencyUpdate] = []

    async def __call__(self, update: FrequencyUpdate) -> None:
        self.updates.append(update)


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
async def agent(heard: Heard) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(create_agent_app("agent-1", on_update=heard)) as url,
        httpx.AsyncClient(base_url=url, timeout=10.0) as client,
    ):
        yield client


async def test_versions_newer_applied_same_unchanged_older_stale(
    agent: httpx.AsyncClient, heard: Heard
) -> None:
    applied = await agent.post("/frequency", json=body(2))
    same = await agent.post("/frequency", json=body(2, rate=99.0))
    older = await agent.post("/frequency", json=body(1))
    held = (await agent.get("/frequency")).json()

    assert (applied.status_code, applied.json()["status"]) == (200, "applied")
    assert (same.status_code, same.json()["status"]) == (200, "unchanged")
    assert (older.status_code, older.json()) == (409, {"status": "stale", "version": 2})
    assert held["agent"] == "agent-1"
    assert [(u["version"], u["rate"]) for u in held["updates"]] == [(2, 12.5)]
    assert [u.version for u in heard.updates] == [2], "told of applied updates only"


async def test_a_bad_field_is_a_422_naming_it(agent: httpx.AsyncClient, heard: Heard) -> None:
    wrong_type = await agent.post("/frequency", json=body(1, rate="fast"))
    missing = await agent.post("/frequency", json={k: v for k, v in body(1).items() if k != "at"})

    assert wrong_type.status_code == 422
    assert [e["loc"] for e in wrong_type.json()["detail"]] == [["body", "rate"]]
    assert missing.status_code == 422
    assert [e["loc"] for e in missing.json()["detail"]] == [["body", "at"]]
    assert heard.updates == []


async def test_an_update_for_another_agent_is_refused(agent: httpx.AsyncClient) -> None:
    answer = await agent.post("/frequency", json=body(1, agent="agent-2"))

    assert answer.status_code == 400
    assert "addressed to agent 'agent-2'" in answer.json()["detail"]
    assert (await agent.get("/frequency")).json()["updates"] == []


async def test_the_page_lists_what_the_agent_holds(agent: httpx.AsyncClient) -> None:
    empty = await agent.get("/")
    await agent.post("/frequency", json=body(3))
    await agent.post(
        "/frequency", json=body(1, service="billing", paused=True, rate=0.0, interval=None)
    )
    page = await agent.get("/")

    assert "no frequency received yet" in empty.text
    assert page.headers["content-type"].startswith("text/plain")
    assert page.text.splitlines() == [
        "eventcenter sample agent agent-1: 2 service(s)",
        "",
        "billing version 1: paused (0 req/s, polling stopped) - capacity measured",
        "orders version 3: 12.5 req/s, poll every 0.08 s - capacity measured",
    ]
