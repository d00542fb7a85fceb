"""Fakes for the RCA runner's ports: strategies whose re-check the test decides, an escalator
that records (and can refuse), a context port, and a runner built on a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.rca import CaseSummary, Component, Failure, RcaContext, Severity
from eventcenter.domain.rca_case import CaseRecorder
from eventcenter.healing.case_memory import MemoryCaseRecorder
from eventcenter.healing.rca import RcaRunner, RcaSettings
from eventcenter.sources.clock import FakeClock

AT = 1_700_000_000.0


@dataclass
class FakeStrategy:
    """``heals``: what the re-check answers (a callable is asked each time); ``verify_gate``:
    the re-check waits for it (never set: the verify timeout decides); ``apply_gate``: the
    action waits for it (a crash in the middle of an action)."""

    name: str
    categories: frozenset[str] = frozenset({"event_timeout"})
    max_attempts: int = 1
    cooldown: float = 0.0
    heals: bool | Callable[[], bool] = False
    raises: Exception | None = None
    verify_gate: asyncio.Event | None = None
    apply_gate: asyncio.Event | None = None
    applied: list[str] = field(default_factory=list)
    checks: int = 0

    async def apply(self, case: CaseSummary) -> str:
        self.applied.append(case.case_id)
        if self.apply_gate is not None:
            await self.apply_gate.wait()
        if self.raises is not None:
            raise self.raises
        return f"{self.name} applied to {case.tenant}/{case.source}"

    async def verify(self, case: CaseSummary) -> bool:
        self.checks += 1
        if self.verify_gate is not None:
            await self.verify_gate.wait()
        return self.heals() if callable(self.heals) else self.heals


@dataclass
class FakeEscalator:
    """Records what it was handed; refuses the first ``refuse`` calls."""

    sink: str = "webhook"
    refuse: int = 0
    seen: list[CaseSummary] = field(default_factory=list)
    refused: int = 0

    async def escalate(self, case: CaseSummary) -> str:
        if self.refuse:
            self.refuse -= 1
            self.refused += 1
            raise EventCenterError("webhook answered 503")
        self.seen.append(case)
        return self.sink


@dataclass
class FakeContext:
    mode: str | None = "event_only"
    broken: bool = False
    asked: int = 0

    async def gather(self, failure: Failure) -> RcaContext:
        self.asked += 1
        if self.broken:
            raise RuntimeError("source manager not reachable")
        return RcaContext(at=failure.at, source_mode=self.mode)


def timeout(
    at: float = AT, tenant: str = "acme", source: str = "orders", kind: str = "timeout"
) -> Failure:
    return Failure(
        tenant,
        source,
        Component.SOURCE_PUSH,
        kind,
        f"no push message for 30s ({at})",
        at,
        severity=Severity.MEDIUM,
    )


@dataclass
class Rig:
    clock: FakeClock
    recorder: MemoryCaseRecorder
    escalator: FakeEscalator
    context: FakeContext
    strategies: list[FakeStrategy]
    settings: RcaSettings
    seed: int = 3

    def runner(self, recorder: CaseRecorder | None = None) -> RcaRunner:
        return RcaRunner(
            recorder or self.recorder,
            self.context,
            self.escalator,
            clock=self.clock,
            strategies=self.strategies,
            wall=self.clock.now,
            rng=random.Random(self.seed),
            settings=self.settings,
        )


def rig(*strategies: FakeStrategy, **settings: Any) -> Rig:
    chosen = {"epsilon": 0.0, "verify_timeout": 10.0, "renotify": None, **settings}
    return Rig(
        clock=FakeClock(AT),
        recorder=MemoryCaseRecorder(),
        escalator=FakeEscalator(),
        context=FakeContext(),
        strategies=list(strategies),
        settings=RcaSettings(**chosen),
    )
