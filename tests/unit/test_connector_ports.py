"""Every connector is the port it claims to be (checked by mypy on these assignments), can be
built without touching the network, and describes itself without its password."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import ListPath, PollPath, PushPath
from eventcenter.sources.connectors import (
    callable_poll,
    http_list,
    http_poll,
    iterator_path,
    nats_jetstream,
    pg_notify,
    redis_stream,
)


async def nothing() -> AsyncIterator[object]:
    return
    yield


async def no_items(cursor: str | None) -> tuple[list[object], None]:
    return [], None


def test_each_connector_implements_its_port_and_hides_its_password() -> None:
    redis = redis_stream("orders", "g", url="redis://:pw-secret@127.0.0.1:6379/0")
    pushes: list[PushPath] = [
        redis,
        nats_jetstream("ORDERS", "orders.>", "d", url="nats://u:pw-secret@127.0.0.1:4222"),
        pg_notify("postgresql://u:pw-secret@127.0.0.1:5432/db", "feed", "feed"),
        iterator_path(nothing()),
    ]
    polls: list[PollPath] = [
        http_poll("http://u:pw-secret@127.0.0.1/feed?since={cursor}"),
        callable_poll(no_items),
    ]
    listings: list[ListPath] = [http_list("http://u:pw-secret@127.0.0.1/all")]

    described = [path.describe for path in pushes]

    assert len(polls) + len(listings) == 3
    assert described == [
        f"redis_stream 'orders' (group 'g', consumer {redis.consumer!r})"
        " at redis://:***@127.0.0.1:6379/0",
        "nats_jetstream stream 'ORDERS' subject 'orders.>' (durable 'd') at"
        " nats://u:***@127.0.0.1:4222",
        "pg_notify table 'feed' (channel 'feed') at postgresql://u@127.0.0.1:5432/db",
        "iterator_path 'iterator'",
    ]
    assert all("pw-secret" not in text for text in described)


@pytest.mark.parametrize(
    "build",
    [
        lambda: redis_stream("s", "g", claim_idle=0),
        lambda: nats_jetstream("S", "s", "d", ack_wait=0),
        lambda: nats_jetstream("S", "s", "d", reconnect_attempts=0),
        lambda: pg_notify("postgresql://127.0.0.1/db", "t", "c", statement_timeout=0),
        lambda: pg_notify("not a url at all = =", "t", "c"),
        lambda: http_list("http://127.0.0.1/", timeout=0),
    ],
)
def test_settings_that_cannot_work_are_refused_at_once(build: object) -> None:
    with pytest.raises(ConfigurationError):
        build()  # type: ignore[operator]
