"""Pausing and resuming a data source in a real center, on SQLite and PostgreSQL, on the fake
clock of tests/source_center.py: nothing is admitted or decided while paused, resuming reads on
from the stored positions exactly once, a pause outlives a restart, the read side and the
what-if see it, and the operators' requests (``eventcenter sources pause|resume``) are applied
by the running center, or by the next one before its sources start."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.http import create_app
from eventcenter.center.reader import CenterReader
from eventcenter.center.source_report import compare
from eventcenter.domain.errors import InvalidPauseRequest
from eventcenter.domain.event import Event
from eventcenter.domain.hysteresis import HysteresisConfig
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID
from eventcenter.sources.manager import SourceNotFound
from eventcenter.sources.source import DataSource
from eventcenter.sources.webhook import WebhookPath
from eventcenter.storage.source_requests import SourceRequestBox
from tests.e2e.test_cli import run
from tests.e2e.test_http import JSON, settings_for
from tests.source_center import POLICY, FakeTimeCenter, center_settings
from tests.unit.source_fakes import SOURCE, TENANT, connection_lost

BOUND_S = 20.0  # a bound on real-time waits (a CLI beside the center, an engine task), no pace


def listen(w: FakeTimeCenter) -> list[tuple[str, str]]:
    """Subscribe to the source's items (before the center starts); the list fills as they are
    handled, one entry per delivery."""
    handled: list[tuple[str, str]] = []

    async def keep(event: Event, ctx: object) -> None:
        handled.append((event.payload["key"], event.payload["version"]))

    w.center.processor.subscribe("source.item.*", keep, name="items")
    return handled


def produce(w: FakeTimeCenter, prefix: str, count: int) -> None:
    for n in range(count):
        w.fake.change(f"{prefix}-{n}")


async def push_position(w: FakeTimeCenter) -> str | None:
    return await w.center.deliveries.source_position(TENANT, SOURCE, "push")


async def test_nothing_is_admitted_while_paused_and_resuming_admits_each_item_once(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    w = FakeTimeCenter(settings)
    handled = listen(w)
    async with w:
        await w.deliver(3, prefix="before")
        await w.center.processor.join()
        assert len(handled) == 3
        position = await push_position(w)

        result = await w.center.pause_source(TENANT, SOURCE, reason="broker upgrade", by="dana")
        assert (result.changed, result.mode) == (True, EVENT_ONLY)
        opened = list(w.push.opened)
        produce(w, "during", 20)
        await w.run(600, step=5)  # 20 event timeouts, 10 polling intervals, 6 reconciliations
        await w.center.processor.join()

        assert len(handled) == 3, "nothing was admitted while paused"
        assert await push_position(w) == position
        assert w.push.opened == opened, "the push path was not opened again"
        assert w.push.is_open is False
        assert w.poll.cursors == []
        assert w.runner.recent == [], "no switch while paused: silence is not charged"

        await w.center.resume_source(TENANT, SOURCE, reason="upgrade done", by="dana")
        await w.run(10)
        await w.center.processor.join()

        assert w.push.opened[-1] == position, "resumed from the stored position"
        assert sorted(handled) == sorted(w.fake.produced())
        assert len(handled) == len(set(handled)) == 23, "each item once"
        assert w.runner.mode == EVENT_ONLY
        names = [type(e).__qualname__ for _, e in w.center.app.read_events()]

    assert names.count("SourceLog.Paused") == names.count("SourceLog.Resumed") == 1
    assert names.index("SourceLog.Paused") < names.index("SourceLog.Resumed")


async def test_a_paused_source_stays_paused_across_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    first = FakeTimeCenter(settings)
    handled = listen(first)
    async with first:
        await first.deliver(2, prefix="before")
        await first.center.pause_source(TENANT, SOURCE, reason="maintenance", by="dana")
        await first.center.processor.join()
    assert len(handled) == 2

    produce(first, "while-down", 5)
    second = FakeTimeCenter(settings, start=first.clock.now() + 3600, fake=first.fake)
    handled = listen(second)
    async with second:
        await second.run(300, step=5)
        await second.center.processor.join()
        assert second.push.opened == [], "a paused source starts no engine"
        assert second.poll.cursors == []
        assert second.listing.calls == 0
        assert handled == []
        status = second.runner.status()
        assert status.paused is not None
        assert (status.paused.by, status.paused.reason) == ("dana", "maintenance")

        reader = CenterReader(settings)  # beside the running center
        try:
            [row] = reader.sources()
        finally:
            reader.close()
        assert row.paused is not None
        assert row.paused.by == "dana"
        assert row.mode == EVENT_ONLY

        await second.center.resume_source(TENANT, SOURCE, by="erin")
        await second.run(10)
        await second.center.processor.join()
        assert sorted(handled) == sorted((f"while-down-{n}", "1") for n in range(5))


async def test_a_source_paused_in_hybrid_resumes_polling_and_the_what_if_stays_exact(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    async with FakeTimeCenter(settings) as w:
        await w.deliver(2)
        w.push.receive_errors.extend([connection_lost()] * 3)
        await w.run(10)
        assert w.runner.mode == HYBRID
        await w.center.pause_source(TENANT, SOURCE, reason="maintenance", by="dana")
        polls = len(w.poll.cursors)
        await w.run(900, step=5)
        assert len(w.poll.cursors) == polls, "no poll while paused"
        await w.center.resume_source(TENANT, SOURCE, by="dana")
        await w.run(1)
        assert len(w.poll.cursors) > polls, "polling resumed at once"
        assert w.runner.mode == HYBRID
        await w.deliver(6, prefix="back")
        assert w.runner.mode == EVENT_ONLY

    reader = CenterReader(settings)
    try:
        row = reader.source(TENANT, SOURCE)
        history = reader.mode_history(TENANT, SOURCE)
        outcomes = reader.outcomes(TENANT, SOURCE)
    finally:
        reader.close()
    assert [o.path for o in outcomes].count("stop") == 2  # the pause, the center's stop
    config = HysteresisConfig(
        **{k: v for k, v in POLICY.items() if k in HysteresisConfig.__dataclass_fields__}
    )
    result = compare(row, history, outcomes, config, POLICY["polling_interval"])
    assert result.same_switches, result.timeline()
    assert len(result.recorded.switches) == 2


async def test_bad_requests_are_refused_and_record_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeTimeCenter(center_settings(database_url, tmp_path)) as w:
        with pytest.raises(InvalidPauseRequest, match="reason"):
            await w.center.pause_source(TENANT, SOURCE, reason=" ", by="dana")
        with pytest.raises(SourceNotFound):
            await w.center.pause_source(TENANT, "nope", reason="x", by="dana")
        log = w.center.app.source_log(SourceLog.create_id(TENANT, SOURCE))
        assert log is not None
        assert log.paused is False


# requests left in the store ----------------------------------------------------------------------


def box(w: FakeTimeCenter) -> SourceRequestBox:
    settings = w.center.settings
    return SourceRequestBox(settings.effective_url, settings.name, settings.shown_url)


async def test_requests_are_applied_in_order_with_their_outcomes(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeTimeCenter(center_settings(database_url, tmp_path)) as w:
        requests = box(w)
        now = time.time()
        ids = [
            requests.request(TENANT, SOURCE, "pause", "dana", "maintenance", now),
            requests.request(TENANT, SOURCE, "pause", "erin", "again", now),
            requests.request(TENANT, "nope", "pause", "dana", "x", now),
            requests.request(TENANT, SOURCE, "resume", "dana", "", now),
            requests.request(TENANT, SOURCE, "resume", "dana", "", now),
        ]
        await w.center.source_requests.apply_pending()
        outcomes = [requests.outcome(request_id)[1] for request_id in ids]
        assert await w.center.source_requests.apply_pending() == 0, "each applies once"

    assert outcomes[0] == "paused"
    assert outcomes[1] == "paused already (by dana: maintenance)"
    assert outcomes[2] is not None
    assert outcomes[2].startswith("refused: no source 'nope' of tenant 'acme'")
    assert outcomes[3:] == ["resumed", "not paused: nothing to resume"]


async def test_a_request_given_while_no_center_runs_is_applied_before_the_sources_start(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    async with FakeTimeCenter(settings) as first:
        await first.deliver(1)
    requests = box(first)
    request_id = requests.request(TENANT, SOURCE, "pause", "dana", "while down", time.time())

    second = FakeTimeCenter(settings, start=first.clock.now() + 60, fake=first.fake)
    async with second:
        assert second.push.opened == [], "the paused source never opened its push path"
        assert requests.outcome(request_id)[1] == "paused"
        assert second.runner.paused is not None


def cli(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(*args, "--database-url", url, cwd=tmp_path, check=False)


async def test_the_cli_pauses_and_resumes_a_running_center_s_source(
    database_url: str, tmp_path: Path
) -> None:
    """The CLI waits for the running center's own pass over the requests (every second, in
    real time); the wait is bounded, never an assertion about time."""
    async with FakeTimeCenter(center_settings(database_url, tmp_path)) as w:
        paused = await asyncio.to_thread(
            cli,
            tmp_path,
            database_url,
            "sources",
            "pause",
            f"{TENANT}/{SOURCE}",
            "--reason",
            "broker upgrade",
            "--by",
            "dana",
            "--wait",
            str(BOUND_S),
        )
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.strip() == "source acme/orders: paused (asked by dana)"
        assert w.runner.paused is not None
        assert w.push.is_open is False

        shown = await asyncio.to_thread(
            cli, tmp_path, database_url, "sources", "show", f"{TENANT}/{SOURCE}"
        )
        assert "paused: resumes in this mode" in shown.stdout
        assert "by dana: broker upgrade" in shown.stdout
        listed = await asyncio.to_thread(cli, tmp_path, database_url, "sources", "list")
        assert "event_only (paused)" in listed.stdout

        resumed = await asyncio.to_thread(
            cli,
            tmp_path,
            database_url,
            "sources",
            "resume",
            f"{TENANT}/{SOURCE}",
            "--by",
            "dana",
            "--wait",
            str(BOUND_S),
        )
        assert resumed.stdout.strip() == "source acme/orders: resumed (asked by dana)"
        assert w.runner.paused is None
        await w.run(1)
        assert w.push.is_open


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_cli_refuses_what_it_cannot_do_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeTimeCenter(center_settings(database_url, tmp_path)):
        pass
    no_reason = cli(tmp_path, database_url, "sources", "pause", "acme/orders")
    unknown = cli(tmp_path, database_url, "sources", "pause", "acme/nope", "--reason", "x")
    not_a_key = cli(tmp_path, database_url, "sources", "resume", "orders")
    recorded = cli(
        tmp_path, database_url, "sources", "pause", "acme/orders", "--reason", "x", "--wait", "0"
    )

    assert (no_reason.returncode, no_reason.stdout) == (2, "")
    assert no_reason.stderr.startswith("error: sources pause needs --reason saying why")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no source 'acme/nope' in the store")
    assert not_a_key.returncode == 2
    assert "must name a source as tenant/name" in not_a_key.stderr
    for result in (no_reason, unknown, not_a_key):
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    assert recorded.returncode == 0
    assert "pause request recorded; the center applies it when it runs" in recorded.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_paused_webhook_source_answers_503_and_its_sender_retries_after_the_resume(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path), builtin_handlers=False)
    path = WebhookPath(TENANT, SOURCE)
    center.sources.register(DataSource(tenant=TENANT, name=SOURCE, events=path))
    app = create_app(center, webhooks={(TENANT, SOURCE): path})
    item = orjson.dumps({"key": "o-1", "version": 1, "data": {}})
    url = f"/sources/{TENANT}/{SOURCE}/webhook"
    await center.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://center"
        ) as client:
            await opened(path)
            await center.pause_source(TENANT, SOURCE, reason="maintenance", by="dana")
            refused = await client.post(url, content=item, headers=JSON)
            await center.resume_source(TENANT, SOURCE, by="dana")
            await opened(path)
            taken = await client.post(url, content=item, headers=JSON)
    finally:
        await center.stop()

    assert refused.status_code == 503, refused.text
    assert "Retry-After" in refused.headers
    assert taken.status_code == 202, taken.text


async def opened(path: WebhookPath) -> None:
    """Wait (bounded) until the event engine has opened the path: it does so in its own task."""
    async with asyncio.timeout(BOUND_S):
        while not path.is_open:  # noqa: ASYNC110 - the path has no event to await its opening
            await asyncio.sleep(0.01)
