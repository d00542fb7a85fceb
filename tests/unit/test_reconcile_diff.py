"""Reconciliation's pure core: digests of content, and the exact corrections a listing implies."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.reconcile import (
    ReconcileDiff,
    ReconcileReport,
    diff,
    item_digest,
    tombstone,
)
from eventcenter.domain.sources import Delivered, InvalidItem, SourceItem


def item(key: str, version: str = "1", deleted: bool = False, **data: object) -> SourceItem:
    return SourceItem(key=key, version=version, data=data, deleted=deleted)


def held(it: SourceItem) -> Delivered:
    return Delivered(it.version, item_digest(it), it.deleted)


# --- item_digest --------------------------------------------------------------------------------


def test_the_digest_is_a_sha256_hex_of_the_content() -> None:
    digest = item_digest(item("a", total=3))
    assert len(digest) == 64
    assert int(digest, 16) >= 0


def test_equal_content_gives_an_equal_digest_whatever_the_key_order() -> None:
    first = SourceItem("a", "1", data={"x": 1, "y": {"b": 2, "a": [1, "é"]}})
    second = SourceItem("a", "1", data={"y": {"a": [1, "é"], "b": 2}, "x": 1})
    assert item_digest(first) == item_digest(second)


def test_the_identity_is_not_content() -> None:
    assert item_digest(item("a", "1", total=3)) == item_digest(item("b", "9", total=3))


@pytest.mark.parametrize(
    "other",
    [item("a", total=4), item("a", total="3"), item("a", deleted=True, total=3), item("a")],
)
def test_other_content_gives_another_digest(other: SourceItem) -> None:
    assert item_digest(other) != item_digest(item("a", total=3))


@pytest.mark.parametrize(
    "value", [object(), math.nan, {1, 2}, [1, {"x": -math.inf}], datetime.now(UTC)]
)
def test_data_that_is_not_plain_json_is_refused_with_the_key(value: object) -> None:
    with pytest.raises(InvalidItem, match="item 'a': its data is not plain JSON"):
        item_digest(SourceItem("a", "1", data={"v": value}))


def test_what_only_the_standard_library_writes_still_gets_a_stable_digest() -> None:
    big = SourceItem("a", "1", data={"n": 2**70, "ok": None})
    int_keys = SourceItem("a", "1", data={"m": {1: "x"}})
    assert item_digest(big) == item_digest(SourceItem("a", "1", data={"ok": None, "n": 2**70}))
    assert item_digest(int_keys) == item_digest(SourceItem("a", "1", data={"m": {1: "x"}}))
    assert item_digest(big) != item_digest(int_keys)


def test_a_null_in_the_data_is_content_not_a_refusal() -> None:
    assert item_digest(item("a", note=None)) != item_digest(item("a"))


# --- diff ---------------------------------------------------------------------------------------


def test_an_identical_listing_needs_no_correction() -> None:
    listed = [item("a", total=1), item("b", total=2)]
    found = diff(listed, {it.key: held(it) for it in listed})
    assert found == ReconcileDiff()
    assert found.empty


def test_missing_changed_and_deleted_are_found_exactly() -> None:
    delivered = {
        "same": held(item("same", "1", v=1)),
        "changed": held(item("changed", "1", v=1)),
        "gone": held(item("gone", "4", v=1)),
    }
    listed = [
        item("same", "1", v=1),
        item("changed", "2", v=2),
        item("new", "1", v=1),
    ]

    found = diff(listed, delivered)

    assert found.missing == (item("new", "1", v=1),)
    assert found.changed == (item("changed", "2", v=2),)
    assert found.deleted == (SourceItem("gone", "deleted@4", data={}, deleted=True),)


def test_content_changed_under_the_same_version_gets_a_fresh_version() -> None:
    """Admitting (key, same version) again would be dropped as a repeat."""
    delivered = {"a": held(item("a", "7", v=1))}
    listed = item("a", "7", v=2)

    (changed,) = diff([listed], delivered).changed

    assert changed.version == f"7+{item_digest(listed)[:16]}"
    assert changed.data == {"v": 2}


def test_a_key_deleted_already_is_not_deleted_again() -> None:
    delivered = {"a": Delivered("deleted@3", item_digest(item("a", deleted=True)), deleted=True)}
    assert diff([], delivered).empty


def test_a_listed_tombstone_for_a_key_never_delivered_needs_nothing() -> None:
    assert diff([item("a", "2", deleted=True)], {}).empty


def test_a_listed_tombstone_for_a_live_key_is_a_deletion_with_the_listed_version() -> None:
    delivered = {"a": held(item("a", "1", v=1))}
    found = diff([item("a", "2", deleted=True)], delivered)
    assert found.deleted == (item("a", "2", deleted=True),)
    assert not found.changed


def test_a_key_deleted_then_listed_again_is_changed() -> None:
    delivered = {"a": held(tombstone("a", Delivered("1", "x")))}
    found = diff([item("a", "2", v=1)], delivered)
    assert found.changed == (item("a", "2", v=1),)


def test_a_key_listed_twice_counts_once_with_its_last_occurrence() -> None:
    found = diff([item("a", "1", v=1), item("a", "2", v=2)], {})
    assert found.missing == (item("a", "2", v=2),)


def test_corrections_are_sorted_by_key() -> None:
    found = diff([item(key) for key in "dbca"], {"z": held(item("z")), "y": held(item("y"))})
    assert [it.key for it in found.missing] == ["a", "b", "c", "d"]
    assert [it.key for it in found.deleted] == ["y", "z"]


def test_the_report_counts_each_kind() -> None:
    found = ReconcileDiff(missing=(item("a"),), changed=(item("b"), item("c")), deleted=())
    assert found.report(at=5.0, listed=7) == ReconcileReport(
        at=5.0, listed=7, missing=1, changed=2, deleted=0
    )
    assert found.report(at=5.0, listed=7).corrections == 3


# --- property: admitting the corrections makes the next diff empty ------------------------------

keys = st.sampled_from("abcdef")
versions = st.sampled_from(["1", "2", "3"])
contents = st.dictionaries(st.sampled_from("xy"), st.integers(0, 2), max_size=2)
items = st.builds(
    lambda key, version, data, deleted: SourceItem(key, version, data=data, deleted=deleted),
    keys,
    versions,
    contents,
    st.booleans(),
)


def admitted(delivered: Mapping[str, Delivered], found: ReconcileDiff) -> dict[str, Delivered]:
    after = dict(delivered)
    for correction in (*found.missing, *found.changed, *found.deleted):
        after[correction.key] = held(correction)
    return after


def identities(found: ReconcileDiff) -> list[tuple[str, str]]:
    return [(it.key, it.version) for it in (*found.missing, *found.changed, *found.deleted)]


@settings(max_examples=300, deadline=None)
@given(listed=st.lists(items, max_size=8), before=st.lists(items, max_size=8))
def test_after_admitting_the_corrections_a_second_diff_finds_nothing(
    listed: Sequence[SourceItem], before: Sequence[SourceItem]
) -> None:
    delivered = {it.key: held(it) for it in before}

    found = diff(listed, delivered)
    for correction in (*found.changed, *found.deleted):
        previous = delivered.get(correction.key)
        assert previous is None or previous.version != correction.version  # never a repeat

    assert diff(listed, admitted(delivered, found)).empty
    assert len(set(identities(found))) == len(identities(found))
