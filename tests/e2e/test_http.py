"""The HTTP API as a client drives it: the real app on a real center (SQLite and PostgreSQL).

In-process tests go through ``httpx.ASGITransport``; the service tests listen on a real socket,
and the last ones run ``eventcenter run`` as a subprocess and stop it with a signal.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from eventcenter.center.app import EventCenter
from eventcenter.center.healing import HealingSettings
from eventcenter.center.http import create_app
from eventcenter.center.reader import CenterReader
from eventcenter.center.service import Service
from eventcenter.center.settings import CenterSettings, HttpSettings
from eventcenter.domain.event import Event
from eventcenter.domain.sources import Received
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.healing.checkers import CallableCheck
from eventcenter.sources.webhook import WebhookPath
from tests.faults import ProxiedPostgres

JSON = {"content-type": "application/json"}
GUARD_S = 30.0  # turns a hang into a failure; no assertion depends on it


class Recorder:
    """A subscription handler that remembers what it was given."""

    def __init__(self) -> None:
        self.seen: list[Event] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, event: Event, ctx: Context) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.seen.append(event)


def settings_for(url: str, tmp_path: Path, **processor: Any) -> CenterSettings:
    return CenterSettings(
        database_url=url,
        data_dir=tmp_path,
        processor=ProcessorSettings.model_validate(
            {"backoff_base": 0.001, "backoff_max": 0.002, "max_attempts": 2, **processor}
        ),
        http=HttpSettings(port=0, publish_wait=10.0, auth="none"),
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def center(
    database_url: str, tmp_path: Path, recorder: Recorder
) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(database_url, tmp_path))
    built.processor.subscribe(["order.#", "source.#"], recorder, name="recorder")
    await built.start()
    yield built
    if built.processor.status == "running":
        await built.stop()
    built.close()


@pytest.fixture
def webhooks() -> dict[tuple[str, str], WebhookPath]:
    return {("acme", "orders"): WebhookPath("acme", "orders")}


@pytest.fixture
async def client(
    center: EventCenter, webhooks: dict[tuple[str, str], WebhookPath]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(center, webhooks=webhooks)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        yield http


def envelope(type: str = "order.created", **fields: Any) -> dict[str, Any]:
    return {"type": type, "tenant": "acme", "payload": {"order": 1}, **fields}


async def post_events(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post("/events", content=raw, headers={**JSON, **headers})


async def settled(center: EventCenter) -> None:
    await asyncio.wait_for(center.processor.join(), GUARD_S)


def published(center: EventCenter) -> int:
    return int(center.processor.snapshot().totals.get("published", 0))


# --- ingest -----------------------------------------------------------------------------------


async def test_one_event_is_answered_with_its_id_once_durable_and_then_handled(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    answer = await post_events(client, envelope(payload={"order": 42}))

    assert answer.status_code == 202, answer.text
    event_id = answer.json()["id"]
    await settled(center)
    assert [(str(e.id), e.payload) for e in recorder.seen] == [(event_id, {"order": 42})]
    assert recorder.seen[0].tenant == "acme"


async def test_a_batch_is_answered_with_every_id_and_each_event_is_handled(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    batch = [envelope(payload={"order": n}) for n in range(3)]

    answer = await post_events(client, batch)

    assert answer.status_code == 202, answer.text
    ids = answer.json()["ids"]
    assert len(ids) == 3
    await settled(center)
    assert sorted(str(e.id) for e in recorder.seen) == sorted(ids)
    assert sorted(e.payload["order"] for e in recorder.seen) == [0, 1, 2]


def deep(levels: int) -> bytes:
    return (
        b'{"type": "order.created", "payload": ' + b'{"a": ' * levels + b"1" + b"}" * levels + b"}"
    )


BAD_BODIES = [
    pytest.param(
        b'{"type": "order.created", "payload": {"order": 1, "order": 2}}',
        422,
        "payload",
        "repeats the key 'order'",
        id="repeated-key-in-payload",
    ),
    pytest.param(
        b'{"type": "order.created", "type": "order.paid"}',
        422,
        "type",
        "appears more than once",
        id="repeated-envelope-key",
    ),
    pytest.param(
        b'{"type": "order.created", "payload": {"name": "caf\xe9"}}',
        400,
        "body",
        "not valid UTF-8",
        id="invalid-utf8",
    ),
    pytest.param(deep(40), 422, "payload", "nests deeper than 16 levels", id="too-deep"),
    pytest.param(
        b'{"type": 42, "payload": {}}', 422, "type", "valid string", id="wrong-type-of-type"
    ),
    pytest.param(
        b'{"type": "order.created", "payload": [1, 2]}',
        422,
        "payload",
        "valid dictionary",
        id="payload-not-an-object",
    ),
    pytest.param(
        b'{"type": "order.created", "key": "k-1"}', 422, "key", "Extra inputs", id="key-member"
    ),
    pytest.param(b'{"type": "order.created"', 400, "body", "not valid JSON", id="not-json"),
    pytest.param(b'"order.created"', 400, "body", "must be a JSON object", id="a-string"),
    pytest.param(b'{"type": "order.created", "payload": {"x": NaN}}', 400, "body", "NaN", id="nan"),
]


@pytest.mark.parametrize(("body", "status", "field", "reason"), BAD_BODIES)
async def test_a_bad_body_is_refused_naming_the_field_and_nothing_is_stored(
    client: httpx.AsyncClient,
    center: EventCenter,
    recorder: Recorder,
    body: bytes,
    status: int,
    field: str,
    reason: str,
) -> None:
    answer = await post_events(client, body)

    assert answer.status_code == status, answer.text
    refusal = answer.json()
    assert refusal["field"] == field
    assert reason in refusal["reason"]
    await nothing_stored_but_the_next_event(client, center, recorder)


async def nothing_stored_but_the_next_event(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    """Nothing was admitted: a good event posted next is the only one published and handled."""
    assert published(center) == 0
    assert center.processor.queue_depths()["pending"] == 0
    good = await post_events(client, envelope(type="order.checked"))
    assert good.status_code == 202, good.text
    await settled(center)
    assert [str(e.id) for e in recorder.seen] == [good.json()["id"]]
    assert published(center) == 1


async def test_a_batch_with_one_bad_event_is_refused_whole_naming_its_index(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    batch = [envelope(), envelope(priority="urgent"), envelope()]

    answer = await post_events(client, batch)

    assert answer.status_code == 422
    assert answer.json()["index"] == 1
    assert answer.json()["field"] == "priority"
    await nothing_stored_but_the_next_event(client, center, recorder)


async def test_a_body_over_the_limit_is_refused_as_too_large(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    limit = center.settings.processor.limits.max_body_bytes
    body = orjson.dumps(envelope(payload={"text": "x" * limit}))

    answer = await post_events(client, body)

    assert answer.status_code == 413
    assert answer.json() == {
        "error": "too_large",
        "field": "body",
        "reason": f"is {len(body)} bytes; the limit is {limit}",
    }
    await nothing_stored_but_the_next_event(client, center, recorder)


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_a_body_that_is_not_json_by_its_content_type_is_refused(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}

    answer = await client.post("/events", content=orjson.dumps(envelope()), headers=headers)

    assert answer.status_code == 415
    assert answer.json()["field"] == "Content-Type"
    await nothing_stored_but_the_next_event(client, center, recorder)


async def test_the_same_idempotency_key_twice_gives_the_same_id_and_one_delivery(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    first = await post_events(client, envelope(), **{"Idempotency-Key": "order-1"})
    again = await post_events(client, envelope(), **{"Idempotency-Key": "order-1"})

    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    await settled(center)
    assert [str(e.id) for e in recorder.seen] == [first.json()["id"]]


async def test_a_batch_retried_with_its_idempotency_key_is_admitted_once(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    batch = [envelope(payload={"order": n}) for n in range(2)]

    first = await post_events(client, batch, **{"Idempotency-Key": "import-7"})
    again = await post_events(client, batch, **{"Idempotency-Key": "import-7"})

    assert first.status_code == again.status_code == 202
    assert first.json()["ids"] == again.json()["ids"]
    await settled(center)
    assert sorted(str(e.id) for e in recorder.seen) == sorted(first.json()["ids"])


async def test_an_idempotency_key_that_is_too_long_is_refused_naming_the_header(
    client: httpx.AsyncClient, center: EventCenter, recorder: Recorder
) -> None:
    key = "k" * (center.settings.processor.max_key_length + 1)

    answer = await post_events(client, envelope(), **{"Idempotency-Key": key})

    assert answer.status_code == 422
    assert answer.json()["field"] == "Idempotency-Key"
    await nothing_stored_but_the_next_event(client, center, recorder)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_backpressure_is_answered_503_with_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path, max_backlog=1, publish_timeout=0))
    slow = Recorder()
    slow.gate = asyncio.Event()
    center.processor.subscribe("order.#", slow, name="slow")
    async with center:
        transport = httpx.ASGITransport(app=create_app(center))
        async with httpx.AsyncClient(transport=transport, base_url="http://center") as client:
            first = await post_events(client, envelope())
            refused = await post_events(client, envelope())

            assert first.status_code == 202
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"] == "backpressure"
            slow.gate.set()
            await settled(center)
    assert [str(e.id) for e in slow.seen] == [first.json()["id"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_center_that_is_not_running_answers_503_and_is_not_ready(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path))
    transport = httpx.ASGITransport(app=create_app(center))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://center") as client:
            answer = await post_events(client, envelope())
            ready = await client.get("/ready")
            health = await client.get("/health")
    finally:
        center.close()

    assert answer.status_code == 503
    assert answer.json()["error"] == "not_running"
    assert "retry-after" in answer.headers
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "reasons": ["the center is new"]}
    assert health.status_code == 200


async def test_a_running_center_is_ready_and_alive(client: httpx.AsyncClient) -> None:
    ready = await client.get("/ready")
    health = await client.get("/health")

    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


async def test_a_center_that_lost_its_lease_answers_409_and_is_not_ready(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path), lease_check_interval=0.01)
    service = Service(
        center, settings=HttpSettings(enabled=False, auth="none"), watch_interval=0.01
    )
    await service.start()
    try:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://center") as client:
            take_the_lease_away(database_url)
            why = await asyncio.wait_for(service.wait(asyncio.Event()), GUARD_S)
            answer = await post_events(client, envelope())
            ready = await client.get("/ready")
    finally:
        await service.stop()

    assert why is not None
    assert "lease token 1 is no longer current" in why
    assert answer.status_code == 409
    assert answer.json()["error"] == "lease_lost"
    assert ready.status_code == 503
    assert any("no longer current" in reason for reason in ready.json()["reasons"])


def take_the_lease_away(url: str) -> None:
    """What another process taking over the center's lease does to the lease row."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE center_leases SET token = token + 1"))
    finally:
        engine.dispose()


@pytest.mark.postgres
async def test_a_store_outage_is_503_and_a_retry_with_the_same_key_is_admitted_once(
    pg_proxy: ProxiedPostgres, tmp_path: Path
) -> None:
    """The first request's admission outlives its 503 (not_confirmed) and is stored once the
    store answers; while the center knows the store is down, requests are refused at once; the
    client's retry with the same key gets the stored event's id, delivered once."""
    # Nothing but the request may find the store gone first: the periodic looks for operators'
    # requests, RCA answers and the lease, or a read still under way from the start, would make
    # the writer refuse it at once instead.
    settings = settings_for(pg_proxy.url, tmp_path).model_copy(
        update={"healing": HealingSettings(enabled=False)}
    )
    center = EventCenter(
        settings,
        builtin_handlers=False,
        source_requests_every=3600.0,
        lease_check_interval=3600.0,
    )
    recorder = Recorder()
    center.processor.subscribe("order.#", recorder, name="recorder")
    impatient = create_app(center, settings=HttpSettings(publish_wait=0.5, auth="none"))
    patient = create_app(center)
    async with (
        center,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=impatient), base_url="http://c"
        ) as first,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=patient), base_url="http://c") as later,
    ):
        # What the center began reading in the background at start (the tuning worker's look
        # for open runs) is committed before the cut: the request must be the first to find it.
        await center.deliveries.flush()
        pg_proxy.proxy.cut()
        unconfirmed = await post_events(first, envelope(), **{"Idempotency-Key": "o-9"})
        await wait_for(lambda: not center.writer.available)
        refused = await post_events(later, envelope(), **{"Idempotency-Key": "o-10"})
        not_ready = await later.get("/ready")
        pg_proxy.proxy.restore()
        await wait_for(lambda: impatient.state.ingest.unanswered == 0)
        retried = await post_events(later, envelope(), **{"Idempotency-Key": "o-9"})
        ready = await later.get("/ready")
        await settled(center)

    assert unconfirmed.status_code == 503
    assert unconfirmed.json()["error"] == "not_confirmed"
    assert refused.status_code == 503
    assert refused.json()["error"] == "store_unavailable"
    assert refused.headers["retry-after"] == "1"
    assert not_ready.status_code == 503
    assert "store cannot be reached" in not_ready.json()["reasons"][0]
    assert retried.status_code == 202
    assert ready.status_code == 200
    assert [str(e.id) for e in recorder.seen] == [retried.json()["id"]]


# --- webhook push sources ---------------------------------------------------------------------


class Engine:
    """What the event engine does with a webhook path, cut down to admission and ack: each item
    becomes an event (once per key and version, by idempotency key), each bad message is kept
    as a dead letter here, and only then are the messages acked."""

    def __init__(self, center: EventCenter, path: WebhookPath) -> None:
        self.center = center
        self.path = path
        self.dead_letters: list[Received] = []
        self.admitted: list[str] = []

    async def take(self) -> list[Received]:
        return list(await self.path.receive(100, timeout=GUARD_S))

    async def admit(self, messages: list[Received]) -> None:
        for message in messages:
            if message.item is None:
                self.dead_letters.append(message)
                continue
            item = message.item
            event_id = await self.center.publish(
                "source.item.changed",
                {"key": item.key, "version": item.version, "data": dict(item.data)},
                tenant=self.path.tenant,
                source=self.path.source,
                key=f"{item.key}@{item.version}",
            )
            self.admitted.append(event_id)
        await self.path.ack(messages)

    async def step(self) -> None:
        await self.admit(await self.take())


async def post_webhook(
    client: httpx.AsyncClient, body: Any, tenant: str = "acme", source: str = "orders"
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(f"/sources/{tenant}/{source}/webhook", content=raw, headers=JSON)


async def test_a_webhook_item_is_answered_only_after_it_was_admitted_and_once_per_version(
    client: httpx.AsyncClient,
    center: EventCenter,
    recorder: Recorder,
    webhooks: dict[tuple[str, str], WebhookPath],
) -> None:
    path = webhooks["acme", "orders"]
    await path.open(None)
    engine = Engine(center, path)
    item = {"key": "o-1", "version": 3, "data": {"total": 10}}

    request = asyncio.create_task(post_webhook(client, item))
    await until(lambda: path.waiting == 1)
    assert not request.done(), "not answered while the item only waits in the path"
    taken = await engine.take()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not request.done(), "not answered while the item is being admitted"
    await engine.admit(taken)
    answer = await asyncio.wait_for(request, GUARD_S)

    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "items": [{"position": "1", "status": "admitted", "key": "o-1", "version": "3"}]
    }
    again = asyncio.create_task(post_webhook(client, item))  # the sender retries: no harm
    await engine.step()
    assert (await asyncio.wait_for(again, GUARD_S)).status_code == 202
    await settled(center)
    assert len(recorder.seen) == 1
    changed = recorder.seen[0]
    assert (changed.type, changed.tenant, changed.source) == (
        "source.item.changed",
        "acme",
        "orders",
    )
    assert changed.payload == {"key": "o-1", "version": "3", "data": {"total": 10}}
    assert engine.admitted == [str(changed.id)] * 2


async def test_a_webhook_array_reports_each_item_bad_ones_as_dead_letters_with_the_reason(
    client: httpx.AsyncClient, center: EventCenter, webhooks: dict[tuple[str, str], WebhookPath]
) -> None:
    path = webhooks["acme", "orders"]
    await path.open(None)
    engine = Engine(center, path)
    items = [{"key": "a", "version": 1}, {"version": 2}, {"key": "b", "version": 1}]

    request = asyncio.create_task(post_webhook(client, items))
    await until(lambda: path.waiting == 3)
    await engine.step()
    answer = await asyncio.wait_for(request, GUARD_S)

    assert answer.status_code == 202
    outcomes = answer.json()["items"]
    assert [o["status"] for o in outcomes] == ["admitted", "dead_lettered", "admitted"]
    assert "no key" in outcomes[1]["reason"]
    assert [m.raw for m in engine.dead_letters] == ['{"version":2}']


async def test_a_webhook_body_that_is_not_json_is_one_dead_letter_not_a_400(
    client: httpx.AsyncClient, center: EventCenter, webhooks: dict[tuple[str, str], WebhookPath]
) -> None:
    path = webhooks["acme", "orders"]
    await path.open(None)
    engine = Engine(center, path)

    request = asyncio.create_task(post_webhook(client, b"key=o-1&version=2"))
    await until(lambda: path.waiting == 1)
    await engine.step()
    answer = await asyncio.wait_for(request, GUARD_S)

    assert answer.status_code == 202
    (outcome,) = answer.json()["items"]
    assert outcome["status"] == "dead_lettered"
    assert "not JSON" in outcome["reason"]
    assert engine.dead_letters[0].raw == "key=o-1&version=2"


async def test_a_webhook_for_an_unknown_source_is_404(client: httpx.AsyncClient) -> None:
    answer = await post_webhook(client, {"key": "a", "version": 1}, source="invoices")

    assert answer.status_code == 404
    assert answer.json()["field"] == "source"


async def test_a_webhook_path_that_is_not_open_answers_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    answer = await post_webhook(client, {"key": "a", "version": 1})

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "not open" in answer.json()["reason"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_webhook_item_not_acknowledged_in_time_is_503_and_withdrawn(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path))
    path = WebhookPath("acme", "orders")
    app = create_app(
        center,
        webhooks={("acme", "orders"): path},
        settings=HttpSettings(publish_wait=0.001, auth="none"),
    )
    async with center:
        await path.open(None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://center") as client:
            answer = await post_webhook(client, {"key": "a", "version": 1})

    assert answer.status_code == 503
    assert answer.json()["error"] == "not_confirmed"
    assert path.waiting == 0, "the item is not admitted after its 503"
    assert path.pending == 0


async def until(condition: Any, turns: int = 1000) -> None:
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition still false after {turns} loop turns")


# --- the service on a real socket -------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_service_serves_http_and_stop_lets_a_request_in_progress_finish(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path))
    recorder = Recorder()
    center.processor.subscribe("#", recorder, name="recorder")
    path = WebhookPath("acme", "orders")
    service = Service(center, webhooks={("acme", "orders"): path})
    await service.start()
    await path.open(None)
    engine = Engine(center, path)
    assert service.url is not None
    async with httpx.AsyncClient(base_url=service.url) as client:
        ingested = await post_events(client, envelope())
        assert ingested.status_code == 202
        in_progress = asyncio.create_task(post_webhook(client, {"key": "a", "version": 1}))
        await wait_for(lambda: path.waiting == 1)

        stopping = asyncio.create_task(service.stop())
        await wait_for(lambda: refuses_connections(service.url or ""))
        assert not in_progress.done()
        await engine.step()
        answer = await asyncio.wait_for(in_progress, GUARD_S)
        report = await asyncio.wait_for(stopping, GUARD_S)

    assert answer.status_code == 202, "the request in progress finished"
    assert center.processor.status == "stopped"
    assert report.line().startswith(f"stopped: HTTP server {service.url} (2 requests), no sources")


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return True
    return False


async def wait_for(condition: Any, limit: float = GUARD_S) -> None:
    """Bounded polling of something another task or process does (never an assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {limit} s")
        await asyncio.sleep(0.02)


# --- eventcenter run, as a process ------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "eventcenter"


@pytest.fixture
def run_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCENTER_")}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1"}


def config_file(tmp_path: Path, port: int = 0) -> Path:
    config = tmp_path / "center.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[http]\nport = {port}\nauth = "none"\n')
    return config


class Running:
    """``eventcenter run`` as a child process, its output read line by line with a deadline."""

    def __init__(self, config: Path, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [str(SCRIPT), "run", "--config", str(config)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out = b""

    def line_with(self, text: str, limit: float = GUARD_S) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + limit
        while True:
            for line in self._out.decode().splitlines():
                if text in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (self.process.poll() is not None and not self._readable(0)):
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"no line with {text!r}; out: {self._out!r}; err: {stderr}")
            if self._readable(left):
                self._out += os.read(self.process.stdout.fileno(), 65536)

    def _readable(self, timeout: float) -> bool:
        assert self.process.stdout is not None
        return bool(select.select([self.process.stdout], [], [], timeout)[0])

    def stop(self, number: signal.Signals) -> tuple[int, str, str]:
        self.process.send_signal(number)
        out, err = self.process.communicate(timeout=GUARD_S)
        return self.process.returncode, (self._out + out).decode(), err.decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=GUARD_S)


@pytest.fixture
def running(tmp_path: Path, run_env: dict[str, str]) -> Iterator[Running]:
    child = Running(config_file(tmp_path), run_env, tmp_path)
    yield child
    child.kill()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_serves_over_real_http_and_a_signal_stops_it_gracefully(
    running: Running, tmp_path: Path, number: signal.Signals
) -> None:
    started = running.line_with("running on")
    url = started.split("HTTP on ", 1)[1].split(";", 1)[0]
    assert url.startswith("http://127.0.0.1:")

    with httpx.Client(base_url=url, timeout=GUARD_S) as client:
        ready = client.get("/ready")
        answer = client.post(
            "/events",
            content=orjson.dumps(
                {"type": "deployment.changed", "payload": {"service": "api", "signature": "sha-1"}}
            ),
            headers=JSON,
        )
    assert ready.status_code == 200
    assert answer.status_code == 202, answer.text
    handled = wait_until_decided(tmp_path, answer.json()["id"])

    code, out, err = running.stop(number)

    assert handled, "the built-in handler decided on the posted event"
    assert code == 0, err
    assert "Traceback" not in err
    stop_lines = [line for line in out.splitlines() if line.startswith("stopped")]
    assert stop_lines == [
        f"stopped on {number.name}: HTTP server {url} (2 requests), no sources,"
        " center 'default' (0 deliveries left in the store for the next start)"
    ]


def wait_until_decided(tmp_path: Path, event_id: str) -> bool:
    """Poll the store beside the running center (reads take no lease) until the event's
    decision is recorded."""
    settings = CenterSettings(data_dir=tmp_path / "data")
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        reader = CenterReader(settings)
        try:
            if any(row.kind == "load_test.skipped" for row in reader.decisions()):
                return True
        finally:
            reader.close()
        time.sleep(0.05)
    return False


def test_run_refuses_a_port_in_use_in_one_line(tmp_path: Path, run_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(SCRIPT), "run", "--config", str(config_file(tmp_path, port))],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=GUARD_S,
            check=False,
        )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (choose another"
        " with [http] host and port, or EVENTCENTER_HTTP__PORT)"
    ]
    assert not (tmp_path / "data").exists(), "refused before the center took its lease"


def test_run_beside_a_running_center_of_the_same_name_refuses_in_one_line(
    running: Running, tmp_path: Path, run_env: dict[str, str]
) -> None:
    running.line_with("running on")

    second = subprocess.run(
        [str(SCRIPT), "run", "--config", str(tmp_path / "center.toml")],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )

    assert second.returncode == 1
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("error: center 'default' on sqlite:///")
    assert "is held by" in lines[0]
    assert "Traceback" not in second.stderr


async def test_the_health_report_shows_checks_recovery_and_breakers(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path))
    center.healing.monitor.add(CallableCheck("billing", lambda: False))
    center.healing.breakers.get_or_create("payments")
    transport = httpx.ASGITransport(app=create_app(center))
    await center.start()
    try:
        await center.healing.monitor.check_now("billing")
        async with httpx.AsyncClient(transport=transport, base_url="http://center") as client:
            answer = await client.get("/health/report")
    finally:
        await center.stop()

    assert answer.status_code == 200
    report = answer.json()
    billing = report["health"]["services"]["billing"]
    assert (billing["status"], billing["consecutive_failures"]) == ("degraded", 1)
    assert report["health"]["summary"]["degraded"] == 1
    assert report["recovery"]["total_attempts"] == 0
    assert [(b["name"], b["state"]) for b in report["breakers"]] == [("payments", "closed")]
