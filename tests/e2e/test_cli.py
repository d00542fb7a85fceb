"""The ``eventcenter`` command as a user runs it: installed console script, real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from eventcenter import Event, EventCenter, PermanentFailure
from eventcenter.handlers import Context

SCRIPT = Path(sys.executable).parent / "eventcenter"
HINT = "replay a dead letter: "
MARKUP = "[/] [bold]not bold[/bold] [red]"  # rich markup a user may type; must stay literal


def run(
    *args: str, cwd: Path, check: bool = True, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    env.pop("EVENTCENTER_CONFIG", None)
    result = subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"eventcenter {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def letters(cwd: Path, *extra: str) -> list[dict[str, Any]]:
    out = run("dead-letters", "list", "--json", *extra, cwd=cwd).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_demo_runs_on_the_embedded_default_and_summarises_what_it_decided(
    tmp_path: Path,
) -> None:
    result = run("demo", "--events", "300", "--rate", "3000", cwd=tmp_path)
    out = result.stdout
    assert (tmp_path / "data" / "center.db").is_file(), "SQLite under ./data by default"
    for heading in (
        "Events routed per type",
        "Events routed per priority",
        "Events routed per tenant",
        "Dead letters",
        "Recorded decisions, in order",
    ):
        assert heading in out
    for priority in ("CRITICAL", "HIGH", "NORMAL", "LOW"):
        assert priority in out
    for tenant in ("acme", "globex", "initech"):
        assert tenant in out
    assert "stable -> adjusting" in out
    assert "adjusting -> stable" in out
    assert "processor state at the end: stable" in out
    assert "shutdown clean" in out

    check_the_data_source_part(out)
    check_the_deployment_part(out)

    runs = [
        json.loads(line)
        for line in run("tuning", "list", "--json", cwd=tmp_path).stdout.splitlines()
    ]
    assert [(r["service"], r["status"], r["capacity_source"]) for r in runs] == [
        ("checkout", "tuned", "recorded"),  # newest first: the redeploy reused the record
        ("checkout", "tuned", "measured"),
    ]
    assert len(runs[1]["steps"]) > 3
    assert runs[0]["capacity"] == runs[1]["capacity"]
    listed = run("tuning", "list", cwd=tmp_path).stdout
    assert "2 tuning run(s), newest first" in listed
    assert "sha256:4f2a9c" in listed

    trail = run("decisions", "--last", "3", cwd=tmp_path).stdout
    assert "adjusting -> stable (settle)" in trail, "the audit trail is read back from the store"
    assert "frequency.restore" in trail

    stored = letters(tmp_path)
    assert stored, "the demo's failing payments and alerts were dead-lettered"
    assert all(row["status"] == "pending" and row["error"] for row in stored)
    assert {row["error_type"] for row in stored} <= {
        "RuntimeError",
        "PermanentFailure",
        "TimeoutError",
    }


def check_the_deployment_part(out: str) -> None:
    """The demo's deployment was load-tested for real, measured near the sample target's true
    capacity, both agents got a frequency, and the second deployment reused the record."""
    assert "Load test steps, as recorded" in out
    found = re.search(
        r"maximum sustainable throughput ([0-9.]+) req/s \(capacity; true capacity (\d+)", out
    )
    assert found, out
    measured, true = float(found.group(1)), float(found.group(2))
    assert 0.8 * true <= measured <= 1.2 * true
    assert "agent-eu got version 1" in out
    assert "agent-us got version 1" in out
    assert "deployed again: the recorded capacity was reused, no load test" in out


def check_the_data_source_part(out: str) -> None:
    """The demo source's timeline is read back from its log and its counts are the handler's:
    the delivered count is the one the processor's per-type table shows for the source's
    events, which the demo does not print itself."""
    assert re.search(r"Mode timeline of acme/inventory-[0-9a-f]{4}, as recorded", out)
    assert re.search(r"│\s*\+\d+\.\d\ds\s*│\s*event_only\s*│\s*hybrid\s*│", out), out
    assert re.search(r"│\s*hybrid\s*│\s*event_only\s*│\s*\d+ consecutive push successes", out)
    counts = re.search(
        r"produced (\d+), delivered (\d+), duplicates (\d+) \(handled by (.*?)\)", out
    )
    assert counts, out
    produced, delivered, duplicates = (int(counts.group(n)) for n in (1, 2, 3))
    assert produced > 50, "the producer ran for seconds, one item every 20 ms"
    assert delivered == produced
    assert duplicates == 0
    by_path = dict(part.split() for part in counts.group(4).split(", "))
    assert {"push", "poll"} <= set(by_path), "both paths carried items"
    assert sum(int(n) for n in by_path.values()) == delivered + duplicates
    row = re.search(r"│\s*source\.item\.changed\s*│\s*(\d+)\s*│\s*(\d+)\s*│", out)
    assert row, "the per-type table counts the source's events"
    assert (int(row.group(1)), int(row.group(2))) == (delivered, delivered)
    assert "source mode at the end: event_only" in out


def test_the_replay_command_the_demo_prints_works_as_printed(tmp_path: Path) -> None:
    demo = run(
        "demo",
        "--events",
        "300",
        "--rate",
        "3000",
        "--no-load-test",
        "--data-dir",
        "store",
        cwd=tmp_path,
    )
    assert not (tmp_path / "data").exists(), "the demo used the data dir it was given"
    hints = [line for line in demo.stdout.splitlines() if line.startswith(HINT)]
    assert len(hints) == 1
    command = shlex.split(hints[0].removeprefix(HINT))
    assert command[:3] == ["eventcenter", "dead-letters", "replay"]
    target_id = command[3]

    replay = subprocess.run(
        [str(SCRIPT), *command[1:]],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    before = {row["id"]: row for row in letters(tmp_path, "--data-dir", "store")}
    target = before[target_id]
    assert f"{target_id}: {target['event']['type']}" in replay.stdout, replay.stderr
    # The demo's dead letters fail for good (expired card, alert without rule, bad payload):
    # the replay fails again, says so, and leaves a new pending letter for the same event.
    assert replay.returncode == 1
    assert "failed again" in replay.stdout
    assert target["status"] == "replayed"
    again = [
        row
        for row in before.values()
        if row["event"]["id"] == target["event"]["id"] and row["id"] != target_id
    ]
    assert len(again) == 1
    assert again[0]["status"] == "pending"


def test_replaying_without_the_handler_registered_is_refused_clearly(tmp_path: Path) -> None:
    run("demo", "--events", "300", "--rate", "3000", "--no-load-test", cwd=tmp_path)
    target = letters(tmp_path)[0]
    replay = run("dead-letters", "replay", target["id"], cwd=tmp_path, check=False)
    assert replay.returncode == 1
    assert f"no subscription '{target['subscription']}'" in replay.stderr
    assert letters(tmp_path)[0]["status"] == "pending", "nothing changed"
    assert "0 tuning run(s)" in run("tuning", "list", cwd=tmp_path).stdout, "none was run"


def test_bad_settings_are_reported_with_the_field_name(tmp_path: Path) -> None:
    result = run("decisions", "--database-url", "mysql://x", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "database_url" in result.stderr


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    assert run("version", cwd=tmp_path).stdout.startswith("eventcenter 0.")


# --- errors: one line, exit code 1, no traceback ------------------------------------------------


def test_an_unreachable_database_is_one_line_naming_the_url_without_its_password(
    tmp_path: Path,
) -> None:
    url = "postgresql+psycopg2://ops:s3cret@127.0.0.1:1/center"  # nothing listens on port 1
    for command in (["decisions"], ["dead-letters", "list"]):
        result = run(*command, "--database-url", url, cwd=tmp_path, check=False)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("error: cannot use the store at ")
        assert "postgresql+psycopg2://ops:***@127.0.0.1:1/center" in result.stderr
        assert "s3cret" not in result.stderr
        assert "Connection refused" in result.stderr


def test_a_library_error_is_one_literal_line_with_exit_code_1(tmp_path: Path) -> None:
    (tmp_path / "bad_patterns.py").write_text(
        "async def handle(event, ctx):\n"
        "    pass\n"
        "\n"
        "def register(center):\n"
        f"    center.processor.subscribe('orders..{MARKUP}', handle)\n"
    )
    result = run(
        "dead-letters",
        "replay",
        "00000000-0000-0000-0000-000000000000",
        "--handlers",
        "bad_patterns:register",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert f"orders..{MARKUP}" in result.stderr


def test_bad_usage_still_exits_2(tmp_path: Path) -> None:
    result = run("dead-letters", "list", "--status", "lost", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == "error: --status must be pending, replaying or replayed, not 'lost'\n"


# --- user text is shown literally ---------------------------------------------------------------


def store_with_markup(data_dir: Path, letters: int = 1) -> list[datetime]:
    """Dead letters and decisions whose texts look like rich markup, made by the library.

    Returns when each decision was recorded.
    """

    async def review(event: Event, ctx: Context) -> None:
        await ctx.decide("order.review", f"customer wrote {event.payload['note']}", event)
        raise PermanentFailure(
            f"cannot parse note {event.payload['note']}: the order stays open until someone"
            " fixes the note by hand and replays it"
        )

    async def main() -> list[datetime]:
        center = EventCenter.from_url(f"sqlite:///{data_dir}/center.db", builtin_handlers=False)
        center.processor.subscribe("orders.*", review, name="review-notes-of-orders")
        async with center:
            for number in range(letters):
                await center.publish("orders.created", {"note": MARKUP, "n": number}, tenant="acme")
            await center.processor.join()
            trail = await asyncio.to_thread(center.decisions)
        return [row.at for row in trail]

    data_dir.mkdir()
    return asyncio.run(main())


def test_reasons_and_errors_that_look_like_markup_are_shown_literally(tmp_path: Path) -> None:
    store_with_markup(tmp_path / "data")
    listed = run("dead-letters", "list", cwd=tmp_path)
    assert f"PermanentFailure: cannot parse note {MARKUP}" in listed.stdout
    trail = run("decisions", cwd=tmp_path)
    assert f"customer wrote {MARKUP}" in trail.stdout


def test_decisions_show_the_date_and_the_time(tmp_path: Path) -> None:
    (decided_at,) = store_with_markup(tmp_path / "data")
    out = run("decisions", cwd=tmp_path, columns=80).stdout
    assert decided_at.strftime("%Y-%m-%d") in out
    assert decided_at.strftime("%H:%M:%S.%f")[:-3] in out


def test_dead_letter_ids_stay_whole_on_one_line_at_80_columns(tmp_path: Path) -> None:
    store_with_markup(tmp_path / "data", letters=3)
    ids = [row["id"] for row in letters(tmp_path)]
    assert len(ids) == 3
    lines = run("dead-letters", "list", cwd=tmp_path, columns=80).stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for letter_id in ids:
        assert any(letter_id in line for line in lines), f"{letter_id} was folded"


# --- --handlers finds modules in the working directory -----------------------------------------


def test_handlers_are_imported_from_the_working_directory(tmp_path: Path) -> None:
    async def flaky(event: Event, ctx: Context) -> None:
        raise PermanentFailure("downstream was down")

    async def fail_once() -> str:
        center = EventCenter.from_url(
            f"sqlite:///{tmp_path}/data/center.db", builtin_handlers=False
        )
        center.processor.subscribe("orders.*", flaky, name="fulfil")
        async with center:
            await center.publish("orders.created", {"order": 42}, tenant="acme")
            await center.processor.join()
        return str(center.dead_letters()[0].id)

    (tmp_path / "data").mkdir()
    letter_id = asyncio.run(fail_once())
    (tmp_path / "shop_handlers.py").write_text(
        "async def fulfil(event, ctx):\n"
        "    await ctx.decide('order.fulfilled', 'downstream is back', event)\n"
        "\n"
        "def register(center):\n"
        "    center.processor.subscribe('orders.*', fulfil, name='fulfil')\n"
    )
    replay = run(
        "dead-letters", "replay", letter_id, "--handlers", "shop_handlers:register", cwd=tmp_path
    )
    assert f"{letter_id}: orders.created" in replay.stdout
    assert [row["status"] for row in letters(tmp_path)] == ["replayed"]
    assert "downstream is back" in run("decisions", cwd=tmp_path).stdout


def test_an_unusable_data_dir_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run(
        "demo", "--events", "10", "--data-dir", str(blocker / "data"), cwd=tmp_path, check=False
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot use the data dir {blocker / 'data'}")


async def test_replay_beside_a_running_center_refuses_and_reads_still_work(
    tmp_path: Path,
) -> None:
    center = EventCenter.from_url(f"sqlite:///{tmp_path}/data/center.db")

    @center.processor.on("orders.created", name="orders")
    async def broken(event: Event, ctx: Context) -> None:
        raise PermanentFailure("no warehouse")

    async with center:
        await center.publish("orders.created", {"order": 1})
        await center.processor.join()
        listed = await asyncio.to_thread(letters, tmp_path)  # a read beside the running center
        assert len(listed) == 1
        replay = await asyncio.to_thread(
            run, "dead-letters", "replay", listed[0]["id"], cwd=tmp_path, check=False
        )
    assert replay.returncode == 1
    assert replay.stderr.count("\n") == 1, replay.stderr
    assert "center 'default'" in replay.stderr
    assert "is held by" in replay.stderr
    after = letters(tmp_path)
    assert [row["status"] for row in after] == ["pending"], "nothing was written beside it"
