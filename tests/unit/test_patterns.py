"""Subscription patterns: AMQP topic semantics over dot-notation event types."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.errors import EventCenterError, InvalidPattern, SubscriptionError
from eventcenter.handlers.patterns import Pattern, RouteCache, RouteIndex, compile_pattern

MATCHES = [
    # literals
    ("orders", "orders"),
    ("orders.created", "orders.created"),
    ("a-b_c.D9", "a-b_c.D9"),
    # '*' is exactly one segment
    ("*", "orders"),
    ("orders.*", "orders.created"),
    ("*.created", "orders.created"),
    ("*.*", "a.b"),
    ("a.*.c", "a.b.c"),
    ("a.*.c", "a.x-y_z.c"),
    # '#' is zero or more segments
    ("#", "a"),
    ("#", "a.b.c.d"),
    ("a.#", "a"),
    ("a.#", "a.b"),
    ("a.#", "a.b.c"),
    ("#.failed", "failed"),
    ("#.failed", "stream.failed"),
    ("#.failed", "x.y.failed"),
    ("#.c", "c"),
    ("#.c", "a.b.c"),
    ("a.#.c", "a.c"),
    ("a.#.c", "a.b.c"),
    ("a.#.c", "a.b.d.c"),
    ("#.#", "a.b"),
    ("a.#.#.c", "a.c"),
    # mixes
    ("*.#", "a"),
    ("*.#", "a.b.c"),
    ("#.*", "a"),
    ("*.#.*", "a.b"),
    ("*.#.*", "a.b.c.d"),
    ("#.*.#", "a"),
    ("a.#.b.#", "a.b"),
    ("a.#.b.#", "a.bc.b"),
    ("a.#.b.#", "a.x.b.y.z"),
    ("#.a.#.a", "a.a"),
    ("#.a.#.a", "x.a.y.a"),
    ("#.a.*.#", "x.a.y"),
]

NON_MATCHES = [
    # literals are exact and case-sensitive
    ("orders.created", "orders.Created"),
    ("orders.created", "orders"),
    ("orders.created", "orders.created.v2"),
    ("orders", "order"),
    ("orders", "ordersx"),
    # '*' is exactly one segment, never zero, never two
    ("*", "a.b"),
    ("orders.*", "orders"),
    ("orders.*", "orders.item.added"),
    ("*.created", "created"),
    ("a.*.c", "a.c"),
    ("a.*.c", "a.b.b.c"),
    ("*.*", "a"),
    # '#' matches whole segments only
    ("a.#", "ab"),
    ("a.#", "b.a"),
    ("a.#", "b"),
    ("#.failed", "failed.retry"),
    ("#.failed", "xfailed"),
    ("#.failed", "stream.notfailed"),
    ("#.c", "c.d"),
    ("a.#.c", "a.b"),
    ("a.#.c", "c"),
    ("a.#.c", "ab.c"),
    ("a.#.c", "a.bc"),
    # mixes
    ("*.#.*", "a"),
    ("#.a.#.a", "a"),
    ("#.a.#.a", "a.b"),
    ("a.#.b.#", "a.bc"),
    ("#.a.*.#", "x.a"),
]


@pytest.mark.parametrize(("pattern", "event_type"), MATCHES)
def test_pattern_matches_event_type(pattern: str, event_type: str) -> None:
    assert compile_pattern(pattern).matches(event_type)


@pytest.mark.parametrize(("pattern", "event_type"), NON_MATCHES)
def test_pattern_does_not_match_event_type(pattern: str, event_type: str) -> None:
    assert not compile_pattern(pattern).matches(event_type)


INVALID = [
    # (pattern, fragments the message must contain)
    ("", ["''", "at least one segment"]),
    ("a..b", ["'a..b'", "segment 2", "empty"]),
    (".a", ["'.a'", "segment 1", "empty"]),
    ("a.", ["'a.'", "segment 2", "empty"]),
    (".", ["'.'", "segment 1", "empty"]),
    ("a*", ["'a*'", "mixes a wildcard with text"]),
    ("orders.created*", ["'orders.created*'", "segment 2", "'created*'", "wildcard"]),
    ("#x.y", ["'#x.y'", "segment 1", "'#x'", "wildcard"]),
    ("a.**", ["'a.**'", "segment 2", "'**'"]),
    ("a.##", ["'a.##'", "segment 2", "'##'"]),
    ("a.*#", ["'a.*#'", "segment 2", "'*#'"]),
    ("orders created", ["'orders created'", "segment 1", "' '"]),
    ("orders.cr$ated", ["'orders.cr$ated'", "segment 2", "'$'"]),
    ("a/b", ["'a/b'", "'/'"]),
    ("caf\u00e9", ["segment 1", "'\u00e9'"]),
    (" a", ["segment 1", "' '"]),
    ("a\n", ["segment 1", "'\\n'"]),
]


@pytest.mark.parametrize(("pattern", "fragments"), INVALID)
def test_invalid_pattern_is_refused_with_a_message_naming_pattern_and_segment(
    pattern: str, fragments: list[str]
) -> None:
    with pytest.raises(InvalidPattern) as caught:
        compile_pattern(pattern)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message


def test_invalid_pattern_is_an_eventcenter_error_and_a_value_error() -> None:
    with pytest.raises(EventCenterError):
        compile_pattern("a..b")
    with pytest.raises(ValueError, match="a pattern needs at least one segment"):
        compile_pattern("")


def test_a_pattern_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidPattern, match="must be a string, got int"):
        compile_pattern(5)  # type: ignore[arg-type]


def test_constructing_pattern_directly_validates_too() -> None:
    with pytest.raises(InvalidPattern):
        Pattern("a..b")


def test_pattern_keeps_its_text_and_says_whether_it_has_wildcards() -> None:
    literal = compile_pattern("orders.created")
    wildcard = compile_pattern("orders.#")
    assert literal.text == "orders.created"
    assert not literal.has_wildcards
    assert wildcard.text == "orders.#"
    assert wildcard.has_wildcards


def test_patterns_with_the_same_text_are_equal_and_hash_alike() -> None:
    assert compile_pattern("a.*") == compile_pattern("a.*")
    assert hash(compile_pattern("a.*")) == hash(compile_pattern("a.*"))
    assert compile_pattern("a.*") != compile_pattern("a.#")
    assert len({compile_pattern("x.#"), compile_pattern("x.#"), compile_pattern("x")}) == 2


def test_pattern_is_frozen() -> None:
    pattern = compile_pattern("a.b")
    with pytest.raises(AttributeError):
        pattern.text = "c"  # type: ignore[misc]


def test_lone_hash_matches_any_string() -> None:
    assert compile_pattern("#").matches("")
    assert compile_pattern("#.#").matches("anything.at.all")


def test_literal_dots_and_dashes_are_not_regex_syntax() -> None:
    pattern = compile_pattern("a-b.#")
    assert pattern.matches("a-b.c")
    assert not compile_pattern("a.*").matches("aXb")


def test_many_hashes_do_not_backtrack_exponentially() -> None:
    # A naive regex for this pattern tries every way to share the segments between the hashes:
    # about a second for this 40-segment miss, and ten times longer for every 8 more segments.
    # The compiled pattern places each middle block once and answers in microseconds.
    pattern = compile_pattern("#.a.#.a.#.a.#.a.#.a.#.a.#.b")
    miss = ".".join(["a"] * 40)
    started = time.perf_counter()
    assert not pattern.matches(miss)
    assert time.perf_counter() - started < 0.05
    assert pattern.matches(miss + ".b")


# --- properties -----------------------------------------------------------------------------

segments = st.text(
    alphabet="abcABC019_-",
    min_size=1,
    max_size=6,
)
event_types = st.lists(segments, min_size=1, max_size=8).map(".".join)


def reference_matches(pattern: list[str], event_type: list[str]) -> bool:
    """AMQP topic matching, written as its recursive definition (slow, obviously right)."""
    if not pattern:
        return not event_type
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(reference_matches(rest, event_type[i:]) for i in range(len(event_type) + 1))
    if not event_type:
        return False
    return head in ("*", event_type[0]) and reference_matches(rest, event_type[1:])


@given(event_types)
def test_hash_matches_every_event_type(event_type: str) -> None:
    assert compile_pattern("#").matches(event_type)


@given(event_types)
def test_an_event_type_used_as_pattern_matches_itself(event_type: str) -> None:
    assert compile_pattern(event_type).matches(event_type)


@given(event_types)
def test_as_many_stars_as_segments_match_and_one_more_or_less_does_not(event_type: str) -> None:
    count = event_type.count(".") + 1
    assert compile_pattern(".".join(["*"] * count)).matches(event_type)
    assert not compile_pattern(".".join(["*"] * (count + 1))).matches(event_type)
    if count > 1:
        assert not compile_pattern(".".join(["*"] * (count - 1))).matches(event_type)


# Small alphabets so that random patterns and types actually hit each other often.
small_types = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=7)
small_patterns = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=6)


@given(small_patterns, small_types)
def test_matching_agrees_with_the_recursive_definition(
    pattern: list[str], event_type: list[str]
) -> None:
    compiled = compile_pattern(".".join(pattern))
    assert compiled.matches(".".join(event_type)) == reference_matches(pattern, event_type)


@given(st.data(), st.lists(segments, min_size=1, max_size=8))
def test_replacing_segments_of_a_type_by_wildcards_still_matches_it(
    data: st.DataObject, parts: list[str]
) -> None:
    pattern: list[str] = []
    index = 0
    while index < len(parts):
        choice = data.draw(st.sampled_from(["keep", "star", "hash"]))
        if choice == "keep":
            pattern.append(parts[index])
            index += 1
        elif choice == "star":
            pattern.append("*")
            index += 1
        else:  # '#' in place of one or more segments
            pattern.append("#")
            index += data.draw(st.integers(min_value=1, max_value=len(parts) - index))
    if data.draw(st.booleans()):  # and a '#' in place of no segment at all
        pattern.insert(data.draw(st.integers(min_value=0, max_value=len(pattern))), "#")
    assert compile_pattern(".".join(pattern)).matches(".".join(parts))


# --- the route index ---------------------------------------------------------------------------

small_subscriptions = st.lists(
    st.lists(small_patterns.map(".".join), min_size=1, max_size=3), min_size=0, max_size=12
)


def expected_names(
    subscriptions: dict[str, list[str]], order: list[str], event_type: str
) -> tuple[str, ...]:
    """What trying every pattern of every subscription in turn gives."""
    return tuple(
        name
        for name in order
        if any(compile_pattern(text).matches(event_type) for text in subscriptions[name])
    )


@given(small_subscriptions, st.lists(small_types.map(".".join), min_size=1, max_size=10))
def test_the_index_matches_what_trying_every_pattern_matches(
    subscriptions: list[list[str]], event_types: list[str]
) -> None:
    index = RouteIndex()
    named = {f"s{number}": texts for number, texts in enumerate(subscriptions)}
    for name, texts in named.items():
        index.add(name, texts)
    for event_type in event_types:
        assert index.match(event_type) == expected_names(named, list(named), event_type)


@given(
    small_subscriptions,
    st.lists(st.integers(0, 11), max_size=8),
    st.lists(small_types.map(".".join), min_size=1, max_size=10),
)
def test_the_index_still_agrees_after_removing_and_adding_back(
    subscriptions: list[list[str]], removals: list[int], event_types: list[str]
) -> None:
    index = RouteIndex()
    named = {f"s{number}": texts for number, texts in enumerate(subscriptions)}
    order = list(named)
    for name, texts in named.items():
        index.add(name, texts)
    for number in removals:
        name = f"s{number}"
        if name in index:
            index.remove(name)
            order.remove(name)
        elif name in named:  # removed before: it comes back at the end of the order
            index.add(name, named[name])
            order.append(name)
    assert len(index) == len(order)
    for event_type in event_types:
        assert index.match(event_type) == expected_names(named, order, event_type)


def test_the_index_returns_names_in_the_order_they_were_added() -> None:
    index = RouteIndex()
    index.add("late-literal", ["orders.created"])
    index.add("wild", ["orders.*"])
    index.add("all", ["#"])
    index.add("other", ["billing.#"])
    index.add("twice", ["orders.created", "#.created"])
    assert index.match("orders.created") == ("late-literal", "wild", "all", "twice")
    assert index.match("billing") == ("all", "other")
    assert index.match("stock.moved") == ("all",)


def test_removing_a_name_prunes_its_patterns_and_leaves_the_others() -> None:
    index = RouteIndex()
    index.add("a", [compile_pattern("x.#.y"), "x.y", "x.y"])  # a repeated pattern counts once
    index.add("b", ["x.#"])
    index.remove("a")
    assert index.match("x.y") == ("b",)
    index.remove("b")
    assert index.match("x.y") == ()
    assert len(index) == 0
    index.add("a", ["x.#.y"])
    assert index.match("x.q.y") == ("a",)


def test_a_name_is_added_once_and_removed_once() -> None:
    index = RouteIndex()
    index.add("a", ["x"])
    with pytest.raises(SubscriptionError, match="'a' is already routed"):
        index.add("a", ["y"])
    index.remove("a")
    with pytest.raises(SubscriptionError, match="'a' is not routed"):
        index.remove("a")


def test_an_invalid_pattern_is_refused_and_leaves_the_index_as_it_was() -> None:
    index = RouteIndex()
    with pytest.raises(InvalidPattern):
        index.add("a", ["x.*", "x.y*"])
    assert "a" not in index
    assert index.match("x.q") == ()


class CountingChildren(dict[str, Any]):
    """A trie node's children that count the lookups a walk makes in them."""

    lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountingChildren.lookups += 1
        return super().get(key, default)


def count_lookups(node: Any) -> None:
    """Swap every node's children for a counting dict (the trie is built by then)."""
    node.children = CountingChildren(node.children)
    for child in node.children.values():
        count_lookups(child)


def test_a_miss_walks_the_branches_that_match_not_every_subscription() -> None:
    """1,000 subscriptions on other prefixes: a miss looks at a handful of trie nodes."""
    index = RouteIndex()
    for number in range(1000):
        index.add(f"s{number}", [f"svc{number}.*.failed", f"svc{number}.#", f"svc{number}.x"])
    index.add("catch-all", ["#.failed"])
    count_lookups(index._root)
    tried: list[str] = []

    def tried_in_turn(self: Pattern, event_type: str) -> bool:
        tried.append(event_type)
        return False

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pattern, "matches", tried_in_turn)
        assert index.match("billing.paid") == ()
        assert index.match("billing.paid.failed") == ("catch-all",)
        assert index.match("svc7.x.failed") == ("s7", "catch-all")
    assert tried == []  # no pattern was tried in turn
    # root, '#' at each of 4 positions, 'svc7' and its '*' and '#' children: a few dozen
    # lookups for the three types together, against 3 x 3,001 patterns tried by a scan.
    assert CountingChildren.lookups < 60


# --- the route cache ---------------------------------------------------------------------------


def test_the_route_cache_evicts_the_least_recently_used_type_one_at_a_time() -> None:
    resolved: list[str] = []

    def resolve(event_type: str) -> tuple[str, ...]:
        resolved.append(event_type)
        return (event_type,) if event_type != "none" else ()

    cache = RouteCache(resolve, size=3)
    assert [cache.lookup(t) for t in ("a", "b", "c", "a")] == [("a",), ("b",), ("c",), ("a",)]
    assert resolved == ["a", "b", "c"]  # the second "a" was remembered, and is now the newest
    cache.lookup("d")  # one past the size: "b", the least recently used, goes
    assert len(cache) == 3
    assert [cache.lookup(t) for t in ("a", "c", "d")] == [("a",), ("c",), ("d",)]
    assert resolved == ["a", "b", "c", "d"]
    cache.lookup("b")
    assert resolved[-1] == "b"
    assert cache.lookup("none") == ()  # an empty route is remembered like any other
    assert cache.lookup("none") == ()
    assert resolved.count("none") == 1
    cache.clear()
    assert len(cache) == 0
    cache.lookup("a")
    assert resolved[-1] == "a"


def test_a_route_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RouteCache(str, size=0)
