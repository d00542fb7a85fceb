"""Structured logs: what a record says about the work in progress, in one JSON line.

Records are captured from the process's real logging configuration
(:func:`~eventcenter.center.logs.configure_logging` writing to a buffer) while a real processor
delivers events, a polling engine polls and the RCA runner works on a case.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
import structlog

from eventcenter.center.logs import LogFormat, configure_logging, resolve_format
from eventcenter.domain.errors import PermanentFailure
from eventcenter.domain.event import Event
from eventcenter.domain.sources import Received
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from eventcenter.sources.clock import FakeClock, settle
from eventcenter.sources.polling_engine import PollingEngine
from tests.unit.looping import joined
from tests.unit.rca_fakes import AT, FakeStrategy, rig, timeout
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakePoll,
    FakeSource,
    FixedJitter,
    MemorySink,
    Outcomes,
)

shop = logging.getLogger("shop")

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def configured() -> Iterator[Callable[[str], io.StringIO]]:
    """Configure the process's logging into a buffer; put everything back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    chatty = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "urllib3")}

    def configure(format: str) -> io.StringIO:
        buffer = io.StringIO()
        configure_logging(format, "debug", stream=buffer)
        return buffer

    yield configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in chatty.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def lines(configured: Callable[[str], io.StringIO]) -> Lines:
    """Every line written so far, each parsed as JSON (a line that is not JSON fails)."""
    buffer = configured("json")
    return lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]


def said(records: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
    return [record for record in records if record["message"] == message]


@pytest.fixture
async def processor() -> AsyncIterator[EventProcessor]:
    built = EventProcessor(
        ProcessorSettings(backoff_base=0.001, backoff_max=0.002, max_attempts=2, workers=4),
        decisions=MemoryDecisionLog(),
        dead_letters=MemoryDeadLetters(),
        rng=random.Random(7),
    )
    await built.start()
    yield built
    await built.stop(timeout=0)


async def test_a_record_a_handler_emits_carries_the_delivery_it_runs_for(
    processor: EventProcessor, lines: Lines
) -> None:
    @processor.on("orders.created", name="charge")
    async def charge(event: Event, ctx: Context) -> None:
        shop.info("charging order %s", event.payload["order"])

    event_id = await processor.publish(
        "orders.created",
        {"order": 42},
        tenant="acme",
        source="checkout",
        correlation_id="order-42",
    )
    await joined(processor)

    [record] = said(lines(), "charging order 42")
    assert record == {
        "timestamp": record["timestamp"],
        "level": "info",
        "logger": "shop",
        "message": "charging order 42",
        "tenant": "acme",
        "source": "checkout",
        "event_id": event_id,
        "event_type": "orders.created",
        "correlation_id": "order-42",
        "subscription": "charge",
        "attempt": 1,
    }
    assert list(record)[:4] == ["timestamp", "level", "logger", "message"]
    assert record["timestamp"].endswith("Z")
    assert record["timestamp"][:10].count("-") == 2


async def test_structlog_loggers_in_handler_code_get_the_same_fields(
    processor: EventProcessor, lines: Lines
) -> None:
    @processor.on("orders.created", name="charge")
    async def charge(event: Event, ctx: Context) -> None:
        structlog.get_logger("shop").warning("card declined", order=event.payload["order"])
        with structlog.contextvars.bound_contextvars(card="visa"):
            shop.info("asking for another card")  # stdlib, with the user's own binding

    event_id = await processor.publish("orders.created", {"order": 7}, tenant="globex")
    await joined(processor)

    [record] = said(lines(), "card declined")
    assert (record["level"], record["logger"], record["order"]) == ("warning", "shop", 7)
    assert (record["tenant"], record["event_id"]) == ("globex", event_id)
    assert record["correlation_id"] == event_id  # none given: the event starts its own chain
    [asking] = said(lines(), "asking for another card")
    assert (asking["card"], asking["tenant"], asking["event_id"]) == ("visa", "globex", event_id)


async def test_concurrent_deliveries_never_mix_up_their_fields(
    processor: EventProcessor, lines: Lines
) -> None:
    entered: list[str] = []
    gate = asyncio.Event()

    @processor.on("orders.#", name="slow")
    async def slow(event: Event, ctx: Context) -> None:
        shop.info("entered %s", event.tenant)
        entered.append(event.tenant)
        await gate.wait()  # every delivery is inside its handler at once
        shop.info("leaving %s", event.tenant)

    tenants = ["acme", "globex", "initech", "umbrella"]
    ids = {
        tenant: await processor.publish("orders.created", {}, tenant=tenant) for tenant in tenants
    }
    for _ in range(50):
        if len(entered) == len(tenants):
            break
        await asyncio.sleep(0)
    assert sorted(entered) == tenants, "the four deliveries run at the same time"
    gate.set()
    await joined(processor)

    records = [r for r in lines() if r["logger"] == "shop"]
    assert len(records) == 2 * len(tenants)
    for record in records:
        tenant = record["message"].split()[-1]
        assert (record["tenant"], record["event_id"]) == (tenant, ids[tenant])


async def test_an_exception_is_one_field_of_one_line(
    processor: EventProcessor, configured: Callable[[str], io.StringIO]
) -> None:
    buffer = configured("json")

    @processor.on("orders.created", name="refund")
    async def refund(event: Event, ctx: Context) -> None:
        try:
            {"order": 1}["missing"]
        except KeyError:
            shop.exception("refund failed\non two lines")
        raise PermanentFailure("no such order")

    event_id = await processor.publish("orders.created", {}, tenant="acme")
    await joined(processor)

    text = buffer.getvalue()
    records = [json.loads(line) for line in text.splitlines()]  # every line is one record
    [own] = said(records, "refund failed\non two lines")
    assert own["exception"].startswith("Traceback (most recent call last):")
    assert own["exception"].rstrip().endswith("KeyError: 'missing'")
    assert own["event_id"] == event_id
    # The processor's own record of the dead letter carries the delivery too.
    [letter] = [r for r in records if r["message"].startswith("dead-lettering orders.created")]
    assert (letter["level"], letter["logger"]) == ("warning", "eventcenter.processor")
    assert (letter["tenant"], letter["event_id"], letter["subscription"]) == (
        "acme",
        event_id,
        "refund",
    )
    assert text.count("\n") == len(records)


async def test_a_record_outside_any_delivery_says_nothing_of_one(
    processor: EventProcessor, lines: Lines
) -> None:
    @processor.on("orders.created", name="charge")
    async def charge(event: Event, ctx: Context) -> None:
        shop.info("inside")

    await processor.publish("orders.created", {}, tenant="acme")
    await joined(processor)
    shop.info("outside")

    [inside] = said(lines(), "inside")
    [outside] = said(lines(), "outside")
    assert inside["tenant"] == "acme"
    assert not {"tenant", "event_id", "subscription", "source"} & set(outside)


async def test_records_of_a_source_engine_and_of_its_connector_carry_the_source(
    lines: Lines,
) -> None:
    source = FakeSource()
    source.change("k1")
    poll = FakePoll(source)
    connector = logging.getLogger("connector")

    async def logged_poll(cursor: str | None) -> tuple[Sequence[Received], str | None]:
        connector.info("polling from %s", cursor)
        return await poll(cursor)

    clock = FakeClock()
    engine = PollingEngine(
        TENANT,
        SOURCE,
        logged_poll,
        MemorySink(),
        clock,
        Outcomes(),
        interval=10.0,
        min_interval=1.0,
        max_interval=60.0,
        rng=FixedJitter(0.0),
    )
    engine.start()
    await clock.advance(0.0)
    await engine.stop()

    [first, *_] = said(lines(), "polling from None")
    assert (first["tenant"], first["source"], first["path"]) == (TENANT, SOURCE, "poll")
    assert "event_id" not in first


async def test_records_of_an_rca_case_worker_carry_the_case(lines: Lines) -> None:
    healer = logging.getLogger("healer")

    class Logged(FakeStrategy):
        async def apply(self, case: Any) -> str:
            healer.warning("restarting the stream")
            return await super().apply(case)

    test = rig(Logged("restart_stream", heals=True))
    runner = test.runner()
    await runner.start()
    try:
        runner.report(timeout(AT, tenant="acme", source="orders"))
        await settle()
    finally:
        await runner.stop()

    [row] = await test.recorder.cases()
    [record] = said(lines(), "restarting the stream")
    assert record["case_id"] == row.case_id
    assert (record["tenant"], record["source"], record["category"]) == (
        "acme",
        "orders",
        "event_timeout",
    )
    [opened] = [r for r in lines() if r["message"].startswith(f"rca case {row.case_id} opened")]
    assert (opened["tenant"], opened["source"], opened["failure_kind"]) == (
        "acme",
        "orders",
        "timeout",
    )


async def test_the_console_format_is_one_readable_line_with_the_fields(
    processor: EventProcessor, configured: Callable[[str], io.StringIO]
) -> None:
    buffer = configured("console")

    @processor.on("orders.created", name="charge")
    async def charge(event: Event, ctx: Context) -> None:
        shop.info("charging")

    event_id = await processor.publish("orders.created", {}, tenant="acme")
    await joined(processor)

    [line] = [line for line in buffer.getvalue().splitlines() if "charging" in line]
    assert "[info" in line
    assert "tenant=acme" in line
    assert f"event_id={event_id}" in line
    assert "\x1b[" not in line  # no colours when writing to something that is not a terminal


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_console_on_a_terminal_and_json_elsewhere() -> None:
    assert resolve_format("auto", Terminal()) is LogFormat.CONSOLE
    assert resolve_format("auto", io.StringIO()) is LogFormat.JSON
    assert resolve_format("json", Terminal()) is LogFormat.JSON
    assert resolve_format("console", io.StringIO()) is LogFormat.CONSOLE
    with pytest.raises(ValueError, match="xml"):
        resolve_format("xml")
