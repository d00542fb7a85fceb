"""The RCA runner on a fake clock with fake strategies: one case per cause, healing verified or
failed and counted, choices by the learned rates, escalation exactly once, renotification,
a person's answer, and resuming after a restart without acting twice."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

import pytest

from eventcenter.domain.errors import RcaCaseNotFound, RcaCaseRefused
from eventcenter.domain.escalation import RenotifyPolicy
from eventcenter.domain.rca import CaseSummary, Component, Condition, Failure, PerTenant, Rule
from eventcenter.domain.rca_case import ACKNOWLEDGED, CLOSED, ESCALATED, HEALING
from eventcenter.healing.rca import CallableStrategy, RcaRunner
from eventcenter.sources.clock import settle
from tests.unit.rca_fakes import AT, FakeStrategy, Rig, rig, timeout


@pytest.fixture
async def stop_later() -> AsyncIterator[list[RcaRunner]]:
    """Runners a test started, stopped at its end."""
    started: list[RcaRunner] = []
    yield started
    for runner in started:
        await runner.stop()


async def started(test: Rig, stop_later: list[RcaRunner]) -> RcaRunner:
    runner = test.runner()
    await runner.start()
    stop_later.append(runner)
    return runner


async def only_case(test: Rig) -> UUID:
    [row] = await test.recorder.cases()
    return UUID(row.case_id)


async def steps(test: Rig, case_id: UUID) -> list[str]:
    return [step.name for step in await test.recorder.history(case_id)]


async def test_repeated_timeouts_make_one_case_healed_by_a_verified_strategy(
    stop_later: list[RcaRunner],
) -> None:
    restart = FakeStrategy("restart_stream", heals=True)
    test = rig(restart)
    runner = await started(test, stop_later)
    restart.verify_gate = gate = asyncio.Event()  # the re-check waits: more failures arrive

    runner.report(timeout(AT))
    await settle()
    for n in range(1, 4):
        runner.report(timeout(AT + 30 * n))
        await settle()
    gate.set()
    await settle()

    case_id = await only_case(test)
    case = await test.recorder.case(case_id)
    assert case is not None
    assert (case.category, case.status, case.failures) == ("event_timeout", CLOSED, 4)
    assert await steps(test, case_id) == [
        "Opened",
        "Analysed",
        "HealingAttempted",
        "FailureAttached",
        "FailureAttached",
        "FailureAttached",
        "HealingVerified",
        "Closed",
    ]
    assert case.attempts[0]["action"] == "restart_stream applied to acme/orders"
    assert case.closed is not None
    assert case.closed["reason"] == "healed by restart_stream"
    stats = await test.recorder.stats("event_timeout")
    assert stats is not None
    assert stats.tally() == {"restart_stream": (1, 1)}
    assert restart.applied == [str(case_id)]
    assert test.escalator.seen == []
    assert runner.open_case("acme", "orders", "event_timeout") is None


async def test_a_failed_re_check_moves_on_to_the_next_strategy(
    stop_later: list[RcaRunner],
) -> None:
    restart = FakeStrategy("restart_stream", heals=False)
    reconnect = FakeStrategy("reconnect", heals=True)
    test = rig(restart, reconnect)
    runner = await started(test, stop_later)

    runner.report(timeout())
    await settle()

    case_id = await only_case(test)
    assert (await steps(test, case_id))[2:] == [
        "HealingAttempted",
        "HealingFailed",
        "HealingAttempted",
        "HealingVerified",
        "Closed",
    ]
    case = await test.recorder.case(case_id)
    assert case is not None
    assert [a["strategy"] for a in case.attempts] == ["restart_stream", "reconnect"]
    assert case.attempts[0]["detail"] == "the re-check found the problem still there"
    stats = await test.recorder.stats("event_timeout")
    assert stats is not None
    assert stats.tally() == {"restart_stream": (0, 1), "reconnect": (1, 1)}


async def test_a_second_case_picks_by_the_learned_rates(stop_later: list[RcaRunner]) -> None:
    restart = FakeStrategy("restart_stream", heals=False)
    reconnect = FakeStrategy("reconnect", heals=True)
    test = rig(restart, reconnect)
    runner = await started(test, stop_later)
    runner.report(timeout(AT))
    await settle()
    await test.clock.advance(600)

    runner.report(timeout(AT + 600))  # the first case is closed: a new one opens
    await settle()

    _first, second = sorted(await test.recorder.cases(), key=lambda row: row.opened_at)
    second_case = await test.recorder.case(UUID(second.case_id))
    assert second_case is not None
    assert [a["strategy"] for a in second_case.attempts] == ["reconnect"], (
        "reconnect (2/3) beats restart_stream (1/3) although the rule recommends restart first"
    )
    assert "highest smoothed success rate: reconnect (0.67" in second_case.attempts[0]["reason"]
    assert len(restart.applied) == 1


async def first_picks(seed: int, cases: int = 8) -> list[str]:
    """The strategy each of ``cases`` successive cases tried first, with epsilon 0.5."""
    test = rig(
        FakeStrategy("restart_stream", heals=True),
        FakeStrategy("reconnect", heals=True),
        epsilon=0.5,
    )
    test.seed = seed
    runner = test.runner()
    await runner.start()
    try:
        for n in range(cases):
            runner.report(timeout(AT + 100 * n))
            await settle()
    finally:
        await runner.stop()
    made = []
    for row in sorted(await test.recorder.cases(), key=lambda row: row.opened_at):
        case = await test.recorder.case(UUID(row.case_id))
        assert case is not None
        made.append(case.attempts[0]["strategy"])
    return made


async def test_exploration_follows_the_seeded_random_source() -> None:
    one = await first_picks(1)
    assert one == await first_picks(1), "the same seed makes the same choices"
    assert one != await first_picks(2), "another seed explores differently"
    assert set(one) == {"restart_stream", "reconnect"}


async def test_an_unhealable_case_escalates_exactly_once(stop_later: list[RcaRunner]) -> None:
    restart = FakeStrategy("restart_stream", heals=False)
    reconnect = FakeStrategy("reconnect", heals=False)
    test = rig(restart, reconnect)
    runner = await started(test, stop_later)

    runner.report(timeout(AT))
    await settle()
    for n in range(1, 6):
        await test.clock.advance(30)
        runner.report(timeout(AT + 30 * n))
        await settle()

    case_id = await only_case(test)
    case = await test.recorder.case(case_id)
    assert case is not None
    assert case.status == ESCALATED
    assert (await steps(test, case_id)).count("Escalated") == 1
    assert [s.case_id for s in test.escalator.seen] == [str(case_id)]
    summary = test.escalator.seen[0]
    assert summary.reason.startswith("every strategy was tried as often as allowed")
    assert (summary.key, summary.failures, len(summary.attempts)) == (f"{case_id}/1", 1, 2)
    assert case.failures == 6, "later failures still attach to the escalated case"


async def test_an_unknown_failure_escalates_at_once(stop_later: list[RcaRunner]) -> None:
    test = rig(FakeStrategy("restart_stream"))
    runner = await started(test, stop_later)
    runner.report(Failure("acme", None, Component.DISPATCH, "exception", "boom", AT))
    await settle()
    case = await test.recorder.case(await only_case(test))
    assert case is not None
    assert (case.category, case.status, case.attempts) == ("unknown", ESCALATED, [])
    assert test.escalator.seen[0].reason == (
        "no rule recognised the failure; no healing strategy applies to this category"
    )


async def test_a_re_check_that_does_not_answer_in_time_fails(stop_later: list[RcaRunner]) -> None:
    slow = FakeStrategy("restart_stream", heals=True, verify_gate=asyncio.Event())
    test = rig(slow, verify_timeout=10.0)
    runner = await started(test, stop_later)
    runner.report(timeout())
    await settle()
    case_id = await only_case(test)
    await test.clock.advance(9.9)
    assert (await steps(test, case_id))[-1] == "HealingAttempted"
    await test.clock.advance(0.1)
    case = await test.recorder.case(case_id)
    assert case is not None
    assert case.attempts[0]["verdict"] == "failed"
    assert case.attempts[0]["detail"] == "the re-check did not pass within 10s"
    assert case.status == ESCALATED


async def test_an_action_that_raises_is_a_failed_attempt(stop_later: list[RcaRunner]) -> None:
    broken = FakeStrategy("restart_stream", raises=RuntimeError("no such stream"))
    test = rig(broken)
    runner = await started(test, stop_later)
    runner.report(timeout())
    await settle()
    case = await test.recorder.case(await only_case(test))
    assert case is not None
    assert case.attempts[0]["detail"] == "apply raised RuntimeError: no such stream"
    assert broken.checks == 0, "nothing to re-check after a failed action"


async def test_a_strategy_cooling_down_is_retried_only_after_its_cooldown(
    stop_later: list[RcaRunner],
) -> None:
    restart = FakeStrategy("restart_stream", max_attempts=2, cooldown=60.0)
    restart.heals = lambda: len(restart.applied) == 2  # the problem stays until the second try
    test = rig(restart)
    runner = await started(test, stop_later)
    runner.report(timeout())
    await settle()
    assert len(restart.applied) == 1
    await test.clock.advance(59.0)
    assert len(restart.applied) == 1
    await test.clock.advance(1.0)
    assert len(restart.applied) == 2
    case = await test.recorder.case(await only_case(test))
    assert case is not None
    assert case.status == CLOSED
    assert [a["at"] for a in case.attempts] == [AT, AT + 60.0]


async def test_a_problem_gone_while_strategies_cool_down_closes_the_case_as_recovered(
    stop_later: list[RcaRunner],
) -> None:
    restart = FakeStrategy("restart_stream", max_attempts=2, cooldown=60.0)
    test = rig(restart)
    runner = await started(test, stop_later)
    runner.report(timeout())
    await settle()
    await test.clock.advance(25.0)
    restart.heals = True  # the fault ends on its own during the cool-down
    await test.clock.advance(10.0)
    case = await test.recorder.case(await only_case(test))
    assert case is not None
    assert case.status == CLOSED
    assert case.closed is not None
    assert case.closed["outcome"] == "recovered"
    assert "re-check of restart_stream passed" in case.closed["reason"]
    assert len(restart.applied) == 1, "nothing applied again"
    stats = await test.recorder.stats("event_timeout")
    assert stats is not None
    assert stats.tally() == {"restart_stream": (0, 1)}, "no strategy credited"


async def test_a_cooldown_spans_cases_of_the_same_source(stop_later: list[RcaRunner]) -> None:
    restart = FakeStrategy("restart_stream", heals=True, cooldown=300.0)
    test = rig(restart)
    runner = await started(test, stop_later)
    runner.report(timeout(AT))
    await settle()
    restart.heals = False  # the cause is back, and stays until the strategy acts again
    await test.clock.advance(100.0)
    runner.report(timeout(AT + 100))
    await settle()
    assert len(restart.applied) == 1, "the second case waits for the cool-down"
    await test.clock.advance(200.0)
    assert len(restart.applied) == 2


async def test_a_case_opened_while_its_source_cools_down_re_checks_with_the_last_strategy(
    stop_later: list[RcaRunner],
) -> None:
    restart = FakeStrategy("restart_stream", heals=True, cooldown=300.0)
    test = rig(restart)
    runner = await started(test, stop_later)
    runner.report(timeout(AT))
    await settle()
    restart.heals = False  # the cause comes back: a second case, every strategy cooling down
    await test.clock.advance(100.0)
    runner.report(timeout(AT + 100))
    await settle()
    await test.clock.advance(30.0)
    checks = restart.checks
    assert checks > 1, "the second case re-checks while it waits"
    restart.heals = True  # the fault goes away on its own
    await test.clock.advance(30.0)

    second = [row for row in await test.recorder.cases() if row.opened_at > AT]
    assert len(second) == 1
    case = await test.recorder.case(UUID(second[0].case_id))
    assert case is not None
    assert case.status == CLOSED
    assert case.closed is not None
    assert case.closed["outcome"] == "recovered"
    assert len(restart.applied) == 1, "nothing applied again during the cool-down"


async def test_no_sink_taking_the_case_is_retried_with_back_off(
    stop_later: list[RcaRunner],
) -> None:
    test = rig(escalation_retry=5.0, escalation_retry_max=60.0)
    test.escalator.refuse = 2
    runner = await started(test, stop_later)
    runner.report(Failure("acme", None, Component.DISPATCH, "exception", "boom", AT))
    await settle()
    assert test.escalator.refused == 1
    await test.clock.advance(120.0)
    case = await test.recorder.case(await only_case(test))
    assert case is not None
    assert (test.escalator.refused, len(test.escalator.seen), case.status) == (2, 1, ESCALATED)


async def test_an_unanswered_case_is_renotified_until_acknowledged(
    stop_later: list[RcaRunner],
) -> None:
    test = rig(renotify=RenotifyPolicy(after=600.0, factor=1.0, max_wait=600.0))
    runner = await started(test, stop_later)
    runner.report(Failure("acme", None, Component.DISPATCH, "exception", "boom", AT))
    await settle()
    case_id = await only_case(test)
    await test.clock.advance(599.0)
    assert len(test.escalator.seen) == 1
    await test.clock.advance(1.0)
    await test.clock.advance(600.0)
    assert [s.notification for s in test.escalator.seen] == [1, 2, 3]
    assert test.escalator.seen[1].reason == "not acknowledged 600s after notification #1"

    assert await runner.acknowledge(case_id, "ops@acme", note="on it")
    await test.clock.advance(3600.0)
    assert len(test.escalator.seen) == 3
    case = await test.recorder.case(case_id)
    assert case is not None
    assert case.status == ACKNOWLEDGED
    assert (await steps(test, case_id))[-4:] == [
        "Escalated",
        "Renotified",
        "Renotified",
        "Acknowledged",
    ]

    await runner.resolve(case_id, "restarted the dispatcher", by="ops@acme")
    with pytest.raises(RcaCaseRefused, match="closed"):
        await runner.resolve(case_id, "again")
    with pytest.raises(RcaCaseNotFound):
        await runner.acknowledge(UUID(int=1), "ops")


async def test_a_failure_after_a_resolution_opens_a_new_case(stop_later: list[RcaRunner]) -> None:
    test = rig()  # no strategy: the first case escalates
    runner = await started(test, stop_later)
    runner.report(timeout(AT))
    await settle()
    first = await only_case(test)
    await runner.resolve(first, "fixed the broker")
    runner.report(timeout(AT + 10))
    await settle()
    assert len(await test.recorder.cases()) == 2
    assert len(await test.recorder.cases(open_only=True)) == 1


async def test_context_that_cannot_be_gathered_does_not_stop_the_analysis(
    stop_later: list[RcaRunner],
) -> None:
    test = rig(FakeStrategy("restart_stream", heals=True))
    test.context.broken = True
    runner = await started(test, stop_later)
    runner.report(timeout())
    await settle()
    case = await test.recorder.case(await only_case(test))
    assert case is not None
    assert (case.category, case.status) == ("event_timeout", CLOSED)


async def test_a_rule_that_raises_is_counted_and_the_runner_goes_on(
    stop_later: list[RcaRunner], caplog: pytest.LogCaptureFixture
) -> None:
    test = rig(FakeStrategy("restart_stream", heals=True))
    runner = await started(test, stop_later)

    def broken(failure: Failure, context: object) -> bool:
        if failure.tenant == "beta":
            raise KeyError("region")
        return False

    runner.rules.register(
        Rule("regional", "region_down", when=(Condition("x", broken),), confidence=0.5)
    )
    runner.report(timeout(tenant="beta"))
    runner.report(timeout(tenant="acme"))
    await settle()
    assert runner.stats.unrecorded == 1
    assert "analysing the failure of beta/orders (timeout) failed" in caplog.text
    [row] = await test.recorder.cases()
    assert (row.tenant, row.status) == ("acme", CLOSED)


async def test_each_tenant_gets_the_strategies_it_chose(stop_later: list[RcaRunner]) -> None:
    restart = FakeStrategy("restart_stream", heals=True)
    reconnect = FakeStrategy("reconnect", heals=True)
    test = rig()
    book: PerTenant[FakeStrategy] = PerTenant("healing strategy", [restart, reconnect])
    book.choose("beta", ["reconnect"])
    runner = RcaRunner(
        test.recorder,
        test.context,
        test.escalator,
        clock=test.clock,
        strategies=book,  # type: ignore[arg-type]
        wall=test.clock.now,
        settings=test.settings,
    )
    await runner.start()
    stop_later.append(runner)
    runner.report(timeout(tenant="acme"))
    runner.report(timeout(tenant="beta"))
    await settle()
    assert len(restart.applied) == 1
    assert len(reconnect.applied) == 1


async def test_users_register_strategies_from_two_functions(stop_later: list[RcaRunner]) -> None:
    calls: list[str] = []

    async def flush(case: object) -> str:
        calls.append("apply")
        return "flushed the cache"

    async def check(case: object) -> bool:
        calls.append("verify")
        return True

    strategy = CallableStrategy("flush", frozenset({"event_timeout"}), flush, check)
    test = rig()
    test.strategies = [strategy]  # type: ignore[list-item]
    runner = await started(test, stop_later)
    runner.report(timeout())
    await settle()
    assert calls == ["apply", "verify"]
    case = await test.recorder.case(await only_case(test))
    assert case is not None
    assert case.attempts[0]["action"] == "flushed the cache"


# restarts ----------------------------------------------------------------------------------------


async def test_a_resumed_runner_re_checks_an_interrupted_action_instead_of_re_running_it(
    stop_later: list[RcaRunner],
) -> None:
    restart = FakeStrategy("restart_stream", heals=True, apply_gate=asyncio.Event())
    test = rig(restart)
    first = await started(test, stop_later)
    first.report(timeout())
    await settle()
    case_id = await only_case(test)
    case = await test.recorder.case(case_id)
    assert case is not None
    assert case.status == HEALING
    await first.stop()  # the center dies in the middle of the action

    second = await started(test, stop_later)
    await settle()
    assert restart.applied == [str(case_id)], "the action is not run again"
    assert restart.checks == 1
    case = await test.recorder.case(case_id)
    assert case is not None
    assert case.status == CLOSED
    assert case.attempts[0]["detail"] == "re-checked after a restart: the re-check passed"
    assert second.open_case("acme", "orders", "event_timeout") is None


async def test_a_resumed_runner_does_not_escalate_again(stop_later: list[RcaRunner]) -> None:
    test = rig(renotify=RenotifyPolicy(after=600.0, factor=1.0, max_wait=600.0))
    first = await started(test, stop_later)
    first.report(timeout())
    await settle()
    await test.clock.advance(100.0)
    await first.stop()

    second = await started(test, stop_later)
    await settle()
    assert len(test.escalator.seen) == 1
    second.report(timeout(AT + 200))  # attaches to the resumed case
    await settle()
    case_id = await only_case(test)
    case = await test.recorder.case(case_id)
    assert case is not None
    assert case.failures == 2
    await test.clock.advance(499.0)
    assert len(test.escalator.seen) == 1
    await test.clock.advance(1.0)
    assert [s.notification for s in test.escalator.seen] == [1, 2], "renotified when due"
    assert (await steps(test, case_id)).count("Escalated") == 1


async def test_reminders_grow_apart_and_stop_when_the_policy_has_spent_them(
    stop_later: list[RcaRunner],
) -> None:
    policy = RenotifyPolicy(after=100.0, factor=2.0, max_wait=300.0, max_renotifications=3)
    test = rig(renotify=policy)
    runner = await started(test, stop_later)
    runner.report(Failure("acme", None, Component.DISPATCH, "exception", "boom", AT))
    await settle()
    assert len(test.escalator.seen) == 1
    sent_at = [test.clock.now()]
    for _ in range(30):
        await test.clock.advance(50.0)
        while len(sent_at) < len(test.escalator.seen):
            sent_at.append(test.clock.now())
    gaps = [round(b - a) for a, b in itertools.pairwise(sent_at)]
    assert [s.notification for s in test.escalator.seen] == [1, 2, 3, 4]
    assert gaps == [100, 200, 300]


@dataclass
class PickyStrategy(FakeStrategy):
    """Acts only on cases of the source ``only``."""

    only: str = ""

    def applies_to(self, case: CaseSummary) -> bool:
        return case.source == self.only


async def test_a_strategy_is_offered_only_the_cases_it_says_it_applies_to(
    stop_later: list[RcaRunner],
) -> None:
    elsewhere = PickyStrategy("restart_stream", heals=True, only="billing")
    here = FakeStrategy("reconnect", heals=True)
    test = rig(elsewhere, here)
    runner = await started(test, stop_later)
    runner.report(timeout(AT))
    await settle()
    assert elsewhere.applied == []
    assert len(here.applied) == 1
