"""Subscription patterns: which event types a subscription receives.

An event type is dot notation: segments of letters, digits, ``_`` and ``-`` joined by ``.``
(``orders.created``, ``stream.chunk-failed``). A pattern is written the same way, and each of
its segments is one of:

* a literal such as ``orders``: matches that exact segment (case-sensitive);
* ``*``: matches exactly one segment, whatever it is;
* ``#``: matches zero or more segments.

These are the topic semantics of AMQP exchanges::

    pattern          matches                                 does not match
    orders.created   orders.created                          orders.Created, orders
    orders.*         orders.created, orders.paid             orders, orders.item.added
    a.*.c            a.b.c, a.x.c                            a.c, a.b.b.c
    #                every type
    a.#              a, a.b, a.b.c                           ab, b.a
    #.failed         failed, stream.failed, x.y.failed       failed.retry
    a.#.c            a.c, a.b.c, a.b.d.c                     a.b, c

A wildcard must be a whole segment: ``a*`` or ``#x`` is refused, as are an empty pattern, an
empty segment (``a..b``, ``.a``, ``a.``) and any character outside the segment alphabet. Such
patterns raise :class:`~eventcenter.domain.errors.InvalidPattern` naming the pattern and the
offending segment, when the pattern is compiled, not when the first event arrives.

A pattern without wildcards is matched by comparing strings, a pattern with wildcards by one
regular expression compiled with the pattern. ``#`` alone matches any string; other patterns
expect a valid type (the event envelope validated it) and never match across a ``.``.

Routing many subscriptions: :class:`RouteIndex` answers "which subscriptions want this type"
without trying every pattern. Literal patterns sit in a dict; wildcard patterns in a trie of
segments, walked once per type, so a lookup costs O(segments x trie branches that still match)
however many subscriptions there are. :class:`RouteCache` keeps the answers for the most
recently routed types, a bounded LRU that evicts one entry at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Generic, TypeVar

from eventcenter.domain.errors import InvalidPattern, SubscriptionError
from eventcenter.domain.event import SEGMENT

if TYPE_CHECKING:
    from functools import _lru_cache_wrapper

__all__ = ["Pattern", "RouteCache", "RouteIndex", "compile_pattern"]

V = TypeVar("V")

_LITERAL = re.compile(SEGMENT)
_ONE = "*"
_ANY = "#"
_OUTSIDE_ALPHABET = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Pattern:
    """A validated subscription pattern. Build it with :func:`compile_pattern` (or ``Pattern``).

    Two patterns are equal (and hash alike) when their text is equal.
    """

    text: str
    has_wildcards: bool = field(init=False, compare=False)
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        segments = _validated_segments(self.text)
        wildcard = any(segment in (_ONE, _ANY) for segment in segments)
        object.__setattr__(self, "has_wildcards", wildcard)
        object.__setattr__(self, "_regex", _to_regex(segments) if wildcard else None)

    def matches(self, event_type: str) -> bool:
        """Whether ``event_type`` (a valid dot-notation type) is selected by this pattern."""
        regex = self._regex
        if regex is None:
            return event_type == self.text
        return regex.fullmatch(event_type) is not None


def compile_pattern(pattern: str) -> Pattern:
    """Validate ``pattern`` and prepare it for matching; raises ``InvalidPattern`` if invalid."""
    return Pattern(pattern)


def _validated_segments(pattern: str) -> list[str]:
    if not isinstance(pattern, str):
        raise InvalidPattern(f"a pattern must be a string, got {type(pattern).__name__}")
    if not pattern:
        raise InvalidPattern("invalid pattern '': a pattern needs at least one segment")
    segments = pattern.split(".")
    for position, segment in enumerate(segments, start=1):
        problem = _segment_problem(segment)
        if problem is not None:
            raise InvalidPattern(f"invalid pattern {pattern!r}: segment {position} {problem}")
    return segments


def _segment_problem(segment: str) -> str | None:
    """Why ``segment`` cannot appear in a pattern, or None if it can."""
    if segment in (_ONE, _ANY) or _LITERAL.fullmatch(segment):
        return None
    if not segment:
        return "is empty (a leading, trailing or doubled '.')"
    if _ONE in segment or _ANY in segment:
        return (
            f"{segment!r} mixes a wildcard with text; "
            "'*' and '#' must stand alone as a whole segment"
        )
    bad = _OUTSIDE_ALPHABET.search(segment)
    return (
        f"{segment!r} contains {bad.group() if bad else segment!r}; "
        "segments use letters, digits, '_' and '-', or are a lone '*' or '#'"
    )


def _to_regex(segments: list[str]) -> re.Pattern[str]:
    """One regex for a wildcard pattern, matched with ``fullmatch`` against the whole type.

    The pattern is cut at each ``#`` into blocks of fixed length (literals and ``*``):
    ``B0.#.B1.#.B2``. B0 is anchored at the start, the last block at the end, and the dots
    around a ``#`` belong to it so that it can match zero segments (``a.#.c`` matches ``a.c``).
    A block between two ``#`` is placed at its leftmost occurrence inside an atomic group: the
    leftmost place always leaves the most room for what follows, so the regex never needs to
    retry other places. That keeps matching at O(segments x pattern length) even for patterns
    such as ``#.a.#.a.#.a.#.b``, which would otherwise backtrack exponentially.
    """
    blocks: list[list[str]] = [[]]
    for segment in segments:
        if segment == _ANY:
            blocks.append([])
        else:
            blocks[-1].append(segment)
    if len(blocks) == 1:
        return re.compile(_sequence(blocks[0]))

    first, *between, last = blocks
    parts = [_sequence(first)]
    at_start = not first  # nothing consumed yet: no dot separates the next block
    for block in between:
        if not block:  # '#.#' means the same as '#'
            continue
        dot = "" if at_start else r"\."
        parts.append(rf"(?>{dot}(?:{SEGMENT}\.)*?{_sequence(block)}(?![^.]))")
        at_start = False
    if last:
        dot = "" if at_start else r"\."
        parts.append(rf"{dot}(?:{SEGMENT}\.)*{_sequence(last)}")
    elif at_start:  # only '#' segments: every type matches
        return re.compile(r".*", re.DOTALL)
    else:
        parts.append(rf"(?:\.{SEGMENT})*")
    return re.compile("".join(parts))


def _sequence(block: list[str]) -> str:
    """Regex for consecutive fixed segments: literals and ``*``, joined by dots."""
    return r"\.".join(SEGMENT if segment == _ONE else re.escape(segment) for segment in block)


class _Node:
    """A trie node: the next segments (a literal, ``*`` or ``#``) and the names ending here."""

    __slots__ = ("children", "names")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.names: set[str] = set()


class RouteIndex:
    """Subscription names by pattern: which names want an event type, without a scan.

    ``add(name, patterns)`` registers a name (each name once), ``remove(name)`` forgets it, and
    ``match(event_type)`` returns the names with at least one pattern that matches, in the order
    they were added. It agrees with ``any(p.matches(event_type) for p in patterns)`` for every
    valid type (property-tested).

    Literal patterns are one dict lookup. Wildcard patterns share a trie keyed by segment, where
    ``*`` and ``#`` are children like literals (a type's segments cannot be ``*`` or ``#``, so
    they never collide). A walk carries the set of (node, position) states still alive; ``#``
    fans out to every later position, and states are visited once, so the cost is
    O(segments x live states), independent of how many subscriptions miss.
    """

    __slots__ = ("_added", "_literals", "_order", "_patterns", "_root", "_wildcards")

    def __init__(self) -> None:
        self._added = 0
        self._order: dict[str, int] = {}  # name -> registration number
        self._patterns: dict[str, tuple[Pattern, ...]] = {}
        self._literals: dict[str, set[str]] = {}  # pattern text -> names
        self._root = _Node()
        self._wildcards = 0  # wildcard patterns in the trie: none means no walk at all

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def add(self, name: str, patterns: Iterable[Pattern | str]) -> None:
        """Register ``name`` for ``patterns`` (texts are compiled, and refused if invalid)."""
        if name in self._order:
            raise SubscriptionError(f"'{name}' is already routed; remove it first")
        compiled = tuple(  # each pattern once: a repeat would match nothing more
            dict.fromkeys(p if isinstance(p, Pattern) else compile_pattern(p) for p in patterns)
        )
        self._order[name] = self._added
        self._added += 1
        self._patterns[name] = compiled
        for pattern in compiled:
            if pattern.has_wildcards:
                node = self._root
                for segment in pattern.text.split("."):
                    node = node.children.setdefault(segment, _Node())
                node.names.add(name)
                self._wildcards += 1
            else:
                self._literals.setdefault(pattern.text, set()).add(name)

    def remove(self, name: str) -> None:
        """Forget ``name`` and prune what only it used; SubscriptionError if unknown."""
        try:
            patterns = self._patterns.pop(name)
        except KeyError:
            raise SubscriptionError(f"'{name}' is not routed") from None
        del self._order[name]
        for pattern in patterns:
            if pattern.has_wildcards:
                self._remove_wildcard(pattern.text.split("."), name)
                self._wildcards -= 1
            else:
                names = self._literals[pattern.text]
                names.discard(name)
                if not names:
                    del self._literals[pattern.text]

    def match(self, event_type: str) -> tuple[str, ...]:
        """The names whose patterns match ``event_type`` (a valid type), in the order added."""
        found = self._literals.get(event_type)
        if self._wildcards:
            walked = self._walk(event_type.split("."))
            if found is None:
                found = walked
            elif walked:
                found = found | walked
        if not found:
            return ()
        if len(found) == 1:
            return tuple(found)
        return tuple(sorted(found, key=self._order.__getitem__))

    def _walk(self, segments: list[str]) -> set[str]:
        found: set[str] = set()
        end = len(segments)
        pending: list[tuple[_Node, int]] = [(self._root, 0)]
        seen: set[tuple[_Node, int]] = set()
        while pending:
            state = pending.pop()
            node, position = state
            if state in seen:
                continue
            seen.add(state)
            children = node.children
            anything = children.get("#")
            if anything is not None:  # zero or more segments: every later position
                pending.extend((anything, later) for later in range(position, end + 1))
            if position == end:
                found.update(node.names)
                continue
            child = children.get(segments[position])
            if child is not None:
                pending.append((child, position + 1))
            one = children.get("*")
            if one is not None:
                pending.append((one, position + 1))
        return found

    def _remove_wildcard(self, segments: list[str], name: str) -> None:
        path = [self._root]
        for segment in segments:
            path.append(path[-1].children[segment])
        path[-1].names.discard(name)
        for depth in range(len(segments), 0, -1):  # prune nodes that lead nowhere any more
            node = path[depth]
            if node.names or node.children:
                break
            del path[depth - 1].children[segments[depth - 1]]


class RouteCache(Generic[V]):
    """``resolve(event_type)`` remembered for the most recently used types, ``size`` at most.

    ``lookup(event_type)`` returns the remembered answer, or calls ``resolve`` and remembers it.
    Past ``size`` types the least recently used one is forgotten, one per new type, so a stream
    of ever new types costs one eviction each instead of emptying the cache. ``clear`` is for
    when the answers change (a subscription added or removed). A hit costs one C-level call
    (``functools.lru_cache``), about what a dict lookup does.
    """

    __slots__ = ("lookup", "size")

    def __init__(self, resolve: Callable[[str], V], size: int = 10_000) -> None:
        if size < 1:
            raise ValueError(f"a route cache needs room for at least 1 entry, got {size}")
        self.size = size
        self.lookup: _lru_cache_wrapper[V] = lru_cache(maxsize=size)(resolve)

    def __len__(self) -> int:
        return self.lookup.cache_info().currsize

    def clear(self) -> None:
        self.lookup.cache_clear()
