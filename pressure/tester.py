"""The PressureTester port on Locust: the whole step search in one Locust process.

:class:`LocustPressureTester` checks that the target answers (one GET), writes a
:class:`~eventcenter.pressure.step_search.SearchSpec` to a scratch directory and starts
``python -m locust -f pressure/locustfile.py --headless`` in a process group of its own (Locust
and gevent never enter this process). The load shape in that process runs the search: it asks
the pure plan (:func:`~eventcenter.domain.step_plan.next_step`) for each rate, measures each
step and appends one JSON line per step to a progress file, which this side follows, awaiting
``on_step`` for each. The answer is :func:`~eventcenter.domain.knee.find_knee` over every step,
those given in ``LoadTest.done`` (a resumed search goes on from them) and the new ones.

Time limits: the search in the Locust process starts no step it cannot finish within the plan's
``max_duration`` (less a few seconds for Locust to start and stop), so a normal run ends inside
it; ``max_duration + grace`` is the hard limit, past which the process group is killed and
:class:`~eventcenter.domain.errors.LoadTestFailed` raised. Cancelling :meth:`measure`
terminates the process (SIGTERM, then SIGKILL after ``stop_wait`` seconds) and re-raises.

The rule's ``latency_growth``, when the caller left it unset, is set to the users' head-room
(see :mod:`~eventcenter.pressure.step_meter`): with users sized for ``head_room`` times the
SLO, a short step whose p95 grew past ``head_room`` times the unloaded p95 is the target's
queueing, not the generator's; a generator out of CPU marks its steps itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from eventcenter.domain.errors import LoadTestFailed, TargetUnreachable
from eventcenter.domain.knee import KneeRule, Step, find_knee
from eventcenter.domain.ports import LoadTest, StepMeasured
from eventcenter.domain.step_plan import NextStep, StepPlan, next_step
from eventcenter.domain.throughput import Measurement
from eventcenter.pressure.step_search import HEAD_ROOM, SPEC_ENV, SearchSpec

LOCUSTFILE = Path(__file__).with_name("locustfile.py")

#: Seconds of ``max_duration`` left for Locust to start and to stop around the search.
START_STOP_S = 3.0

#: Lines of Locust's stderr a failure quotes.
_TAIL_CHARS = 1500


def rule_for(rule: KneeRule, head_room: float = HEAD_ROOM) -> KneeRule:
    """The rule the tester judges with: ``latency_growth`` set to ``head_room`` unless set."""
    if rule.latency_growth is not None:
        return rule
    return rule.model_copy(update={"latency_growth": head_room})


@dataclass
class _Progress:
    """What the Locust process reported so far."""

    steps: list[Step] = field(default_factory=list)
    generator: list[dict[str, float]] = field(default_factory=list)
    finished: str | None = None
    offset: int = 0
    pending: str = ""


class LocustPressureTester:
    """See the module docstring. ``pid`` is the Locust process of the running (or last) test.

    ``head_room``: users per request/second of SLO (more users, more memory, fewer held
    back); ``max_users`` caps them. ``grace``: seconds past ``max_duration`` before the hard
    kill. ``locustfile``: another locustfile speaking the same spec and progress format."""

    def __init__(
        self,
        *,
        head_room: float = HEAD_ROOM,
        max_users: int = 5000,
        grace: float = 10.0,
        preflight_timeout: float = 3.0,
        stop_wait: float = 3.0,
        poll: float = 0.1,
        locustfile: Path = LOCUSTFILE,
        python: str = sys.executable,
    ) -> None:
        if head_room <= 1:
            raise ValueError("head_room must be above 1 (it is the rule's latency_growth)")
        self.head_room = head_room
        self.max_users = max_users
        self.grace = grace
        self.preflight_timeout = preflight_timeout
        self.stop_wait = stop_wait
        self.poll = poll
        self.locustfile = locustfile
        self.python = python
        self.pid: int | None = None

    async def measure(self, test: LoadTest, on_step: StepMeasured | None = None) -> Measurement:
        started = time.monotonic()
        rule = rule_for(test.rule, self.head_room)
        done = list(test.done)
        if done and next_step(test.plan, rule, done).done:
            return self._answer(done, rule, test.plan, started, _Progress(finished="resumed"))
        await self.preflight(test.target)
        with tempfile.TemporaryDirectory(prefix="eventcenter-pressure-") as scratch:
            directory = Path(scratch)
            spec = SearchSpec(
                target=test.target,
                plan=test.plan,
                rule=rule,
                progress=str(directory / "progress.jsonl"),
                done=tuple(done),
                head_room=self.head_room,
                max_users=self.max_users,
                wall_limit=max(test.plan.step_seconds + 2.0, test.plan.max_duration - START_STOP_S),
                settle=min(0.5, rule.slo_p95),
            )
            progress = await self._run(spec, directory, on_step, started)
        return self._answer(done + progress.steps, rule, test.plan, started, progress)

    async def preflight(self, target: str) -> None:
        """One GET: :class:`TargetUnreachable` unless the target answers (any status)."""
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetUnreachable(target, "not an http(s) URL with a host")
        try:
            async with httpx.AsyncClient(timeout=self.preflight_timeout) as client:
                await client.get(target)
        except httpx.TimeoutException:
            raise TargetUnreachable(
                target, f"no answer within {self.preflight_timeout:g}s"
            ) from None
        except httpx.TransportError as error:
            raise TargetUnreachable(target, str(error) or type(error).__name__) from None

    async def _run(
        self,
        spec: SearchSpec,
        directory: Path,
        on_step: StepMeasured | None,
        started: float,
    ) -> _Progress:
        spec_path, stderr_path = _write_spec(spec, directory)
        limit = spec.plan.max_duration + self.grace
        progress = _Progress()
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "locust",
                "-f",
                str(self.locustfile),
                "--headless",
                "--host",
                spec.host,
                "--only-summary",
                "--loglevel",
                "WARNING",
                "--exit-code-on-error",
                "0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, SPEC_ENV: str(spec_path)},
                start_new_session=True,
            )
        self.pid = process.pid
        try:
            left = limit - (time.monotonic() - started)
            await asyncio.wait_for(self._follow(process, spec, progress, on_step), left)
        except TimeoutError:
            await self._stop(process, graceful=False)
            raise LoadTestFailed(
                f"ran past its hard time limit of {limit:g}s (max_duration"
                f" {spec.plan.max_duration:g}s + {self.grace:g}s grace): the load generator was"
                f" stopped after {len(progress.steps)} new step(s)",
                tuple(step.as_dict() for step in progress.steps),
            ) from None
        except BaseException:
            await self._stop(process, graceful=True)
            raise
        if process.returncode != 0:
            raise LoadTestFailed(
                f"Locust exited with code {process.returncode}: {_tail(stderr_path)}",
                tuple(step.as_dict() for step in progress.steps),
            )
        if progress.finished is None:
            raise LoadTestFailed(
                f"Locust exited before the search finished: {_tail(stderr_path)}",
                tuple(step.as_dict() for step in progress.steps),
            )
        if not spec.done and not progress.steps:
            raise LoadTestFailed(f"no step was measured: {progress.finished}")
        return progress

    async def _follow(
        self,
        process: asyncio.subprocess.Process,
        spec: SearchSpec,
        progress: _Progress,
        on_step: StepMeasured | None,
    ) -> None:
        """Hand each step the Locust process reports to ``on_step`` until the process ends."""
        path = Path(spec.progress)
        while True:
            exited = process.returncode is not None
            for record in _new_records(path, progress):
                if record["event"] == "step":
                    step = Step.from_dict(record["step"], len(progress.steps))
                    nxt = record["next"]
                    progress.steps.append(step)
                    progress.generator.append(
                        {k: record[k] for k in ("users", "cpu", "lag_p95") if k in record}
                    )
                    if on_step is not None:
                        await on_step(step, NextStep(nxt["rate"], nxt["phase"], nxt["reason"]))
                elif record["event"] == "finished":
                    progress.finished = str(record["reason"])
            if exited:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), self.poll)

    async def _stop(self, process: asyncio.subprocess.Process, *, graceful: bool) -> None:
        """Stop the process group: SIGTERM first when ``graceful``, SIGKILL if it lingers."""
        if process.returncode is not None:
            return
        try:
            if graceful:
                _signal_group(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(process.wait()), self.stop_wait)
        finally:
            if process.returncode is None:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()

    def _answer(
        self,
        steps: list[Step],
        rule: KneeRule,
        plan: StepPlan,
        started: float,
        progress: _Progress,
    ) -> Measurement:
        knee = find_knee(steps, rule)
        settings: dict[str, Any] = {
            "plan": plan.model_dump(),
            "rule": rule.model_dump(),
            "generator": {
                "tool": "locust",
                "version": _locust_version(),
                "user": "FastHttpUser, paced by schedule",
                "head_room": self.head_room,
                "max_users": self.max_users,
                "steps": progress.generator,
            },
            "resumed_steps": len(steps) - len(progress.steps),
            "stopped": progress.finished,
        }
        duration = round(time.monotonic() - started, 3)
        return Measurement.from_knee(knee, steps, duration=duration, settings=settings)


def _write_spec(spec: SearchSpec, directory: Path) -> tuple[Path, Path]:
    """Write the spec and an empty progress file: (spec path, where Locust's stderr goes)."""
    spec_path = directory / "spec.json"
    spec_path.write_text(spec.to_json(), encoding="utf-8")
    Path(spec.progress).touch()
    return spec_path, directory / "locust.err"


def _new_records(path: Path, progress: _Progress) -> list[dict[str, Any]]:
    """Complete JSON lines appended to ``path`` since the last call."""
    with path.open("r", encoding="utf-8") as file:
        file.seek(progress.offset)
        text = file.read()
        progress.offset = file.tell()
    text = progress.pending + text
    *lines, progress.pending = text.split("\n")
    return [json.loads(line) for line in lines if line.strip()]


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _tail(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        return "nothing on stderr"
    return " ".join(text[-_TAIL_CHARS:].split())


def _locust_version() -> str:
    try:
        return version("locust")
    except PackageNotFoundError:
        return "unknown"
