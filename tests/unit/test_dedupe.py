"""The dedupe window: an id seen again inside the window is a duplicate; memory stays bounded."""

from __future__ import annotations

from uuid import UUID

import pytest

from eventcenter.handlers.dedupe import DedupeWindow

A, B, C, D = (UUID(int=n) for n in range(1, 5))


def test_an_id_seen_for_the_first_time_is_not_a_duplicate() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    assert window.is_duplicate(A, now=0.0) is False
    assert len(window) == 1


def test_an_id_seen_again_inside_the_window_is_a_duplicate() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    window.is_duplicate(A, now=0.0)
    assert window.is_duplicate(A, now=9.9) is True


def test_other_ids_are_not_duplicates() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    window.is_duplicate(A, now=0.0)
    assert window.is_duplicate(B, now=1.0) is False


def test_an_id_seen_again_after_the_window_expired_is_not_a_duplicate() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    window.is_duplicate(A, now=0.0)
    assert window.is_duplicate(A, now=10.5) is False
    assert window.is_duplicate(A, now=11.0) is True  # ... and is remembered afresh


def test_expired_ids_are_forgotten() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    window.is_duplicate(A, now=0.0)
    window.is_duplicate(B, now=5.0)
    window.is_duplicate(C, now=12.0)
    assert len(window) == 2  # A expired; B and C are inside the window
    assert window.is_duplicate(B, now=12.0) is True


def test_the_window_is_counted_from_the_first_sighting() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    window.is_duplicate(A, now=0.0)
    assert window.is_duplicate(A, now=8.0) is True
    assert window.is_duplicate(A, now=10.5) is False


def test_max_ids_bounds_memory_by_evicting_the_oldest_id() -> None:
    window = DedupeWindow(window=60.0, max_ids=2)
    for now, event_id in enumerate((A, B, C)):
        window.is_duplicate(event_id, now=float(now))
    assert len(window) == 2
    assert window.is_duplicate(C, now=3.0) is True
    assert window.is_duplicate(B, now=3.0) is True
    assert window.is_duplicate(A, now=3.0) is False  # evicted, though still inside the window


def test_memory_never_exceeds_max_ids() -> None:
    window = DedupeWindow(window=60.0, max_ids=3)
    for n in range(1, 50):
        window.is_duplicate(UUID(int=n), now=n / 10)
        assert len(window) <= 3


def test_a_zero_window_turns_deduplication_off() -> None:
    window = DedupeWindow(window=0.0, max_ids=100)
    assert window.is_duplicate(A, now=0.0) is False
    assert window.is_duplicate(A, now=0.0) is False
    assert len(window) == 0


def test_a_forgotten_id_is_no_longer_a_duplicate() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    window.is_duplicate(A, now=0.0)
    window.is_duplicate(B, now=0.0)
    window.forget(A)
    assert window.is_duplicate(A, now=1.0) is False
    assert window.is_duplicate(B, now=1.0) is True


def test_forgetting_an_unknown_id_is_harmless() -> None:
    window = DedupeWindow(window=10.0, max_ids=100)
    window.forget(D)
    assert len(window) == 0


@pytest.mark.parametrize(("seconds", "max_ids"), [(-1.0, 10), (10.0, 0)])
def test_a_negative_window_or_no_room_for_ids_is_rejected(seconds: float, max_ids: int) -> None:
    with pytest.raises(ValueError, match="window must be >= 0"):
        DedupeWindow(window=seconds, max_ids=max_ids)
