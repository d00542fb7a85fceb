"""The reconciler: compares a source's authoritative listing with what the center delivered.

Push and poll can both miss things: a position the server dropped, a row changed in place, a
delete nobody announced. A reconciliation lists every item the source holds, compares each
item's sha256 digest with the one the center recorded (:mod:`eventcenter.domain.reconcile`),
and admits corrections, each marked with its kind (``correction="missing"|"changed"|
"deleted"``), through the same idempotent admission as every other item. The report says how
many of each; a second run right after finds nothing.

A reconciliation races with the live paths: an item admitted by push while the listing was read
can look changed and come back as an older version. Idempotent admission keeps that from
duplicating anything; run reconciliations on an interval, not in a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Sequence

from eventcenter.domain.backoff import ReconnectBackoff
from eventcenter.domain.errors import ConfigurationError, EventCenterError
from eventcenter.domain.reconcile import ReconcileReport, diff, refreshed
from eventcenter.domain.sources import (
    Clock,
    Delivered,
    ItemSink,
    ListPath,
    Received,
    SourceError,
    SourceItem,
)
from eventcenter.sources.lifecycle import EngineTask, raise_if_cancelling
from eventcenter.sources.outcomes import AdmissionFailed, OnOutcome, PathName, PathOutcome

log = logging.getLogger("eventcenter.sources")

RECONCILE: PathName = "reconcile"
CORRECTION_CHUNK = 500  # corrections admitted per call: bounded transactions on a large diff


class Reconciler:
    """Lists, diffs and corrects one source; once on demand, or on an interval.

    ``on_report`` gets the :class:`ReconcileReport` of each run that completed; ``on_outcome``
    (optional) gets a :class:`PathOutcome` for each run, failed ones included. Runs never
    overlap: a :meth:`reconcile_once` asked for while one runs waits for it, then runs.
    """

    def __init__(
        self,
        tenant: str,
        source: str,
        listing: ListPath,
        sink: ItemSink,
        clock: Clock,
        on_report: Callable[[ReconcileReport], None],
        *,
        on_outcome: OnOutcome | None = None,
        chunk: int = CORRECTION_CHUNK,
        backoff: ReconnectBackoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 item, got {chunk}")
        self.tenant = tenant
        self.source = source
        self._listing = listing
        self._sink = sink
        self._clock = clock
        self._on_report = on_report
        self._on_outcome = on_outcome
        self._chunk = chunk
        self._backoff = backoff or ReconnectBackoff()
        self._rng = rng or random.Random()
        self._task = EngineTask(
            f"reconcile {tenant}/{source}", {"tenant": tenant, "source": source, "path": RECONCILE}
        )
        self._lock = asyncio.Lock()
        self._last_report: ReconcileReport | None = None

    @property
    def last_report(self) -> ReconcileReport | None:
        return self._last_report

    @property
    def running(self) -> bool:
        return self._task.running

    async def reconcile_once(self) -> ReconcileReport:
        """List, diff, admit the corrections; report and return what was found.

        Raises the listing's :class:`SourceError`, or :class:`AdmissionFailed` when the
        center refused corrections (those admitted before stay; the next run finds the rest).
        Either is reported as a failed outcome first.
        """
        async with self._lock:
            try:
                report = await self._reconcile()
            except SourceError as error:
                self._report_failure(
                    PathOutcome.failure(self._clock.now(), RECONCILE, error, retry_in=None)
                )
                raise
            except AdmissionFailed as failed:
                self._report_failure(
                    PathOutcome.admission_failure(
                        self._clock.now(), RECONCILE, failed, retry_in=None
                    )
                )
                raise
        self._last_report = report
        log.info(
            "reconciled %s/%s: %d listed, %d missing, %d changed, %d deleted",
            self.tenant,
            self.source,
            report.listed,
            report.missing,
            report.changed,
            report.deleted,
            extra={"tenant": self.tenant, "source": self.source, "path": RECONCILE},
        )
        if self._on_outcome is not None:
            self._on_outcome(
                PathOutcome.success(
                    report.at,
                    RECONCILE,
                    items=report.corrections,
                    detail=(
                        f"{report.listed} listed, {report.missing} missing, "
                        f"{report.changed} changed, {report.deleted} deleted"
                    ),
                )
            )
        self._on_report(report)
        return report

    def start(self, interval: float) -> asyncio.Task[None]:
        """Run :meth:`run` as a task (the running one if already started)."""
        _check_interval(interval)
        return self._task.start(lambda: self.run(interval))

    async def stop(self) -> None:
        await self._task.stop()

    async def run(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds until cancelled; back off after a failure."""
        _check_interval(interval)
        failures = 0
        while True:
            try:
                await self.reconcile_once()
            except (SourceError, AdmissionFailed) as error:
                raise_if_cancelling(error)
                failures += 1
                delay = self._backoff.delay(failures, self._rng.random())
                if isinstance(error, SourceError) and error.retry_after is not None:
                    delay = max(delay, error.retry_after)
                log.warning(
                    "reconciliation of %s/%s failed (attempt %d), retrying in %.3fs: %s",
                    self.tenant,
                    self.source,
                    failures,
                    delay,
                    error,
                    extra={"tenant": self.tenant, "source": self.source, "path": RECONCILE},
                )
                await self._clock.sleep(delay)
                continue
            raise_if_cancelling()  # the listing may have swallowed a stop
            failures = 0
            await self._clock.sleep(interval)

    async def _reconcile(self) -> ReconcileReport:
        listed = await self._listing()
        try:
            delivered = await self._sink.delivered(self.tenant, self.source)
        except SourceError:
            raise
        except EventCenterError as error:
            raise AdmissionFailed(error, 0, "reading what was delivered") from error
        found = diff(listed, delivered)
        for correction, items in (
            ("missing", found.missing),
            ("changed", found.changed),
            ("deleted", found.deleted),
        ):
            for start in range(0, len(items), self._chunk):
                await self._correct(correction, items[start : start + self._chunk], delivered)
        return found.report(self._clock.now(), len(listed))

    async def _correct(
        self, correction: str, items: Sequence[SourceItem], delivered: dict[str, Delivered]
    ) -> None:
        """Admit ``items``; a correction the center calls a repeat goes again, refreshed."""
        event_ids = await self._admit(correction, items)
        repeats = [
            item for item, event_id in zip(items, event_ids, strict=True) if event_id is None
        ]
        again = [refreshed(item, delivered[item.key]) for item in repeats if item.key in delivered]
        unresolved = len(repeats) - len(again)
        if again:
            retried = await self._admit(correction, again)
            unresolved += sum(1 for event_id in retried if event_id is None)
        if unresolved:
            log.warning(
                "reconciliation of %s/%s: %d %s correction(s) came back as repeats of what the "
                "center holds; the next run compares again",
                self.tenant,
                self.source,
                unresolved,
                correction,
                extra={"tenant": self.tenant, "source": self.source, "path": RECONCILE},
            )

    async def _admit(self, correction: str, items: Sequence[SourceItem]) -> list[str | None]:
        chunk = [Received(position="", item=item) for item in items]
        try:
            return await self._sink.admit(
                self.tenant, self.source, RECONCILE, chunk, None, correction=correction
            )
        except SourceError:
            raise
        except EventCenterError as error:
            raise AdmissionFailed(error, len(chunk)) from error

    def _report_failure(self, outcome: PathOutcome) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)


def _check_interval(interval: float) -> None:
    if not (interval > 0.0 and math.isfinite(interval)):
        raise ConfigurationError(
            f"the reconciliation interval must be a finite number of seconds > 0, got {interval}"
        )
