"""``freeze_heap``: the first center started in a process freezes what exists then, once.

Run in a fresh interpreter each (freezing is per process and cannot be undone in this one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import asyncio, gc, json, sys
from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings

async def main(data_dir, freeze):
    counts = [gc.get_freeze_count()]
    for name in ("first", "second"):
        center = EventCenter(CenterSettings(name=name, data_dir=data_dir, freeze_heap=freeze))
        await center.start()
        counts.append(gc.get_freeze_count())
        await center.stop()
    print(json.dumps(counts))

asyncio.run(main(sys.argv[1], sys.argv[2] == "true"))
"""


def freeze_counts(tmp_path: Path, freeze: bool) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "true" if freeze else "false"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    counts: list[int] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


@pytest.mark.parametrize("freeze", [True, False])
def test_the_first_start_freezes_the_heap_once(tmp_path: Path, freeze: bool) -> None:
    before, first, second = freeze_counts(tmp_path, freeze)
    assert before == 0
    if freeze:
        assert first > 10_000  # the modules, classes and functions of a started center
        # A later start freezes nothing more (frozen objects that were freed meanwhile leave
        # the count; freezing again would add everything made since, thousands of objects).
        assert second <= first
    else:
        assert first == second == 0
