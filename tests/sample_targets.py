"""Sample targets (eventcenter.pressure.sample_target) a test starts as a process and stops by
its pid: a known capacity (slots / service time) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

READY_S = 15.0
STOP_S = 5.0
MODULE = [sys.executable, "-m", "eventcenter.pressure.sample_target"]
CLI = [str(Path(sys.executable).parent / "eventcenter"), "sample-target"]
_URL = re.compile(r"listening on (http://\S+)")


@dataclass(frozen=True)
class RunningTarget:
    url: str
    pid: int
    first_line: str


@contextlib.contextmanager
def sample_target(
    slots: int, service_ms: float, *extra: str, command: Sequence[str] = MODULE
) -> Iterator[RunningTarget]:
    """Start a sample target on port 0, wait for its URL line, stop it (by pid) afterwards."""
    argv = [*command, "--slots", str(slots), "--service-ms", str(service_ms), "--port", "0"]
    process = subprocess.Popen(
        [*argv, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + READY_S
        line = process.stdout.readline()
        found = _URL.search(line)
        if found is None or time.monotonic() > deadline:
            raise RuntimeError(f"the sample target did not start: {line!r}")
        yield RunningTarget(found.group(1), process.pid, line.strip())
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_S)
    if process.stdout is not None:
        process.stdout.close()


def gone(pid: int) -> bool:
    """True when no process has this pid any more (or it is a zombie nobody waits for)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state == "Z"
    return False
