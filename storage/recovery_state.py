"""The health recovery's incidents, made durable through the store writer, and read back at start.

Each service's incidents, attempts and ends are events of its
:class:`~eventcenter.domain.recovery_log.ServiceRecovery` (eventsourcing, ``center_events``),
committed by the writer thread with everything else (group commit):
:class:`DurableRecoveryRecorder` implements the
:class:`~eventcenter.domain.ports.RecoveryRecorder` port by queueing a command and returning at
once, so a recovery never waits on the database. The recovery manager knows which services it
recovers, so ``load`` reads their logs by id: no index table is needed.
"""

from __future__ import annotations

from collections.abc import Iterable

from eventcenter.domain.health import (
    AttemptStart,
    IncidentStart,
    RecoveryAttempt,
    RecoveryStep,
    SavedRecovery,
)
from eventcenter.domain.recovery_log import ServiceRecovery
from eventcenter.storage.writer import Batch, Command, StoreWriter


class RecordRecoveryStep(Command):
    """Record one step in its service's recovery log (registered with it, the first time)."""

    def __init__(self, step: RecoveryStep) -> None:
        self.step = step

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        step = self.step
        log_id = ServiceRecovery.create_id(batch.center, step.service)
        current = writer.current(batch, log_id, writer.app.recovery_log)
        if current is None:
            current = ServiceRecovery.register(batch.center, step.service, at=_at(step))
        assert isinstance(current, ServiceRecovery)
        current.record(step)  # a refused first step leaves nothing behind it
        batch.touch(current)


class LoadRecoveries(Command):
    """The recorded recovery of each service named (those never recorded are left out)."""

    def __init__(self, services: Iterable[str]) -> None:
        self.services = sorted(set(services))

    def apply(self, writer: StoreWriter, batch: Batch) -> list[SavedRecovery]:
        saved = []
        for service in self.services:
            found = writer.app.recovery_log(ServiceRecovery.create_id(batch.center, service))
            if found is not None:
                writer.loaded(found)
                saved.append(found.saved())
        return saved


class DurableRecoveryRecorder:
    """Implements :class:`~eventcenter.domain.ports.RecoveryRecorder` with :class:`StoreWriter`.

    ``record`` queues the step and returns; the writer commits it with the next batch, in
    order (within milliseconds while the store answers). Steps queued when the process dies
    before that commit are lost: an attempt whose start was not recorded is made again after
    the restart (one whose start was recorded is recorded as cut short instead), an end not
    recorded leaves the incident open, and the restarted center ends it at its next check (at
    once when its attempts are spent). ``load`` is called once at start.
    """

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def record(self, step: RecoveryStep) -> None:
        self.writer.post(RecordRecoveryStep(step))

    async def load(self, services: Iterable[str]) -> list[SavedRecovery]:
        """What the recovery manager restores ``services`` from (see
        ``RecoveryManager.restore``)."""
        saved: list[SavedRecovery] = await self.writer.submit(LoadRecoveries(services))
        return saved


def _at(step: RecoveryStep) -> float:
    if isinstance(step, IncidentStart):
        return step.since
    if isinstance(step, RecoveryAttempt | AttemptStart):
        return step.started_at
    return step.at
