"""``eventcenter sources list|show|simulate`` as a user runs them, on a store a real center
recorded: a source that switched, came back, had a switch rolled back, was restarted; and
``eventcenter run --config`` running a source declared in the file, read beside it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from eventcenter.center.reader import CenterReader
from eventcenter.center.settings import CenterSettings
from eventcenter.center.source_views import when
from eventcenter.domain.durations import parse_duration
from tests.e2e.test_cli import run
from tests.e2e.test_http import GUARD_S, Running
from tests.source_center import FakeTimeCenter, center_settings, exercise, source_table


class Store:
    """A store recorded by the exercise of tests/source_center.py, then a restart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        settings = center_settings(f"sqlite:///{self.data}/center.db", root)
        asyncio.run(self._record(settings))
        reader = CenterReader(settings)
        try:
            self.history = reader.mode_history("acme", "orders")
        finally:
            reader.close()

    @staticmethod
    async def _record(settings: CenterSettings) -> None:
        async with FakeTimeCenter(settings) as first:
            await exercise(first)
        async with FakeTimeCenter(
            settings, start=first.clock.now() + 3600, fake=first.fake
        ) as second:
            await second.deliver(4)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*args, "--data-dir", str(self.data), cwd=self.root, check=check)

    def config(self, name: str, **changes: object) -> str:
        path = self.root / name
        path.write_text(source_table(**changes), encoding="utf-8")
        return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("recorded"))


def row(out: str, label: str) -> list[str]:
    """The cells of the table line that starts with ``label``."""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no line {label!r} in:\n{out}")


def test_list_prints_each_source_with_mode_health_switches_and_items(store: Store) -> None:
    out = store.cli("sources", "list").stdout

    assert "1 source(s)" in out
    cells = row(out, "acme/orders")
    assert cells[0] == "event_only (stopped)"
    assert cells[1].endswith("healthy")
    assert cells[2] == "3 (1 rolled back)"
    assert cells[3].endswith("rolled back hybrid -> event_only"), "the last mode change"
    pushed, polled = (int(n) for n in cells[4].split(" / "))
    assert pushed > 0
    assert polled > 0


def test_show_prints_everything_about_one_source(store: Store) -> None:
    out = store.cli("sources", "show", "acme/orders").stdout

    assert "source acme/orders" in out
    assert "event_only since" in out
    assert "stopped at" in out
    assert "failure 3, success 5 (level 0 of 7; configured 3 / 5, ceiling 10)" in out
    assert "20s after flapping; none running" in out
    assert "factors" in out
    assert "streak" in out
    assert "reliability" in out
    assert "2 start(s), 2 stop(s), 1 rollback(s)" in out
    assert "3, 1 rolled back; threshold changes 2" in out
    assert "reconciliations" in out
    assert "missing 0" in out
    changes = out.split("Recent mode changes", 1)[1]
    assert changes.count("event_only -> hybrid") == 2
    assert "5 consecutive push successes" in changes
    assert "rolled back hybrid -> event_only" in changes
    assert "the first poll failed" in changes


def test_simulate_through_the_recorded_settings_gives_the_recorded_switches_exactly(
    store: Store,
) -> None:
    same = store.config("same.toml")

    out = store.cli("sources", "simulate", "--source", "acme/orders", "--config", same).stdout

    assert "the replay made exactly the recorded mode changes (3 switch(es), 1 rollback(s))" in out
    assert row(out, "switches") == ["3", "3"]
    assert row(out, "rollbacks") == ["1", "1"]
    for mode in ("event_only", "hybrid", "polling_only"):
        recorded, simulated = row(out, f"time in {mode}")
        assert recorded == simulated
    table = out.split("Mode changes side by side", 1)[1]
    for change in store.history.changes:
        assert when(change.at) in table
    assert table.count("same") == 4


def test_simulate_with_a_higher_failure_threshold_switches_less(store: Store) -> None:
    other = store.config("other.toml", failure_threshold=4)

    out = store.cli("sources", "simulate", "--source", "acme/orders", "--config", other).stdout

    assert row(out, "failure / success") == ["3 / 5", "4 / 5"]
    recorded, simulated = (int(n) for n in row(out, "switches"))
    assert simulated < recorded
    hybrid = row(out, "time in hybrid")
    assert hybrid[1] == "0.0s"
    assert hybrid[0] != "0.0s"
    assert "the replay differs from the record" in out


def test_simulate_with_a_lower_success_threshold_returns_sooner(store: Store) -> None:
    other = store.config("eager.toml", success_threshold=2, max_hysteresis=10)

    out = store.cli("sources", "simulate", "--source", "acme/orders", "--config", other).stdout

    recorded, simulated = row(out, "time in hybrid")
    assert parse_duration(simulated) < parse_duration(recorded)


def test_an_unknown_source_is_one_line_naming_it(store: Store) -> None:
    result = store.cli("sources", "show", "acme/orderz", check=False)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: no source 'acme/orderz' in the store at sqlite:///")
    assert "(recorded: acme/orders)" in result.stderr


def test_simulate_needs_the_source_declared_in_the_config(store: Store) -> None:
    config = store.root / "empty.toml"
    config.write_text("", encoding="utf-8")

    result = store.cli(
        "sources", "simulate", "--source", "acme/orders", "--config", str(config), check=False
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{config} declares no source acme/orders" in result.stderr


def test_a_source_not_named_tenant_slash_name_is_a_usage_error(store: Store) -> None:
    result = store.cli("sources", "show", "orders", check=False)

    assert result.returncode == 2
    assert "must name a source as tenant/name" in result.stderr


def test_a_mistyped_data_dir_says_there_is_no_store_and_creates_nothing(tmp_path: Path) -> None:
    for command in (["list"], ["show", "acme/orders"]):
        result = run(
            "sources", *command, "--data-dir", str(tmp_path / "nope"), cwd=tmp_path, check=False
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: no store at {tmp_path / 'nope' / 'center.db'}")
    assert not (tmp_path / "nope").exists()


def test_a_typo_in_a_source_table_is_one_line_naming_its_place(tmp_path: Path) -> None:
    config = tmp_path / "center.toml"
    config.write_text(
        '[[sources]]\ntenant = "acme"\nname = "orders"\n'
        'events = { kind = "redis_stream", strem = "orders-events", group = "eventcenter" }\n',
        encoding="utf-8",
    )

    for command in (["sources", "list"], ["run"]):
        result = run(*command, "--config", str(config), cwd=tmp_path, check=False)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "error: invalid setting 'sources[0].events.strem': unknown option of redis_stream"
            " (its options: stream, group, consumer, url, claim_idle, start, connect_timeout,"
            " command_timeout)"
        ]
    assert not (tmp_path / "data").exists()


def test_run_runs_the_declared_sources_and_the_cli_reads_them_beside_it(tmp_path: Path) -> None:
    config = tmp_path / "center.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[http]\nport = 0\nauth = "none"\n'
        '[[sources]]\ntenant = "acme"\nname = "orders"\nevents = { kind = "webhook" }\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCENTER_")}
    child = Running(config, {**env, "COLUMNS": "200", "NO_COLOR": "1"}, tmp_path)
    try:
        started = child.line_with("running on")
        url = started.split("HTTP on ", 1)[1].split(";", 1)[0]
        with httpx.Client(base_url=url, timeout=GUARD_S) as client:
            answer = client.post(
                "/sources/acme/orders/webhook",
                content=orjson.dumps({"key": "o-1", "version": 1, "data": {"total": 5}}),
                headers={"Content-Type": "application/json"},
            )
        assert answer.status_code == 202, answer.text

        beside = run("sources", "list", "--config", str(config), cwd=tmp_path)
        shown = run("sources", "show", "acme/orders", "--config", str(config), cwd=tmp_path)

        code, out, err = child.stop(signal.SIGTERM)
    finally:
        child.kill()

    cells = row(beside.stdout, "acme/orders")
    assert cells[0] == "event_only", "running: not marked stopped"
    assert "paths            push (webhook)" in shown.stdout
    assert code == 0, err
    [stopped] = [line for line in out.splitlines() if line.startswith("stopped")]
    assert ", sources, " in stopped


def test_the_cli_never_writes_the_store(store: Store) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in store.data.iterdir()}
    store.cli("sources", "list")
    store.cli("sources", "show", "acme/orders")
    assert {p.name: p.stat().st_mtime_ns for p in store.data.iterdir()} == before


def test_a_replay_leaves_the_declared_sources_off(tmp_path: Path) -> None:
    config = tmp_path / "center.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[[sources]]\ntenant = "acme"\nname = "orders"\nevents = { kind = "webhook" }\n',
        encoding="utf-8",
    )
    missing = "00000000-0000-0000-0000-000000000000"

    replay = run(
        "dead-letters", "replay", missing, "--config", str(config), cwd=tmp_path, check=False
    )
    listed = run("sources", "list", "--config", str(config), cwd=tmp_path)

    assert replay.returncode == 1
    assert f"no dead letter {missing}" in replay.stderr
    assert "0 source(s)" in listed.stdout, "the replay's center registered no source"
