"""Reconciliation, the pure part: what the source holds against what the center delivered.

A source's listing is the authority. Each item's content is summarised by a sha256 digest of
its canonical JSON (``data`` and ``deleted``; key and version are the identity, not content),
and :func:`diff` compares the listing with the center's record per key
(:class:`~eventcenter.domain.sources.Delivered`). The result is the correction items to admit:

- **missing**: a key the source lists and the center never delivered;
- **changed**: a key whose content differs from what the center delivered last;
- **deleted**: a key the center holds as live that the source no longer lists: a tombstone.

Every correction needs an identity the center has not admitted yet, or idempotent admission
drops it as a repeat and nothing converges. A listed version is used as is unless the center
holds that very version with other content (the source changed an item without bumping its
version): then the version gets the digest appended (``"7+3fa0..."``). A tombstone's version is
``"deleted@<version delivered last>"``. One case :func:`diff` cannot see: the listed version
was admitted already and an older version, arriving late by another path, became the center's
record of the key. The admission then reports the correction as a repeat, and
:func:`refreshed` gives it a version naming the record it corrects (``"3~2"``). Each of these
is fresh for the same reason: an identity is admitted once, so the center's record of a key
holds any one version for a single stretch of time, and a correction derived from that version
is admitted at most once within it. Admitting the corrections makes the next diff empty.

The storage adapter must record ``item_digest(item)`` as the :class:`Delivered` digest of every
item it admits, whichever path brought it, or every key would look changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from eventcenter.domain.event import holds_non_finite
from eventcenter.domain.sources import Delivered, InvalidItem, SourceItem

#: Sorted keys; datetimes and dataclasses refused (not plain JSON) instead of written as text.
_CANONICAL = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
DIGEST_SUFFIX = 16  # hex characters of the digest appended to a reused version


def canonical_json(item: SourceItem) -> bytes:
    """The item's content as canonical JSON: sorted keys, no spaces, UTF-8 kept, no NaN.

    orjson writes it (one C call, a sixth of the standard library's cost on a typical item);
    what orjson refuses but the standard library writes (integers past 64 bits, keys that are
    not strings) falls back to ``json.dumps`` with the same settings. Either is a function of
    the content alone, so equal content always gets equal bytes.
    """
    content = {"data": item.data, "deleted": item.deleted}
    try:
        text = orjson.dumps(content, option=_CANONICAL)
    except orjson.JSONEncodeError:
        text = _stdlib_canonical(item, content)
    if b"null" in text and holds_non_finite(item.data):  # orjson writes NaN as null
        raise InvalidItem(f"item {item.key!r}: its data is not plain JSON: NaN or infinity")
    return text


def _stdlib_canonical(item: SourceItem, content: dict[str, Any]) -> bytes:
    try:
        return json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise InvalidItem(f"item {item.key!r}: its data is not plain JSON: {error}") from None


def item_digest(item: SourceItem) -> str:
    """sha256 (hex) of the item's canonical JSON: equal content, equal digest."""
    return hashlib.sha256(canonical_json(item)).hexdigest()


def tombstone(key: str, last: Delivered) -> SourceItem:
    """The correction for a key the source no longer lists: deleted, with a new version."""
    return SourceItem(key=key, version=f"deleted@{last.version}", data={}, deleted=True)


def refreshed(item: SourceItem, last: Delivered) -> SourceItem:
    """A correction whose identity the center had admitted already (its record of the key went
    back to an older version that came late): the same content as ``"<version>~<record>"``."""
    return _with_version(item, f"{item.version}~{last.version}")


@dataclass(frozen=True, slots=True)
class ReconcileDiff:
    """The corrections to admit, each sorted by key."""

    missing: tuple[SourceItem, ...] = ()
    changed: tuple[SourceItem, ...] = ()
    deleted: tuple[SourceItem, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.missing or self.changed or self.deleted)

    def report(self, at: float, listed: int) -> ReconcileReport:
        return ReconcileReport(
            at=at,
            listed=listed,
            missing=len(self.missing),
            changed=len(self.changed),
            deleted=len(self.deleted),
        )


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """One reconciliation run: when, how many items were listed, how many corrections of each
    kind were admitted. Counts, not keys: a report stays small whatever the listing's size."""

    at: float
    listed: int
    missing: int
    changed: int
    deleted: int

    @property
    def corrections(self) -> int:
        return self.missing + self.changed + self.deleted


def diff(listed: Sequence[SourceItem], delivered: Mapping[str, Delivered]) -> ReconcileDiff:
    """Compare the authoritative listing with what was delivered per key.

    A key listed twice counts once, with its last occurrence (a paginated listing that saw an
    item move keeps the later read). A listing may leave deleted items out or list them as
    tombstones (``deleted=True``): either way a key the center holds as live is corrected as
    deleted, and a tombstone for a key never delivered needs nothing (the center never held it).
    """
    latest: dict[str, SourceItem] = {}
    for item in listed:
        latest[item.key] = item
    missing: list[SourceItem] = []
    changed: list[SourceItem] = []
    deleted: list[SourceItem] = []
    for key in sorted(latest):
        item = latest[key]
        held = delivered.get(key)
        if held is None:
            if not item.deleted:
                missing.append(item)
        elif item.deleted:
            if not held.deleted:
                deleted.append(_fresh(item, held))
        elif item_digest(item) != held.digest:
            changed.append(_fresh(item, held))
    deleted.extend(
        tombstone(key, held)
        for key, held in delivered.items()
        if key not in latest and not held.deleted
    )
    deleted.sort(key=lambda item: item.key)
    return ReconcileDiff(missing=tuple(missing), changed=tuple(changed), deleted=tuple(deleted))


def _fresh(item: SourceItem, held: Delivered) -> SourceItem:
    """``item`` with an identity the center has not admitted: its own version, unless the
    center holds that very version (with other content), then with the digest appended."""
    if item.version != held.version:
        return item
    return _with_version(item, f"{item.version}+{item_digest(item)[:DIGEST_SUFFIX]}")


def _with_version(item: SourceItem, version: str) -> SourceItem:
    return SourceItem(
        key=item.key,
        version=version,
        data=item.data,
        deleted=item.deleted,
        occurred_at=item.occurred_at,
    )
