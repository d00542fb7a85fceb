"""The ``eventcenter`` command as a user runs it: installed console script, real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(sys.executable).parent / "eventcenter"


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
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


def test_replaying_a_dead_letter_hands_it_back_to_its_handler(tmp_path: Path) -> None:
    run("demo", "--events", "300", "--rate", "3000", cwd=tmp_path)
    before = letters(tmp_path, "--status", "pending")
    # A payment dead-lettered for gateway timeouts may well pass when replayed: take one that
    # fails for good.
    target = next(row for row in before if row["error_type"] != "TimeoutError")
    replay = run(
        "dead-letters",
        "replay",
        target["id"],
        "--handlers",
        "eventcenter.center.demo:register_demo_handlers",
        cwd=tmp_path,
        check=False,
    )
    assert f"{target['id']}: {target['event']['type']}" in replay.stdout
    # The demo's dead letters fail for good (expired card, alert without rule, bad payload):
    # the replay fails again, says so, and leaves a new pending letter for the same event.
    assert replay.returncode == 1
    assert "failed again" in replay.stdout
    after = letters(tmp_path)
    replayed = [row for row in after if row["id"] == target["id"]]
    assert replayed[0]["status"] == "replayed"
    again = [
        row
        for row in after
        if row["event"]["id"] == target["event"]["id"] and row["id"] != target["id"]
    ]
    assert len(again) == 1
    assert again[0]["status"] == "pending"


def test_replaying_without_the_handler_registered_is_refused_clearly(tmp_path: Path) -> None:
    run("demo", "--events", "300", "--rate", "3000", cwd=tmp_path)
    target = letters(tmp_path)[0]
    replay = run("dead-letters", "replay", target["id"], cwd=tmp_path, check=False)
    assert replay.returncode == 1
    assert f"no subscription '{target['subscription']}'" in replay.stderr
    assert letters(tmp_path)[0]["status"] == "pending", "nothing changed"


def test_bad_settings_are_reported_with_the_field_name(tmp_path: Path) -> None:
    result = run("decisions", "--database-url", "mysql://x", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "database_url" in result.stderr


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    assert run("version", cwd=tmp_path).stdout.startswith("eventcenter 0.")
