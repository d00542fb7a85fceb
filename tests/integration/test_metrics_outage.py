"""A PostgreSQL outage as ``GET /metrics`` shows it: the store unavailable while its connections
are cut, one outage and the failed attempts counted, available again after the restore."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.handlers.config import ProcessorSettings
from tests.e2e.test_http import Recorder
from tests.e2e.test_metrics import scrape, value
from tests.faults import ProxiedPostgres

pytestmark = pytest.mark.postgres

WAIT_S = 30.0  # only turns a hang into a failure


@pytest.fixture
async def center(pg_proxy: ProxiedPostgres, tmp_path: Path) -> AsyncIterator[EventCenter]:
    settings = CenterSettings(
        database_url=pg_proxy.url,
        data_dir=tmp_path,
        processor=ProcessorSettings(backoff_base=0.005, backoff_max=0.02),
    )
    built = EventCenter(settings, builtin_handlers=False)
    built.processor.subscribe(["work.#"], Recorder(), name="work")
    await built.start()
    yield built
    await built.stop()
    built.close()


async def test_an_outage_is_shown_while_it_lasts_and_counted_after(
    center: EventCenter, pg_proxy: ProxiedPostgres
) -> None:
    await center.publish("work.item", {"n": 0})
    _, before = await scrape(center)

    pg_proxy.proxy.cut()
    waiting = asyncio.create_task(center.publish("work.item", {"n": 1}))
    deadline = time.monotonic() + WAIT_S
    while center.writer.available:
        assert time.monotonic() < deadline, "the writer never noticed the outage"
        await asyncio.sleep(0.01)
    _, during = await scrape(center)
    pg_proxy.proxy.restore()
    await asyncio.wait_for(waiting, WAIT_S)
    await asyncio.wait_for(center.processor.join(), WAIT_S)
    _, after = await scrape(center)

    errors = "eventcenter_store_errors_total"
    assert (
        value(before, "eventcenter_store_available"),
        value(during, "eventcenter_store_available"),
    ) == (1, 0)
    assert value(after, "eventcenter_store_available") == 1
    assert value(before, "eventcenter_store_outages_total") == 0
    assert value(during, "eventcenter_store_outages_total") == 1
    assert value(after, "eventcenter_store_outages_total") == 1
    assert value(before, errors, kind="unavailable") == 0
    failed_attempts = value(after, errors, kind="unavailable")
    assert failed_attempts is not None
    assert failed_attempts >= 1
    assert value(after, errors, kind="refused") == 0
    assert value(after, "eventcenter_type_events_published_total", type="work.item") == 2
