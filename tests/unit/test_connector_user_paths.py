"""Paths over a user's async iterator and async callable."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind, SourceItem
from eventcenter.sources.connectors import PathStateError, callable_poll, iterator_path

QUICK_S = 0.05


async def numbers(count: int) -> AsyncIterator[dict[str, object]]:
    for number in range(1, count + 1):
        yield {"key": f"k{number}", "version": number}


class TestIteratorPath:
    async def test_values_come_in_order_with_a_counter_as_position(self) -> None:
        path = iterator_path(numbers(3), name="orders")
        await path.open(None)

        received = await path.receive(10, QUICK_S)

        assert [(m.position, m.item.key if m.item else None) for m in received] == [
            ("1", "k1"),
            ("2", "k2"),
            ("3", "k3"),
        ]
        await path.finish()

    async def test_items_text_and_bad_values_are_all_handed_out(self) -> None:
        async def mixed() -> AsyncIterator[object]:
            yield SourceItem(key="a", version="1")
            yield '{"key": "b", "version": 2}'
            yield b"not json"
            yield 42

        path = iterator_path(mixed())
        await path.open(None)

        received = await path.receive(10, QUICK_S)

        assert [m.item.key for m in received if m.item] == ["a", "b"]
        found = [m.problem for m in received if m.problem]
        assert len(found) == 2
        assert found[0].startswith("not JSON: ")
        assert found[1] == "expected a SourceItem, a mapping or JSON text, got int"
        await path.finish()

    async def test_unacked_values_come_again_after_a_reopen(self) -> None:
        path = iterator_path(numbers(4))
        await path.open(None)
        first = await path.receive(3, QUICK_S)
        await path.ack(first[:1])
        await path.aclose()

        await path.open(first[1].position)  # admitted up to the second
        again = await path.receive(10, QUICK_S)

        assert [m.position for m in again] == ["3"]
        assert [m.position for m in await path.receive(10, QUICK_S)] == ["4"]
        await path.finish()

    async def test_a_position_from_an_earlier_process_cannot_be_resumed(self) -> None:
        path = iterator_path(numbers(2))

        with pytest.raises(PositionLost, match="cannot resume from position '57'"):
            await path.open("57")

    async def test_a_slow_iterator_is_silence_and_nothing_is_lost(self) -> None:
        release = asyncio.Event()

        async def slow() -> AsyncIterator[dict[str, object]]:
            await release.wait()
            yield {"key": "late", "version": 1}

        path = iterator_path(slow())
        await path.open(None)

        assert await path.receive(10, QUICK_S) == []
        release.set()
        received = await path.receive(10, 5.0)

        assert [m.item.key for m in received if m.item] == ["late"]
        await path.finish()

    async def test_an_iterator_that_raises_is_a_source_error_from_then_on(self) -> None:
        async def broken() -> AsyncIterator[dict[str, object]]:
            yield {"key": "a", "version": 1}
            raise RuntimeError("feed went away")

        path = iterator_path(broken(), name="feed")
        await path.open(None)

        first = await path.receive(10, QUICK_S)
        with pytest.raises(SourceError, match="iterator_path 'feed': raised RuntimeError") as one:
            await path.receive(10, QUICK_S)
        with pytest.raises(SourceError) as two:
            await path.receive(10, QUICK_S)

        assert [m.position for m in first] == ["1"]
        assert one.value.kind is two.value.kind is SourceErrorKind.CONNECTION
        await path.finish()

    async def test_an_ended_iterator_is_silence(self) -> None:
        path = iterator_path(numbers(1))
        await path.open(None)
        await path.receive(10, QUICK_S)

        assert await path.receive(10, QUICK_S) == []
        await path.finish()

    @pytest.mark.parametrize("ending", ["ends", "raises"])
    async def test_an_iterator_ending_after_the_path_closed_leaves_no_unretrieved_error(
        self, ending: str
    ) -> None:
        """A service stopping while the iterator's next value is being awaited: the pull that
        ends afterwards (the iterator ended or failed) must not be reported at exit as an
        error nobody retrieved."""
        loop = asyncio.get_running_loop()
        reported: list[dict[str, object]] = []
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _, context: reported.append(context))
        gate = asyncio.Event()

        async def source() -> AsyncIterator[dict[str, object]]:
            yield {"key": "a", "version": 1}
            await gate.wait()
            if ending == "raises":
                raise RuntimeError("the upstream went away (test)")

        try:
            path = iterator_path(source())
            await path.open(None)
            assert len(await path.receive(10, QUICK_S)) == 1  # the next pull is under way
            await path.aclose()
            gate.set()
            for _ in range(5):
                await asyncio.sleep(0)
            del path
            gc.collect()
        finally:
            loop.set_exception_handler(previous)
        assert reported == []

    async def test_misuse_is_a_clear_error(self) -> None:
        path = iterator_path(numbers(1))

        with pytest.raises(PathStateError, match=r"receive\(\) before open\(\)"):
            await path.receive(1, QUICK_S)
        await path.open(None)
        with pytest.raises(PathStateError, match=r"open\(\) called while open"):
            await path.open(None)
        await path.aclose()
        await path.aclose()
        with pytest.raises(PathStateError, match=r"receive\(\) after aclose\(\)"):
            await path.receive(1, QUICK_S)
        await path.finish()


class TestCallablePoll:
    async def test_values_and_the_next_cursor(self) -> None:
        async def fetch(cursor: str | None) -> tuple[list[object], int | None]:
            start = int(cursor or 0)
            return [{"key": f"k{start + 1}", "version": 1}, {"version": 1}], start + 1

        poll = callable_poll(fetch)

        received, cursor = await poll("4")

        assert cursor == "5"
        assert [m.item.key for m in received if m.item] == ["k5"]
        assert [m.problem for m in received if m.problem] == [
            "no key: an item needs a non-empty string 'key'"
        ]
        assert {m.position for m in received} == {"5"}
        await poll.aclose()

    async def test_no_next_cursor_asks_with_the_same_one_again(self) -> None:
        async def empty(cursor: str | None) -> tuple[list[object], None]:
            return [], None

        assert await callable_poll(empty)("7") == ([], "7")

    async def test_a_failure_is_a_source_error_naming_the_function(self) -> None:
        async def failing(cursor: str | None) -> tuple[list[object], None]:
            raise ConnectionRefusedError(111, "refused")

        with pytest.raises(SourceError, match="callable_poll 'TestCallablePoll") as raised:
            await callable_poll(failing)(None)

        assert raised.value.kind is SourceErrorKind.CONNECTION
