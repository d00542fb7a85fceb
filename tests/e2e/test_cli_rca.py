"""``eventcenter rca`` refusing what it cannot do, as a user sees it: one line on stderr that
says what is wrong, a non-zero exit, never a traceback. (The commands doing their work, beside
a running center, are in tests/integration/test_healing_center.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eventcenter.center.app import EventCenter
from tests.e2e.test_cli import run

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of a center that ran once (with its RCA tables) and holds no case."""
    data = tmp_path_factory.mktemp("store") / "data"

    async def once() -> None:
        center = EventCenter.from_url(f"sqlite:///{data}/center.db")
        await center.start()
        await center.stop()

    asyncio.run(once())
    return data


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    return stderr.rstrip("\n")


def test_show_of_an_unknown_case_says_there_is_none(data_dir: Path) -> None:
    result = run("rca", "show", UNKNOWN, "--data-dir", str(data_dir), cwd=data_dir, check=False)

    assert result.returncode == 1
    assert one_line(result.stderr) == f"error: no rca case {UNKNOWN}"
    assert result.stdout == ""


def test_show_of_something_that_is_no_case_id_says_what_an_id_is(data_dir: Path) -> None:
    result = run("rca", "show", "orders", "--data-dir", str(data_dir), cwd=data_dir, check=False)

    assert result.returncode == 1
    assert one_line(result.stderr) == "error: 'orders' is not an RCA case id (a UUID)"


def test_resolve_without_a_note_asks_for_one(data_dir: Path) -> None:
    result = run("rca", "resolve", UNKNOWN, "--data-dir", str(data_dir), cwd=data_dir, check=False)

    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("error: rca resolve needs --note"), line
    assert result.stdout == ""
