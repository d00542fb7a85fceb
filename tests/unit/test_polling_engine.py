"""The polling engine: the cursor committed with the items, an adaptable interval, back-off."""

from __future__ import annotations

import pytest

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import SourceError, SourceErrorKind
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.polling_engine import PollingEngine, effective_interval
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakePoll,
    FakeSource,
    FixedJitter,
    MemorySink,
    Outcomes,
    connection_lost,
)

INTERVAL, MIN_INTERVAL, MAX_INTERVAL = 10.0, 2.0, 60.0


class Rig:
    def __init__(self, *, page: int = 10, drain: bool = True) -> None:
        self.clock = FakeClock()
        self.source = FakeSource()
        self.sink = MemorySink()
        self.poll = FakePoll(self.source, page=page)
        self.outcomes = Outcomes()
        self.engine = PollingEngine(
            TENANT,
            SOURCE,
            self.poll,
            self.sink,
            self.clock,
            self.outcomes,
            interval=INTERVAL,
            min_interval=MIN_INTERVAL,
            max_interval=MAX_INTERVAL,
            drain=drain,
            rng=FixedJitter(0.0),
        )

    def poll_times(self) -> list[float]:
        return [outcome.at for outcome in self.outcomes.seen]


async def test_items_are_admitted_with_the_new_cursor_and_the_next_poll_asks_with_it() -> None:
    rig = Rig(page=2)
    for n in range(3):
        rig.source.change(f"k{n}")

    rig.engine.start()
    await rig.clock.advance(0.0)
    await rig.engine.stop()

    assert rig.poll.cursors == [None, "2", "3"]  # a backlog is drained at once
    assert rig.sink.calls == [("poll", 2, "2", None), ("poll", 1, "3", None)]
    assert rig.sink.positions[(TENANT, SOURCE, "poll")] == "3"
    assert rig.engine.cursor == "3"
    assert [(o.ok, o.items, o.at) for o in rig.outcomes.seen] == [
        (True, 2, 0.0),
        (True, 1, 0.0),
        (True, 0, 0.0),
    ]


async def test_without_drain_each_page_waits_for_the_interval() -> None:
    rig = Rig(page=2, drain=False)
    for n in range(3):
        rig.source.change(f"k{n}")

    rig.engine.start()
    await rig.clock.advance(INTERVAL)
    await rig.engine.stop()

    assert rig.poll.cursors == [None, "2"]
    assert rig.poll_times() == [0.0, INTERVAL]


async def test_it_resumes_from_the_stored_cursor() -> None:
    rig = Rig()
    for n in range(3):
        rig.source.change(f"k{n}")
    rig.sink.positions[(TENANT, SOURCE, "poll")] = "2"

    rig.engine.start()
    await rig.clock.advance(0.0)
    await rig.engine.stop()

    assert rig.poll.cursors[0] == "2"
    assert rig.sink.identities() == {("k2", "1")}


async def test_an_empty_poll_stores_nothing_and_still_counts_as_a_success() -> None:
    rig = Rig()
    rig.engine.start()
    await rig.clock.advance(0.0)
    await rig.engine.stop()

    assert rig.sink.calls == []
    assert [(o.ok, o.items) for o in rig.outcomes.seen] == [(True, 0)]


async def test_it_polls_once_per_interval() -> None:
    rig = Rig()
    rig.engine.start()
    await rig.clock.advance(35.0)
    await rig.engine.stop()

    assert rig.poll_times() == [0.0, 10.0, 20.0, 30.0]


@pytest.mark.parametrize(
    ("factor", "expected"),
    [(1.0, 10.0), (2.0, 20.0), (0.5, 5.0), (100.0, MAX_INTERVAL), (0.01, MIN_INTERVAL)],
)
def test_the_interval_is_scaled_by_the_load_factor_within_bounds(
    factor: float, expected: float
) -> None:
    assert effective_interval(INTERVAL, factor, MIN_INTERVAL, MAX_INTERVAL) == expected


async def test_a_load_factor_re_times_the_wait_in_progress() -> None:
    rig = Rig()
    rig.engine.start()
    await rig.clock.advance(4.0)
    rig.engine.set_load_factor(3.0)  # 30 s from the last poll at 0
    await rig.clock.advance(56.0)
    await rig.engine.stop()

    assert rig.engine.current_interval == 30.0
    assert rig.poll_times() == [0.0, 30.0, 60.0]


async def test_a_shorter_interval_set_at_runtime_polls_at_once_if_already_due() -> None:
    rig = Rig()
    rig.engine.start()
    await rig.clock.advance(4.0)
    rig.engine.interval = 3.0  # the next poll was due at 3.0: now
    await rig.clock.advance(0.0)
    await rig.clock.advance(3.0)
    await rig.engine.stop()

    assert rig.poll_times() == [0.0, 4.0, 7.0]


async def test_poll_now_ends_the_wait_at_once() -> None:
    rig = Rig()
    rig.engine.start()
    await rig.clock.advance(1.0)
    rig.source.change("urgent")

    rig.engine.poll_now()
    await rig.clock.advance(0.0)

    assert rig.poll_times() == [0.0, 1.0, 1.0]  # the poll, then the drain's empty one
    assert rig.sink.identities() == {("urgent", "1")}
    await rig.clock.advance(INTERVAL)  # then the regular rhythm, from the last poll
    await rig.engine.stop()
    assert rig.poll_times() == [0.0, 1.0, 1.0, 11.0]


async def test_errors_back_off_exponentially_and_honour_retry_after() -> None:
    rig = Rig()
    rig.poll.errors.extend(
        [
            connection_lost(),
            connection_lost(),
            SourceError(SourceErrorKind.RATE_LIMITED, "429", retry_after=45.0),
            connection_lost(),
        ]
    )

    rig.engine.start()
    await rig.clock.advance(100.0)
    await rig.engine.stop()

    failures = rig.outcomes.failures
    assert [o.kind for o in failures] == [
        SourceErrorKind.CONNECTION,
        SourceErrorKind.CONNECTION,
        SourceErrorKind.RATE_LIMITED,
        SourceErrorKind.CONNECTION,
    ]
    assert [o.retry_in for o in failures] == pytest.approx([0.8, 1.6, 45.0, 6.4])
    assert rig.poll_times()[:5] == pytest.approx([0.0, 0.8, 2.4, 47.4, 53.8])
    # after the first success the regular interval is back, and so is the back-off's start
    assert rig.outcomes.seen[4].ok
    assert rig.poll_times()[5] == pytest.approx(63.8)


async def test_poll_now_does_not_cut_a_server_s_retry_after() -> None:
    rig = Rig()
    rig.poll.errors.append(SourceError(SourceErrorKind.RATE_LIMITED, "429", retry_after=30.0))
    rig.engine.start()
    await rig.clock.advance(1.0)

    rig.engine.poll_now()
    await rig.clock.advance(28.0)
    assert rig.poll_times() == [0.0]
    await rig.clock.advance(1.0)
    await rig.engine.stop()

    assert rig.poll_times() == [0.0, 30.0]


async def test_a_refused_admission_keeps_the_cursor_so_the_items_come_again() -> None:
    rig = Rig()
    rig.source.change("a")
    rig.sink.fail_before = 1

    rig.engine.start()
    await rig.clock.advance(1.0)
    await rig.engine.stop()

    assert rig.poll.cursors[:2] == [None, None]
    (failure,) = rig.outcomes.failures
    assert failure.kind is None
    assert failure.items == 1
    assert rig.sink.identities() == {("a", "1")}
    assert rig.sink.positions[(TENANT, SOURCE, "poll")] == "1"


async def test_bad_messages_go_to_the_sink_and_polling_continues() -> None:
    rig = Rig()
    rig.source.change("a")
    bad = rig.source.bad()
    rig.source.change("b")

    rig.engine.start()
    await rig.clock.advance(0.0)
    await rig.engine.stop()

    assert rig.sink.dead_letters == [bad]
    assert rig.sink.identities() == {("a", "1"), ("b", "1")}
    assert rig.outcomes.seen[0].dead_lettered == 1


@pytest.mark.parametrize(
    ("interval", "low", "high"),
    [(10.0, 0.0, 60.0), (10.0, 5.0, 2.0), (0.0, 1.0, 60.0), (float("nan"), 1.0, 60.0)],
)
def test_intervals_that_cannot_work_are_refused(interval: float, low: float, high: float) -> None:
    source = FakeSource()
    with pytest.raises(ConfigurationError, match="acme/orders"):
        PollingEngine(
            TENANT,
            SOURCE,
            FakePoll(source),
            MemorySink(),
            FakeClock(),
            Outcomes(),
            interval=interval,
            min_interval=low,
            max_interval=high,
        )


@pytest.mark.parametrize("factor", [0.0, -1.0, float("inf"), float("nan")])
def test_a_load_factor_must_be_a_positive_number(factor: float) -> None:
    rig = Rig()
    with pytest.raises(ConfigurationError, match="load factor"):
        rig.engine.set_load_factor(factor)
    assert rig.engine.load_factor == 1.0


async def test_a_slow_down_wears_off_after_a_quiet_period() -> None:
    rig = Rig()
    rig.engine.start()
    await rig.clock.advance(0.0)
    assert rig.engine.slow_down(2.0, 8.0, 30.0) == 2.0  # after the poll at 0: every 20 s
    await rig.clock.advance(75.0)
    await rig.engine.stop()

    # 20 s apart until the poll at 40, 30 s after the slow-down, steps it back: 10 s again.
    assert rig.poll_times() == [0.0, 20.0, 40.0, 50.0, 60.0, 70.0]
    assert rig.engine.load_factor == 1.0


async def test_a_rate_limited_answer_starts_the_quiet_period_over() -> None:
    rig = Rig()
    rig.engine.start()
    await rig.clock.advance(0.0)
    rig.engine.slow_down(2.0, 8.0, 30.0)
    rig.poll.errors.append(SourceError(SourceErrorKind.RATE_LIMITED, "429 (test)"))
    await rig.clock.advance(55.0)  # the poll at 20 is refused: 30 quiet seconds from there
    assert rig.engine.load_factor == 2.0
    await rig.clock.advance(10.0)  # the first poll at least 30 s after the refusal
    assert rig.engine.load_factor == 1.0
    await rig.engine.stop()
    assert [o.ok for o in rig.outcomes.seen][:3] == [True, False, True]


async def test_slow_downs_multiply_up_to_their_cap_on_top_of_the_load_factor() -> None:
    rig = Rig()
    rig.engine.set_load_factor(0.5)  # tuning's knob
    assert rig.engine.slow_down(2.0, 4.0, 60.0) == 1.0
    assert rig.engine.slow_down(2.0, 4.0, 60.0) == 2.0
    assert rig.engine.slow_down(2.0, 4.0, 60.0) == 2.0  # the slow-down is capped at 4
    assert rig.engine.current_interval == 20.0
    with pytest.raises(ConfigurationError, match="multiply by a number > 1"):
        rig.engine.slow_down(1.0, 4.0, 60.0)
