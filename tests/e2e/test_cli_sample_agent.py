"""``eventcenter sample-agent`` as a user runs it: a child process on a free port, fed by the
real dispatcher, stopped by its pid with a signal."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventcenter.domain.adjustment import AdjustmentCoordinator, Agent, TuningConfig
from eventcenter.domain.ports import AgentEndpoint
from eventcenter.pressure.dispatcher import HttpDispatcher

SCRIPT = Path(sys.executable).parent / "eventcenter"
GUARD_S = 30.0  # only turns a hung child into a failure


class Child:
    """A command's process, its stdout read line by line with a deadline."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCENTER_")}
        self.process = subprocess.Popen(
            [str(SCRIPT), *args],
            cwd=cwd,
            env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out = b""

    def line_with(self, text: str) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + GUARD_S
        while True:
            for line in self._out.decode().splitlines():
                if text in line:
                    return line
            left = deadline - time.monotonic()
            readable = select.select([self.process.stdout], [], [], max(left, 0))[0]
            chunk = os.read(self.process.stdout.fileno(), 65536) if readable else b""
            if not chunk:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"no line with {text!r}; out: {self._out!r}; err: {stderr}")
            self._out += chunk

    def stop(self, number: signal.Signals) -> tuple[int, str, str]:
        os.kill(self.process.pid, number)
        out, err = self.process.communicate(timeout=GUARD_S)
        return self.process.returncode, (self._out + out).decode(), err.decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.communicate(timeout=GUARD_S)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Child]:
    child = Child("sample-agent", "--name", "agent-7", "--port", "0", cwd=tmp_path)
    yield child
    child.kill()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_the_agent_prints_each_update_it_takes_and_stops_on_a_signal(
    agent: Child, number: signal.Signals
) -> None:
    started = agent.line_with("takes frequency updates at")
    url = started.split(" at ", 1)[1].split(" ", 1)[0]
    assert url.startswith("http://127.0.0.1:")
    control = AdjustmentCoordinator(TuningConfig())
    adjustment = control.capacity_measured(
        "orders", 40.0, at=time.time(), agents=[Agent(name="agent-7")]
    )
    async with HttpDispatcher() as dispatcher:
        targets = [AgentEndpoint("agent-7", url)]
        first = await dispatcher.dispatch(adjustment, targets, correlation_id="e2e")
        again = await dispatcher.dispatch(adjustment, targets, correlation_id="e2e")
    (frequency,) = adjustment.agents

    line = agent.line_with("orders version")
    code, out, err = agent.stop(number)

    assert first[0].ok
    assert again[0].ok
    assert line.startswith(
        f"orders version {adjustment.version}: {frequency.rate:.4g} req/s,"
        f" poll every {frequency.interval:g} s"
    )
    assert out.count("orders version") == 1, "a repeated update is not printed again"
    assert code == 0, err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == f"agent agent-7 stopped on {number.name}"


def test_a_port_in_use_is_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        child = Child("sample-agent", "--port", str(port), cwd=tmp_path)
        try:
            _, err = child.process.communicate(timeout=GUARD_S)
        finally:
            child.kill()

    assert child.process.returncode == 1
    assert err.decode().strip().startswith(f"error: cannot listen on 127.0.0.1:{port}:")
    assert "Traceback" not in err.decode()
