"""The dashboard's store reads: one at a time per kind, shared by every page that polls, and
a slow store reported instead of piling reads up."""

from __future__ import annotations

import asyncio

import pytest

from eventcenter.center.dashboard import OneReadAtATime, ReadLate


class Read:
    """A read that counts its runs and answers once ``gate`` opens."""

    def __init__(self) -> None:
        self.runs = 0
        self.gate = asyncio.Event()

    async def __call__(self) -> str:
        self.runs += 1
        await self.gate.wait()
        return f"answer {self.runs}"


async def test_pages_asking_at_once_share_one_read() -> None:
    reads, read = OneReadAtATime(timeout=60.0), Read()

    first = asyncio.ensure_future(reads.run("decisions", read, "the decisions"))
    second = asyncio.ensure_future(reads.run("decisions", read, "the decisions"))
    await asyncio.sleep(0)
    read.gate.set()

    assert list(await asyncio.gather(first, second)) == ["answer 1", "answer 1"]
    assert read.runs == 1
    assert await reads.run("decisions", read, "the decisions") == "answer 2", "a new read"


async def test_reads_of_other_kinds_do_not_wait_for_each_other() -> None:
    reads, slow, quick = OneReadAtATime(timeout=60.0), Read(), Read()
    quick.gate.set()

    pending = asyncio.ensure_future(reads.run("decisions", slow, "the decisions"))
    answer = await reads.run(("cases", None), quick, "the RCA cases")

    assert answer == "answer 1"
    assert not pending.done()
    slow.gate.set()
    assert await pending == "answer 1"


async def test_a_store_that_does_not_answer_is_reported_and_no_second_read_starts() -> None:
    reads, read = OneReadAtATime(timeout=0.01), Read()

    with pytest.raises(ReadLate, match=r"the decisions: the store did not answer within 0.01 s"):
        await reads.run("decisions", read, "the decisions")
    with pytest.raises(ReadLate):
        await reads.run("decisions", read, "the decisions")
    assert read.runs == 1, "the late read is waited for again, not started twice"

    read.gate.set()
    assert await reads.run("decisions", read, "the decisions") == "answer 1"


async def test_a_read_that_fails_fails_its_callers_and_the_next_one_runs_again() -> None:
    reads = OneReadAtATime(timeout=60.0)
    runs: list[int] = []

    async def failing() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("the store went away (test)")
        return "back"

    with pytest.raises(ConnectionError, match="went away"):
        await reads.run("decisions", failing, "the decisions")
    assert await reads.run("decisions", failing, "the decisions") == "back"


async def test_a_read_that_fails_after_its_callers_gave_up_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads, gate = OneReadAtATime(timeout=0.01), asyncio.Event()

    async def failing() -> str:
        await gate.wait()
        raise ConnectionError("the store went away (test)")

    with pytest.raises(ReadLate):
        await reads.run("decisions", failing, "the decisions")
    gate.set()
    with pytest.raises(ConnectionError):  # a caller waiting hears of it: not logged for it
        await reads.run("decisions", failing, "the decisions")
    assert not caplog.records

    gate.clear()
    with pytest.raises(ReadLate):
        await reads.run("decisions", failing, "the decisions")
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)

    [record] = caplog.records
    assert record.getMessage() == (
        "dashboard: the decisions failed after the pages stopped waiting:"
        " ConnectionError('the store went away (test)')"
    )
