"""The HTTP poll and listing paths against a small HTTP server the test runs on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind
from eventcenter.sources.connectors import http_list, http_poll
from tests.integration.receiving import keys, problems
from tests.servers import closed_port

Answer = tuple[int, dict[str, str], bytes]
Route = Callable[[dict[str, list[str]]], Answer]
SLOW_S = 2.0


def json_answer(body: object, status: int = 200, **headers: str) -> Answer:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


@dataclass
class Server:
    """Answers ``GET /<path>`` with ``routes[path](query)``; records the queries it got."""

    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            state.seen.append(self.path)
            route = state.routes.get(parts.path)
            status, headers, body = (
                route(parse_qs(parts.query)) if route else (404, {}, b"no such route")
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test asserts on what matters."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def pages(query: dict[str, list[str]]) -> Answer:
    """A feed of three items in two pages; the cursor is the last key's number."""
    since = query.get("since", [""])[0]
    if since == "":
        items = [{"key": "k1", "version": 1}, {"key": "k2", "version": 1}, {"version": 1}]
        return json_answer({"items": items, "cursor": "2"})
    if since == "2":
        return json_answer({"items": [{"key": "k3", "version": 5, "data": {"a": 1}}], "cursor": 3})
    return json_answer({"items": []})  # nothing new: no cursor


class TestPoll:
    async def test_pages_follow_the_cursor_and_bad_items_come_with_their_problem(
        self, server: Server
    ) -> None:
        server.routes["/feed"] = pages
        poll = http_poll(server.url("/feed?since={cursor}"))

        first, cursor = await poll(None)
        second, cursor_2 = await poll(cursor)
        third, cursor_3 = await poll(cursor_2)
        await poll.aclose()
        await poll.aclose()

        assert keys(first) == ["k1", "k2"]
        assert problems(first) == ["no key: an item needs a non-empty string 'key'"]
        assert first[2].raw == '{"version":1}'
        assert {message.position for message in first} == {"2"}
        assert cursor == "2"
        assert keys(second) == ["k3"]
        assert cursor_2 == "3"
        assert (list(third), cursor_3) == ([], "3")  # no cursor: ask with the same one again
        assert server.seen == ["/feed?since=", "/feed?since=2", "/feed?since=3"]

    async def test_the_cursor_is_url_encoded(self, server: Server) -> None:
        server.routes["/feed"] = lambda query: json_answer({"items": [], "cursor": None})
        poll = http_poll(server.url("/feed?since={cursor}"))

        await poll("a b&c")
        await poll.aclose()

        assert server.seen == ["/feed?since=a%20b%26c"]

    async def test_a_template_without_a_cursor_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match=r"has no \{cursor\}"):
            http_poll("http://127.0.0.1:9000/feed")

    async def test_using_a_closed_poll_is_a_clear_error(self, server: Server) -> None:
        poll = http_poll(server.url("/feed?since={cursor}"))
        await poll.aclose()

        with pytest.raises(Exception, match=r"used after aclose\(\)"):
            await poll(None)


class TestList:
    async def test_an_array_or_an_object_with_items(self, server: Server) -> None:
        listed = [{"key": "a", "version": 1}, {"key": "b", "version": "x", "deleted": True}]
        server.routes["/array"] = lambda query: json_answer(listed)
        server.routes["/object"] = lambda query: json_answer({"items": listed})

        for route in ("/array", "/object"):
            listing = http_list(server.url(route))
            items = await listing()
            await listing.aclose()

            assert [(item.key, item.version, item.deleted) for item in items] == [
                ("a", "1", False),
                ("b", "x", True),
            ]

    @pytest.mark.parametrize(
        ("listed", "reason"),
        [
            ([{"key": "a", "version": 1}, {"key": "b"}], "item #1: item 'b': no version"),
            ([{"key": "a", "version": 1}, {"key": "a", "version": 2}], "key 'a' is listed twice"),
            ({"things": []}, "expected a JSON array of items"),
        ],
    )
    async def test_a_listing_with_a_bad_item_is_refused_whole(
        self, server: Server, listed: object, reason: str
    ) -> None:
        server.routes["/list"] = lambda query: json_answer(listed)
        listing = http_list(server.url("/list"))

        with pytest.raises(SourceError, match=reason) as raised:
            await listing()
        await listing.aclose()

        assert raised.value.kind is SourceErrorKind.BAD_DATA


class TestErrors:
    @pytest.mark.parametrize(
        ("answer", "kind", "retry_after"),
        [
            (json_answer({}, 429, **{"Retry-After": "7"}), SourceErrorKind.RATE_LIMITED, 7.0),
            (json_answer({}, 503), SourceErrorKind.RATE_LIMITED, None),
            (json_answer({}, 401), SourceErrorKind.AUTH, None),
            (json_answer({}, 403), SourceErrorKind.AUTH, None),
            (json_answer({}, 500), SourceErrorKind.CONNECTION, None),
            (json_answer({}, 504), SourceErrorKind.TIMEOUT, None),
            (json_answer({}, 400), SourceErrorKind.BAD_DATA, None),
            ((200, {}, b"<html>surprise</html>"), SourceErrorKind.BAD_DATA, None),
            (json_answer(["not", "an", "object"]), SourceErrorKind.BAD_DATA, None),
        ],
    )
    async def test_answers_are_classified(
        self,
        server: Server,
        answer: Answer,
        kind: SourceErrorKind,
        retry_after: float | None,
    ) -> None:
        server.routes["/feed"] = lambda query: answer
        poll = http_poll(server.url("/feed?since={cursor}"))

        with pytest.raises(SourceError) as raised:
            await poll(None)
        await poll.aclose()

        assert raised.value.kind is kind
        assert raised.value.retry_after == retry_after
        assert f"http_poll http://127.0.0.1:{server.port}/feed" in str(raised.value)

    async def test_an_expired_cursor_loses_the_position(self, server: Server) -> None:
        server.routes["/feed"] = lambda query: json_answer({}, 410)
        poll = http_poll(server.url("/feed?since={cursor}"))

        with pytest.raises(PositionLost, match="HTTP 410"):
            await poll("old")
        await poll.aclose()

    async def test_a_slow_server_is_a_timeout(self, server: Server) -> None:
        def slow(query: dict[str, list[str]]) -> Answer:
            time.sleep(SLOW_S)
            return json_answer({"items": []})

        server.routes["/feed"] = slow
        poll = http_poll(server.url("/feed?since={cursor}"), timeout=0.2)

        with pytest.raises(SourceError) as raised:
            await poll(None)
        await poll.aclose()

        assert raised.value.kind is SourceErrorKind.TIMEOUT

    async def test_a_refused_connection_is_a_connection_error(self) -> None:
        poll = http_poll(f"http://127.0.0.1:{closed_port()}/feed?since={{cursor}}")

        with pytest.raises(SourceError) as raised:
            await poll(None)
        await poll.aclose()

        assert raised.value.kind is SourceErrorKind.CONNECTION

    async def test_a_password_in_the_url_is_never_shown(self, server: Server) -> None:
        server.routes["/feed"] = lambda query: json_answer({}, 401)
        url = f"http://reader:pw-not-shown@127.0.0.1:{server.port}/feed?since={{cursor}}"
        poll = http_poll(url)

        with pytest.raises(SourceError) as raised:
            await poll(None)
        await poll.aclose()

        assert "pw-not-shown" not in str(raised.value)
        assert "reader:***@" in str(raised.value)
