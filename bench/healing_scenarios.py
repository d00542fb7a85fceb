"""The scenarios of ``bench.healing``: one real center per fault, the fault injected for real.

Each scenario builds a center of its own (a SQLite store in its own directory, the real clock,
the policy and healing settings of :class:`Timing`) with one data source, and an escalation
sink in code (``CallbackSink``) that counts every notice. A producer adds items to the
scenario's system of record (and to its push path, if it has one) for the whole run.

The run of one scenario:

1. **Steady**: the source runs healthy for ``Timing.steady`` seconds.
2. **Fault**: switched on (``inject``); it lasts ``duration`` seconds, then is switched off
   (``remove``). A fault no strategy can undo (``duration`` None: expired credentials) lasts
   until the case escalates; then the bench acts as the person: it renews the credentials,
   waits for a poll that works, and acknowledges and resolves the case.
3. **Settle**: until no case of the source is left to heal (every case closed or escalated),
   the source is back in its usual mode and no failure came for ``Timing.quiet`` seconds (at
   most ``settle_limit`` seconds after the fault ended; what is still open then is reported
   as open).
4. **Exactly once**: the producer stops; every item of the record must be handled once.

What is measured comes from the center's own records: the failures the sources reported
(``SourceManager.on_failure``, observed on the way to the RCA runner), the RCA cases as the
store holds them (category, rule, attempts with their verdicts, escalation, closing) and the
source's mode switches. Times are seconds from the moment the fault was switched on.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.healing_faults import (
    OK,
    RATE_LIMITED,
    SLOW,
    UNAUTHORIZED,
    FaultyApi,
    Record,
    Route,
    corrupted,
    entry,
    produce,
    redis_client,
    xadd,
)
from bench.source_failover import RedisServer
from eventcenter.center.app import EventCenter
from eventcenter.center.healing import HealingSettings
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.escalation import EscalationNotice
from eventcenter.domain.rca_case import CLOSED, ESCALATED, HEALED, HEALING, OPEN, RcaCase
from eventcenter.domain.source_modes import EVENT_ONLY, POLLING_ONLY
from eventcenter.domain.sources import SourceFailure, SourceItem
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.healing.escalation import CallbackSink
from eventcenter.healing.escalation_config import EscalationSettings
from eventcenter.healing.strategies import SourceStrategyBase
from eventcenter.sources.connectors import callable_poll, http_poll, redis_stream
from eventcenter.sources.manager import SourceRunner
from eventcenter.sources.source import DataSource

TENANT = "bench"
SINK = "bench"
STEADY_ITEMS = 10  # items handled before the steady phase counts as started
FINAL_WAIT_S = 10.0  # after the producer stopped: what is still missing then is reported
PERSON_REACTS_S = 1.0  # from the escalation to the person's fix
LOOK_EVERY_S = 0.2
#: The built-in source strategies' cool-down (per strategy and source), left at its default.
COOLDOWN_S = SourceStrategyBase.cooldown


@dataclass(frozen=True)
class Timing:
    """The knobs of a run (seconds), short so that a scenario takes seconds, not minutes.

    The source's policy (``event_timeout``, thresholds, ``polling_interval``) and the RCA
    runner's ``verify_timeout`` are set here; the strategies' own limits (two attempts each,
    one for ``force_polling``; a cool-down of 60 s per strategy and source) are left at their
    defaults (``[healing.strategies]`` would change them): what a user gets out of the box.
    """

    event_timeout: float = 1.0
    failure_threshold: int = 2
    success_threshold: int = 3
    polling_interval: float = 0.5
    http_timeout: float = 1.0
    slow_reply: float = 2.5  # the slow dependency answers after this (> http_timeout)
    retry_after: float = 1.0  # the Retry-After of a 429 answer
    verify_timeout: float = 6.0
    steady: float = 1.5
    quiet: float = 3.0
    epsilon: float = 0.0  # no exploration: the runner tries strategies in its ranked order

    def source_policy(self) -> dict[str, Any]:
        return {
            "event_timeout": self.event_timeout,
            "failure_threshold": self.failure_threshold,
            "success_threshold": self.success_threshold,
            "polling_interval": self.polling_interval,
            "flap_switches": 20,  # the damping of a flapping push path out of the way
            "cool_down": 0.1,
            "reconciliation_interval": 3600.0,  # only a healing strategy reconciles in a run
        }


# the scenarios ---------------------------------------------------------------------------------


class Scenario:
    """One fault against one source. Subclasses say what the source is and what the fault does."""

    kind = ""
    title = ""
    fault = ""
    healable = True  # can it be healed without a person (the data can still reach the center)?
    normal_mode = EVENT_ONLY
    paths = ""

    def __init__(self, duration: float | None, timing: Timing, directory: Path) -> None:
        self.duration = duration
        self.timing = timing
        self.directory = directory
        self.record = Record(self.kind)
        self.push: Callable[[SourceItem], Awaitable[None]] | None = None

    @property
    def key(self) -> str:
        if self.duration is None:
            return self.kind
        return f"{self.kind} ({self.duration:g} s)"

    async def setup(self) -> None:
        """Start what the scenario's source reads from."""

    def source(self) -> DataSource:
        raise NotImplementedError

    async def inject(self) -> None:
        raise NotImplementedError

    async def remove(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop what :meth:`setup` started."""

    def described(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "fault": self.fault,
            "paths": self.paths,
            "healable": self.healable,
            "duration_s": self.duration,
        }


class RedisScenario(Scenario):
    """A source whose push path is a Redis stream on a ``redis-server`` of the scenario's own."""

    keep_data = True

    def __init__(self, duration: float | None, timing: Timing, directory: Path) -> None:
        super().__init__(duration, timing, directory)
        self.server = RedisServer(directory, keep_data=self.keep_data)
        self.stream = f"bench-healing-{self.kind}-{secrets.token_hex(3)}"
        self.paused = False  # the producer writes nothing to the stream
        self.corrupt = False  # the producer writes broken entries instead of the items
        self.refused = 0  # entries the server did not take (it was down)
        self.client = redis_client(self.server.url)
        self.push = self._push

    async def setup(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def _push(self, item: SourceItem) -> None:
        if self.paused:
            return
        fields = corrupted(item) if self.corrupt else entry(item)
        if not await xadd(self.client, self.stream, fields):
            self.refused += 1

    def events(self) -> Any:
        return redis_stream(
            self.stream,
            group="eventcenter",
            consumer="bench",
            url=self.server.url,
            connect_timeout=0.5,
            command_timeout=2.0,
        )

    async def close(self) -> None:
        await self.client.aclose()
        self.server.kill()


class PushSilent(RedisScenario):
    kind = "push_silent"
    title = "push path silent"
    fault = "the producer stops writing to the stream; the poll API keeps serving every item"
    paths = "push: Redis stream; poll: callable over the record"

    def source(self) -> DataSource:
        return DataSource(
            tenant=TENANT,
            name=self.kind,
            events=self.events(),
            poll=callable_poll(self.record.poll, name="record"),
            **self.timing.source_policy(),
        )

    async def inject(self) -> None:
        self.paused = True

    async def remove(self) -> None:
        self.paused = False


class ConnectionRefused(PushSilent):
    kind = "connection_refused"
    title = "connection refused"
    fault = (
        "the redis-server is killed (SIGKILL by its pid), started again on the same port with"
        " its data (append-only file, fsync always)"
    )

    async def inject(self) -> None:
        self.server.kill()

    async def remove(self) -> None:
        await asyncio.to_thread(self.server.start)


class RestartedEmpty(ConnectionRefused):
    kind = "restarted_empty"
    title = "connection refused, server back empty"
    fault = (
        "the redis-server is killed, started again without its data: the stream and the"
        " consumer group are gone (the stored position is lost)"
    )
    keep_data = False


class BadData(RedisScenario):
    kind = "bad_data"
    title = "bad data"
    fault = (
        "the producer writes broken entries instead of the items (half not JSON, half without"
        " a key); the listing still holds every item"
    )
    paths = "push: Redis stream; listing: callable over the record (reconcile)"

    def source(self) -> DataSource:
        return DataSource(
            tenant=TENANT,
            name=self.kind,
            events=self.events(),
            reconcile=self.record.listing,
            **self.timing.source_policy(),
        )

    async def inject(self) -> None:
        self.corrupt = True

    async def remove(self) -> None:
        self.corrupt = False


class HttpScenario(Scenario):
    """A poll-only source: ``http_poll`` against the scenario's route of the bench's API."""

    normal_mode = POLLING_ONLY
    paths = "poll: http_poll (the bench's API)"
    mode = OK

    def __init__(
        self, duration: float | None, timing: Timing, directory: Path, api: FaultyApi
    ) -> None:
        super().__init__(duration, timing, directory)
        self.api = api
        self.route = Route(self.record, retry_after=timing.retry_after, delay=timing.slow_reply)
        api.routes[self.route_name] = self.route

    @property
    def route_name(self) -> str:
        return self.kind if self.duration is None else f"{self.kind}-{self.duration:g}"

    def source(self) -> DataSource:
        return DataSource(
            tenant=TENANT,
            name=self.kind,
            poll=http_poll(self.api.url(self.route_name), timeout=self.timing.http_timeout),
            **self.timing.source_policy(),
        )

    async def inject(self) -> None:
        self.route.mode = self.mode

    async def remove(self) -> None:
        self.route.mode = OK

    def described(self) -> dict[str, Any]:
        return {**super().described(), "answers": dict(self.route.answered)}


class RateLimitedApi(HttpScenario):
    kind = "rate_limited"
    title = "429 rate limit"
    fault = "the API answers 429 with Retry-After"
    mode = RATE_LIMITED


class ExpiredCredentials(HttpScenario):
    kind = "expired_credentials"
    title = "expired credentials"
    fault = "the API answers 401 until a person renews the credentials"
    healable = False
    mode = UNAUTHORIZED


class SlowDependency(HttpScenario):
    kind = "slow_dependency"
    title = "slow dependency"
    fault = "the API answers only after a delay longer than the source's HTTP timeout"
    mode = SLOW


# running one scenario ------------------------------------------------------------------------


def build_center(scenario: Scenario, notices: list[EscalationNotice]) -> EventCenter:
    timing = scenario.timing
    settings = CenterSettings(
        name="bench",
        database_url=f"sqlite:///{scenario.directory / 'center.db'}",
        data_dir=scenario.directory,
        processor=ProcessorSettings(),
        healing=HealingSettings(
            epsilon=timing.epsilon,
            verify_timeout=timing.verify_timeout,
            escalation=EscalationSettings(default=[SINK]),
        ),
    )
    center = EventCenter(
        settings,
        builtin_handlers=False,
        escalation_sinks=[CallbackSink(SINK, notices.append)],
    )
    center.processor.subscribe("source.item.*", scenario.record.handler, name="items")
    center.sources.register(scenario.source())
    return center


def watch_failures(center: EventCenter, failures: list[SourceFailure]) -> None:
    """Note every source failure on its way to the RCA runner (which still gets each one)."""
    to_rca = center.sources.on_failure

    def noted(failure: SourceFailure) -> None:
        failures.append(failure)
        if to_rca is not None:
            to_rca(failure)

    center.sources.on_failure = noted


async def until(condition: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def cases_of(center: EventCenter) -> list[RcaCase]:
    recorder = center.healing.cases
    rows = await recorder.cases(tenant=TENANT)
    found = [await recorder.case(UUID(row.case_id)) for row in rows]
    return sorted((case for case in found if case is not None), key=lambda c: c.opened_at)


async def settle(
    center: EventCenter,
    runner: SourceRunner,
    scenario: Scenario,
    failures: list[SourceFailure],
    since: float,
    limit: float,
) -> bool:
    """Wait until no case is left to heal, the source is back in its usual mode and no failure
    came for ``quiet`` seconds; False if that did not happen within ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rows = await center.healing.cases.cases(tenant=TENANT)
        healing = [row for row in rows if row.status in (OPEN, HEALING, HEALED)]
        last = max([since, *(f.at for f in failures)])
        quiet = time.time() - last >= scenario.timing.quiet
        if not healing and quiet and runner.mode == scenario.normal_mode:
            return True
        await asyncio.sleep(LOOK_EVERY_S)
    return False


async def act_as_the_person(
    center: EventCenter, runner: SourceRunner, scenario: Scenario, notices: list[EscalationNotice]
) -> dict[str, Any]:
    """What a person does once told: renew the credentials, see a poll work, then acknowledge
    and resolve the escalated cases."""
    await asyncio.sleep(PERSON_REACTS_S)
    await scenario.remove()
    fixed = time.time()
    worked = await until(lambda: runner.path_succeeded_since("poll", fixed), 20.0)
    answered = []
    for case in await cases_of(center):
        if case.status == ESCALATED:
            await center.healing.runner.acknowledge(case.id, "bench", note="renewing the token")
            await center.healing.runner.resolve(case.id, "renewed the API token", by="bench")
            answered.append(str(case.id))
    return {"fixed_at": fixed, "poll_worked": worked, "resolved": answered}


async def run_scenario(scenario: Scenario, settle_limit: float) -> dict[str, Any]:
    """Run one scenario (see the module docstring) and return what was measured."""
    notices: list[EscalationNotice] = []
    failures: list[SourceFailure] = []
    await scenario.setup()
    center = build_center(scenario, notices)
    watch_failures(center, failures)
    runner = center.sources.runner(TENANT, scenario.kind)
    record = scenario.record
    stop = asyncio.Event()
    producer: asyncio.Task[None] | None = None
    try:
        await center.start()
        producer = asyncio.create_task(produce(record, scenario.push, stop))
        started = await until(
            lambda: record.handled >= STEADY_ITEMS and runner.mode == scenario.normal_mode, 20.0
        )
        if not started:
            return {**scenario.described(), "status": "failed", "reason": "no steady start"}
        await asyncio.sleep(scenario.timing.steady)
        before = len(failures)
        injected = time.time()
        await scenario.inject()
        person: dict[str, Any] | None = None
        if scenario.duration is not None:
            await asyncio.sleep(scenario.duration)
            await scenario.remove()
            removed = time.time()
        else:
            await until(lambda: bool(notices), settle_limit)
            person = await act_as_the_person(center, runner, scenario, notices)
            removed = float(person["fixed_at"])
        settled = await settle(center, runner, scenario, failures, removed, settle_limit)
        # What the fault caused, taken now: once the producer stops, a push path goes quiet
        # and its silence would open cases the fault has nothing to do with.
        cases = await cases_of(center)
        switches = [s for s in runner.recent if s["at"] >= injected]
        seen = len(failures)
        polling = None
        if runner.polling is not None:  # reduce_frequency never sets the load factor back
            polling = {
                "load_factor": runner.load_factor,
                "interval_s": runner.polling.current_interval,
                "configured_s": runner.polling.interval,
            }
        stop.set()
        await producer
        produced = len(record.items)
        await until(lambda: record.handled >= produced, FINAL_WAIT_S)
        await center.processor.join()
        letters = await asyncio.to_thread(center.dead_letters)
    finally:
        stop.set()
        if producer is not None:
            await asyncio.gather(producer, return_exceptions=True)
        await center.stop()
        await scenario.close()
    reasons = Counter(
        row.error.split(":")[0] for row in letters if row.subscription.startswith("source:")
    )
    return {
        **scenario.described(),
        "status": "measured",
        "settled": settled,
        "fault_removed_s": round(removed - injected, 3),
        "person": None
        if person is None
        else {**person, "fixed_at": round(float(person["fixed_at"]) - injected, 3)},
        "failures_before_fault": before,
        "failures": failure_summary(failures[before:seen], injected),
        "cases": [case_summary(case, injected, notices, cases) for case in cases],
        "notices": len(notices),
        "switches": [{**s, "at": round(float(s["at"]) - injected, 3)} for s in switches],
        "dead_letters": dict(reasons),
        "refused_by_server": getattr(scenario, "refused", 0),
        "polling_after": polling,
        "exactly_once": record.exactly_once(),
    }


def failure_summary(failures: list[SourceFailure], injected: float) -> dict[str, Any]:
    kinds = Counter(f"{f.path}/{f.kind}" for f in failures)
    return {
        "count": len(failures),
        "by_kind": dict(sorted(kinds.items())),
        "first_s": round(failures[0].at - injected, 3) if failures else None,
        "last_s": round(failures[-1].at - injected, 3) if failures else None,
    }


def next_attempt(case: RcaCase, cases: list[RcaCase]) -> tuple[str, float] | None:
    """For an open case waiting for a cool-down: the strategy whose cool-down ends first and
    when (a strategy's cool-down counts per source, so an earlier case's attempt holds it)."""
    if case.status != OPEN:
        return None
    last: dict[str, float] = {}
    for other in cases:
        for attempt in other.attempts:
            name = str(attempt["strategy"])
            last[name] = max(last.get(name, 0.0), float(attempt["at"]))
    recommended = (case.analysis or {}).get("strategies", ())
    ready = sorted((last[name] + COOLDOWN_S, name) for name in recommended if name in last)
    return (ready[0][1], ready[0][0]) if ready else None


def case_summary(
    case: RcaCase, injected: float, notices: list[EscalationNotice], cases: list[RcaCase]
) -> dict[str, Any]:
    analysis = case.analysis or {}
    waiting = next_attempt(case, cases)
    mine = [n for n in notices if n.case_id == str(case.id)]

    def rel(at: Any) -> float | None:
        return None if at is None else round(float(at) - injected, 3)

    closed = case.closed or {}
    outcome = str(closed.get("outcome", "closed")) if case.status == CLOSED else case.status
    if case.notifications:
        outcome = "escalated" if case.status != CLOSED else f"escalated, then {outcome}"
    return {
        "case_id": str(case.id),
        "category": case.category,
        "rule": analysis.get("rule"),
        "confidence": analysis.get("confidence"),
        "recommended": list(analysis.get("strategies", ())),
        "first_failure": f"{case.first_failure.get('component')}/{case.first_failure.get('kind')}",
        "failures": case.failures,
        "status": case.status,
        "outcome": outcome,
        "opened_s": rel(case.opened_at),
        "attempts": [
            {
                "strategy": a["strategy"],
                "verdict": a["verdict"],
                "applied_s": rel(a["at"]),
                "decided_s": rel(a["decided_at"]),
                "action": a["action"],
                "detail": a["detail"],
            }
            for a in case.attempts
        ],
        "closed_s": rel(closed.get("at")),
        "closed_reason": closed.get("reason"),
        "escalated_s": rel(case.escalated_at),
        "escalation_reason": case.notifications[0]["reason"] if case.notifications else None,
        "next_attempt": None
        if waiting is None
        else {"strategy": waiting[0], "at_s": round(waiting[1] - injected, 3)},
        "escalations": sum(1 for n in mine if n.notification == 1),
        "notifications": len(mine),
    }
