"""Subscription patterns: AMQP topic semantics over dot-notation event types."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.errors import EventCenterError, InvalidPattern
from eventcenter.handlers.patterns import Pattern, compile_pattern

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
