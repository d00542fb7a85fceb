"""Path outcomes say what happened to which path, and whether the path is to blame."""

from __future__ import annotations

import pytest

from eventcenter.domain.errors import StoreUnavailable
from eventcenter.domain.sources import SourceError, SourceErrorKind
from eventcenter.sources.outcomes import AdmissionFailed, PathOutcome


def test_a_path_failure_carries_its_kind_and_blames_the_path() -> None:
    error = SourceError(SourceErrorKind.TIMEOUT, "no answer in 5 s", retry_after=None)
    outcome = PathOutcome.failure(12.0, "push", error, retry_in=0.8, last_message_at=3.0)

    assert (outcome.ok, outcome.kind, outcome.retry_in) == (False, SourceErrorKind.TIMEOUT, 0.8)
    assert outcome.detail == "timeout: no answer in 5 s"
    assert outcome.path_failed


def test_an_admission_failure_does_not_blame_the_path() -> None:
    failed = AdmissionFailed(StoreUnavailable("disk full"), 7)
    outcome = PathOutcome.admission_failure(1.0, "poll", failed, retry_in=1.6)

    assert not outcome.ok
    assert outcome.kind is None
    assert not outcome.path_failed
    assert outcome.items == 7
    assert "admitting 7 message(s)" in outcome.detail
    assert "disk full" in outcome.detail


def test_a_success_counts_its_items_and_dead_letters() -> None:
    outcome = PathOutcome.success(2.0, "push", items=5, dead_lettered=1, last_message_at=2.0)
    assert (outcome.ok, outcome.items, outcome.dead_lettered) == (True, 5, 1)
    assert not outcome.path_failed


def test_a_success_cannot_carry_an_error_kind() -> None:
    with pytest.raises(ValueError, match="no error kind"):
        PathOutcome(at=0.0, path="push", ok=True, kind=SourceErrorKind.AUTH)


@pytest.mark.parametrize(("items", "dead"), [(-1, 0), (1, 2)])
def test_counts_must_be_consistent(items: int, dead: int) -> None:
    with pytest.raises(ValueError, match="counts"):
        PathOutcome(at=0.0, path="poll", ok=True, items=items, dead_lettered=dead)
