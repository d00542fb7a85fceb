"""The audit endpoints on a real center (SQLite and PostgreSQL): filters, keyset pages,
explanations, tenant limits and errors a client can act on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from eventcenter.center.api_audit import audit_router
from eventcenter.center.app import EventCenter
from eventcenter.center.http import Refusal, create_app
from eventcenter.domain.event import Event
from eventcenter.handlers.context import Context
from tests.e2e.test_http import settings_for

GUARD_S = 30.0
TENANTS = ("acme", "globex")
ORDERS = 7  # per tenant


async def decide(event: Event, ctx: Context) -> None:
    await ctx.decide("order.accepted", f"order {event.payload['n']} is fine", event, n=1)


@pytest.fixture
async def center(database_url: str, tmp_path: Path) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(database_url, tmp_path))
    built.processor.subscribe(["order.#"], decide, name="decider")
    await built.start()
    for n in range(ORDERS):
        for tenant in TENANTS:
            await built.publish("order.created", {"n": n}, tenant=tenant)
    await asyncio.wait_for(built.processor.join(), GUARD_S)
    await asyncio.wait_for(asyncio.to_thread(built.projections.catch_up), GUARD_S)
    yield built
    await built.stop()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://center")


@pytest.fixture
async def client(center: EventCenter) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(center)) as http:
        yield http


async def all_pages(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        answer = await client.get("/audit", params=query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        entries.extend(page["entries"])
        after = page["next"]
        if after is None:
            return entries


async def test_pages_walk_every_decision_once_in_time_order_both_ways(
    client: httpx.AsyncClient,
) -> None:
    everything = (await client.get("/audit", params={"limit": 1000})).json()["entries"]
    forward = await all_pages(client, limit=3)
    backward = await all_pages(client, limit=4, order="desc")

    keys = [(e["at"], e["position"]) for e in everything]
    assert keys == sorted(keys)
    assert [e["position"] for e in forward] == [e["position"] for e in everything]
    assert [e["position"] for e in backward] == [e["position"] for e in reversed(everything)]
    accepted = [e for e in everything if e["kind"] == "order.accepted"]
    assert len(accepted) == ORDERS * len(TENANTS)


async def test_filters_by_tenant_and_kind_match_a_filter_over_everything(
    client: httpx.AsyncClient,
) -> None:
    everything = (await client.get("/audit", params={"limit": 1000})).json()["entries"]
    answer = await client.get("/audit", params={"tenant": "acme", "kind": "order.accepted"})
    page = answer.json()

    expected = [
        e["position"] for e in everything if e["tenant"] == "acme" and e["kind"] == "order.accepted"
    ]
    assert [e["position"] for e in page["entries"]] == expected
    assert len(expected) == ORDERS
    assert page["read_model"]["lag"] == 0
    prefix = (await client.get("/audit", params={"kind": "processor.*"})).json()["entries"]
    assert all(e["kind"].startswith("processor.") for e in prefix)


async def test_a_decision_is_explained_with_its_inputs_and_chain(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/audit", params={"kind": "order.accepted", "limit": 1})).json()
    position = page["entries"][0]["position"]

    answer = await client.get(f"/audit/{position}/explain")

    assert answer.status_code == 200, answer.text
    explained = answer.json()
    assert explained["decision"]["position"] == position
    assert explained["rule"] == "order 0 is fine"
    assert explained["inputs"]["details"] == {"n": 1}
    one = await client.get(f"/audit/{position}")
    assert one.json()["correlation_id"] == explained["decision"]["correlation_id"]


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/audit", {"since": "yesterday-ish"}, 422, "since"),
        ("/audit", {"after": "not-a-cursor"}, 422, "after"),
        ("/audit", {"limit": "0"}, 422, "limit"),
        ("/audit/999999", {}, 404, "position"),
        ("/audit/999999/explain", {}, 404, "position"),
    ],
)
async def test_bad_requests_get_a_json_error_naming_the_problem(
    client: httpx.AsyncClient, path: str, params: dict[str, str], status: int, field: str
) -> None:
    answer = await client.get(path, params=params)

    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body.get("field") == field or field in str(body), body


async def test_a_tenant_caller_sees_only_its_own_decisions(center: EventCenter) -> None:
    app = FastAPI()

    @app.exception_handler(Refusal)
    async def refused(request: Request, refusal: Refusal) -> Response:
        return refusal.response()

    app.include_router(audit_router(center, caller=lambda: SimpleNamespace(tenant="acme")))
    async with client_for(app) as http:
        mine = (await http.get("/audit", params={"limit": 1000})).json()["entries"]
        theirs = await http.get("/audit", params={"tenant": "globex"})
        async with client_for(create_app(center)) as admin:
            answer = await admin.get("/audit", params={"tenant": "globex"})
        globex = answer.json()["entries"]
        foreign = [await http.get(f"/audit/{e['position']}") for e in globex[:3]]

    assert mine
    assert {e["tenant"] for e in mine} == {"acme"}
    assert theirs.status_code == 403
    assert globex
    assert [answer.status_code for answer in foreign] == [404] * len(foreign)
