"""How many mode switches each data source has recorded, kept at hand for the metrics.

The count lives in each source's log (an aggregate in the store); reading the store at every
scrape would cost a query per source. :class:`SwitchCountingRecorder` sits in front of the
center's :class:`~eventcenter.domain.ports.SourceRecorder` and notes the log's count each time
a change of that log is committed (a source's decisions, never its items), so the figure is
the store's own, restored with the log when the source starts again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventcenter.domain.ports import SourceRecorder
from eventcenter.domain.source_log import SourceLog

__all__ = ["SwitchCountingRecorder"]


class SwitchCountingRecorder:
    """A :class:`~eventcenter.domain.ports.SourceRecorder` that remembers each source's
    recorded switch count after every committed change (:attr:`switches`)."""

    def __init__(self, inner: SourceRecorder) -> None:
        self._inner = inner
        self._switches: dict[tuple[str, str], int] = {}

    @property
    def switches(self) -> Mapping[tuple[str, str], int]:
        """Switches recorded by (tenant, source), for the sources whose log changed since
        this process started (each source's start changes it)."""
        return self._switches

    async def change(
        self,
        tenant: str,
        source: str,
        apply: Callable[[SourceLog | None], tuple[SourceLog | None, Any]],
    ) -> Any:
        seen: list[int] = []

        def counted(current: SourceLog | None) -> tuple[SourceLog | None, Any]:
            changed, result = apply(current)
            if changed is not None:
                seen.append(changed.switches)
            return changed, result

        result = await self._inner.change(tenant, source, counted)
        if seen:  # committed: the count is the store's
            self._switches[tenant, source] = seen[-1]
        return result

    def outcomes(self, tenant: str, source: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self._inner.outcomes(tenant, source, rows)
