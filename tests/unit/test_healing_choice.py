"""The learning rule: Laplace-smoothed success rates, ties, limits, cool-downs, exploration on
a seeded random source, and the counts as an event-sourced aggregate."""

from __future__ import annotations

import random
from typing import Any

import pytest
from eventsourcing.application import Application
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.healing_choice import (
    Choice,
    Exhausted,
    HealingStats,
    Option,
    Wait,
    choose,
    laplace,
)

NOW = 1_000.0


def option(name: str, *, tried: int = 0, last_at: float | None = None, **kw: Any) -> Option:
    return Option(name, kw.get("max_attempts", 3), kw.get("cooldown", 60.0), tried, last_at)


def pick(
    options: list[Option],
    counts: dict[str, tuple[int, int]] | None = None,
    *,
    recommended: tuple[str, ...] = (),
    epsilon: float = 0.0,
    seed: int = 1,
) -> Choice | Wait | Exhausted:
    return choose(
        options,
        counts or {},
        now=NOW,
        rng=random.Random(seed),
        recommended=recommended,
        epsilon=epsilon,
    )


def test_laplace_smoothing() -> None:
    assert laplace(0, 0) == 0.5
    assert laplace(2, 2) == 0.75
    assert laplace(0, 3) == 0.2
    with pytest.raises(ValueError, match="verified"):
        laplace(3, 2)


def test_the_highest_smoothed_rate_wins() -> None:
    counts = {"restart": (1, 3), "reconnect": (2, 2), "poll": (0, 0)}
    chosen = pick([option("restart"), option("reconnect"), option("poll")], counts)
    assert isinstance(chosen, Choice)
    assert (chosen.strategy, chosen.rate, chosen.explored) == ("reconnect", 0.75, False)
    assert "0.75 = (2+1)/(2+2)" in chosen.reason


def test_an_untried_strategy_beats_one_that_mostly_failed() -> None:
    counts = {"restart": (1, 4)}  # 2/6 = 0.33 < 0.5
    chosen = pick([option("restart"), option("poll")], counts, recommended=("restart", "poll"))
    assert isinstance(chosen, Choice)
    assert chosen.strategy == "poll"


def test_ties_follow_the_recommended_order_then_the_options_order() -> None:
    options = [option("a"), option("b"), option("c")]
    first = pick(options, recommended=("c", "b"))
    assert isinstance(first, Choice)
    assert first.strategy == "c"
    unranked = pick(options, recommended=("x",))
    assert isinstance(unranked, Choice)
    assert unranked.strategy == "a"


def test_an_exhausted_strategy_is_not_chosen() -> None:
    chosen = pick([option("a", tried=3, last_at=0.0), option("b")], {"a": (5, 5)})
    assert isinstance(chosen, Choice)
    assert chosen.strategy == "b"


def test_a_strategy_cooling_down_is_not_chosen() -> None:
    counts = {"a": (5, 5)}
    chosen = pick([option("a", tried=1, last_at=NOW - 10), option("b")], counts)
    assert isinstance(chosen, Choice)
    assert chosen.strategy == "b"
    cooled = pick([option("a", tried=1, last_at=NOW - 60), option("b")], counts)
    assert isinstance(cooled, Choice)
    assert cooled.strategy == "a", "the cool-down ended at exactly now"


def test_when_every_strategy_left_cools_down_wait_for_the_first() -> None:
    chosen = pick(
        [
            option("a", tried=1, last_at=NOW - 10),
            option("b", tried=1, last_at=NOW - 30, cooldown=40.0),
            option("c", tried=3, last_at=NOW - 1000),
        ]
    )
    assert chosen == Wait(NOW + 10.0, "every strategy left is cooling down until 1010.000")


def test_when_nothing_is_left_the_case_escalates() -> None:
    assert pick([]) == Exhausted("no healing strategy applies to this category")
    chosen = pick([option("a", tried=3), option("b", tried=1, max_attempts=1)])
    assert chosen == Exhausted("every strategy was tried as often as allowed (a x3, b x1)")


def test_exploration_picks_another_candidate_with_probability_epsilon() -> None:
    options = [option("best"), option("other"), option("third")]
    counts = {"best": (9, 9)}
    rng = random.Random(42)
    chosen = [
        choose(options, counts, now=NOW, rng=rng, epsilon=0.2)  # one draw per choice
        for _ in range(2_000)
    ]
    assert all(isinstance(c, Choice) for c in chosen)
    explored = [c for c in chosen if isinstance(c, Choice) and c.explored]
    assert 0.17 < len(explored) / len(chosen) < 0.23
    assert {c.strategy for c in explored} == {"other", "third"}
    assert all("exploring" in c.reason for c in explored)


def test_the_same_seed_makes_the_same_choices() -> None:
    options = [option("a"), option("b"), option("c")]

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        made = [choose(options, {}, now=NOW, rng=rng, epsilon=0.5) for _ in range(50)]
        return [c.strategy for c in made if isinstance(c, Choice)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_single_candidate_is_chosen_even_when_exploring() -> None:
    chosen = pick([option("only")], epsilon=1.0)
    assert isinstance(chosen, Choice)
    assert (chosen.strategy, chosen.explored) == ("only", False)


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        Option("a", 0, 1.0)
    with pytest.raises(ConfigurationError, match="cooldown"):
        Option("a", 1, -1.0)
    with pytest.raises(ConfigurationError, match="epsilon"):
        pick([option("a")], epsilon=2.0)


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 4), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_without_exploration_the_choice_is_never_worse_than_another_ready_one(
    rows: list[tuple[int, int, int, bool]],
) -> None:
    options = []
    counts = {}
    for index, (a, b, tried, cooling) in enumerate(rows):
        name = f"s{index}"
        options.append(option(name, tried=tried, last_at=NOW - (1 if cooling else 100)))
        counts[name] = (min(a, b), max(a, b))
    chosen = pick(options, counts)
    ready = [o for o in options if not o.exhausted and o.ready_at() <= NOW]
    if isinstance(chosen, Choice):
        assert chosen.strategy in {o.name for o in ready}
        assert all(chosen.rate >= laplace(*counts[o.name]) for o in ready)
    elif isinstance(chosen, Wait):
        assert not ready
        assert any(not o.exhausted for o in options)
    else:
        assert all(o.exhausted for o in options)


# the counts, event-sourced -----------------------------------------------------------------------


def test_stats_count_outcomes_as_events() -> None:
    stats = HealingStats.start("default", "event_timeout")
    stats.count("restart", True, case_id="c1", at=1.0)
    stats.count("restart", False, case_id="c2", at=2.0)
    stats.count("poll", True, case_id="c3", at=3.0)

    names = [type(e).__name__ for e in stats.collect_events()]
    assert names == ["Started", "OutcomeCounted", "OutcomeCounted", "OutcomeCounted"]
    assert stats.tally() == {"restart": (1, 2), "poll": (1, 1)}
    assert stats.rate("restart") == 0.5
    assert stats.rate("never") == 0.5
    assert stats.id == HealingStats.create_id("default", "event_timeout")
    assert stats.id != HealingStats.create_id("other", "event_timeout")


class Learning(Application[Any]):
    snapshotting_intervals = {HealingStats: 5}


def test_stats_survive_reloading_and_snapshots() -> None:
    app = Learning()
    try:
        stats = HealingStats.start("default", "rate_limited")
        for n in range(12):
            stats.count("slow_down", n % 3 != 0, case_id=f"c{n}", at=float(n))
        app.save(stats)
        loaded: HealingStats = app.repository.get(stats.id)
        assert app.snapshots is not None
        assert list(app.snapshots.get(stats.id)), "a snapshot was taken"
        assert loaded.tally() == {"slow_down": (8, 12)}
        assert vars(loaded) == vars(stats) | {"_pending_events": []}
    finally:
        app.close()
