"""A longer event timeout given by a healing strategy (``restart_stream``) is recorded in the
source's log, on SQLite and PostgreSQL: a center restarted before its ``decay_period`` is over
resumes with it, one restarted after starts with the configured timeout, and the audit trail
shows it as ``timeout.extended``."""

from __future__ import annotations

from pathlib import Path

from eventcenter.center.reader import CenterReader
from eventcenter.projections.queries import AuditFilter
from tests.source_center import POLICY, FakeTimeCenter, center_settings
from tests.unit.source_fakes import SOURCE, TENANT

CONFIGURED = float(POLICY["event_timeout"])
DECAY = float(POLICY["decay_period"])


def event_timeout(w: FakeTimeCenter) -> float:
    policy = w.center.sources.runner(TENANT, SOURCE).policy
    assert policy is not None
    return policy.event_timeout


async def test_a_longer_timeout_is_resumed_after_a_restart_until_it_runs_out(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    first = FakeTimeCenter(settings)
    async with first:
        runner = first.center.sources.runner(TENANT, SOURCE)
        timeout = await runner.restart_push("rca case c-1: a slow stream", longer_timeout=True)
        assert timeout == event_timeout(first) == 1.5 * CONFIGURED
        extended_at = first.clock.now()

    soon = FakeTimeCenter(settings, start=extended_at + DECAY / 2, fake=first.fake)
    async with soon:
        assert event_timeout(soon) == 1.5 * CONFIGURED

    later = FakeTimeCenter(settings, start=extended_at + DECAY + 1, fake=first.fake)
    async with later:
        assert event_timeout(later) == CONFIGURED

    reader = CenterReader(settings)
    try:
        page = reader.audit(AuditFilter(tenant=TENANT, kinds=("timeout.extended",)))
        shown = reader.source(TENANT, SOURCE)  # what `sources show` and the API print
    finally:
        reader.close()
    assert shown.event_timeout(extended_at + DECAY / 2) == 1.5 * CONFIGURED
    assert shown.extension_end(extended_at + DECAY + 1) is None
    assert shown.event_timeout(extended_at + DECAY + 1) == CONFIGURED
    [row] = page.entries  # recorded once, resumed twice
    assert row.source == SOURCE
    assert "a slow stream" in row.reason
