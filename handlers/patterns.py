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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from eventcenter.domain.errors import InvalidPattern
from eventcenter.domain.event import SEGMENT

__all__ = ["Pattern", "compile_pattern"]

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
