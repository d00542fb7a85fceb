"""The center's load-test tuning, wired: its settings (``[tuning]``), the workflow of
:mod:`eventcenter.handlers.tuning` on the store, the Locust tester, the HTTP dispatcher with a
circuit breaker per agent, a failed dispatch reported to the RCA, and the frequency port
through which healing slows the services a rate-limited source follows."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from eventcenter.domain.adjustment import Adjustment, polling_load_factor
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.rate_strategies import Seconds
from eventcenter.handlers.tuning import TuningSettings, TuningWorkflow
from eventcenter.sources.manager import SourceManager

log = logging.getLogger("eventcenter.tuning")

SourceKey = Annotated[str, StringConstraints(pattern=r"^[^/\s]+/[^/\s]+$")]
"""A data source as ``tenant/name``."""


class CenterTuningSettings(TuningSettings):
    """``[tuning]``: the workflow's settings and how the center measures and dispatches."""

    tester: Literal["locust", "none"] = Field(
        "locust", description="load-test a new signature with Locust, or never (none)"
    )
    dispatch_timeout: Seconds = Field(
        5.0, gt=0, description="seconds one POST to an agent may take"
    )
    dispatch_attempts: int = Field(4, ge=1, le=20, description="tries per agent and version")
    sources: dict[str, list[SourceKey]] = Field(
        default_factory=dict,
        description="per service, the data sources (tenant/name) whose polling interval"
        " follows its frequency",
    )


class SourceKnobs:
    """Turns the polling interval of each service's sources (``[tuning] sources``) with its
    published frequency (see :func:`~eventcenter.domain.adjustment.polling_load_factor`)."""

    def __init__(self, settings: CenterTuningSettings, sources: SourceManager) -> None:
        self.settings = settings
        self.sources = sources

    def __call__(self, adjustment: Adjustment) -> None:
        keys = self.settings.sources.get(adjustment.service, [])
        if not keys:
            return
        factor = polling_load_factor(self.settings.config, adjustment)
        for key in keys:
            tenant, name = key.split("/", 1)
            try:
                self.sources.control(tenant, name).set_load_factor(factor)
            except EventCenterError as error:
                log.warning(
                    "tuning %s: cannot set the polling load factor of source %s: %s",
                    adjustment.service,
                    key,
                    error,
                )


class TunedFrequency:
    """The :class:`~eventcenter.domain.ports.FrequencyPort` over the tuning workflow: a data
    source listed in ``[tuning] sources`` is slowed by lowering the frequency of the tuned
    service(s) it follows (the source's polling then follows the published rate through
    :class:`SourceKnobs`), so healing and tuning turn one knob, in one record."""

    def __init__(self, settings: CenterTuningSettings, workflow: TuningWorkflow) -> None:
        self.settings = settings
        self.workflow = workflow

    def services(self, tenant: str, source: str) -> list[str]:
        """The services whose ``[tuning] sources`` name ``tenant/source``."""
        key = f"{tenant}/{source}"
        return [service for service, keys in self.settings.sources.items() if key in keys]

    async def reduce(
        self, tenant: str, source: str, *, factor: float, reason: str, correlation_id: str
    ) -> str | None:
        done = []
        for service in self.services(tenant, source):
            adjustment = await self.workflow.reduce_frequency(
                service, factor=factor, reason=reason, correlation_id=correlation_id, tenant=tenant
            )
            if adjustment is not None:
                done.append(
                    _described(adjustment, polling_load_factor(self.settings.config, adjustment))
                )
        return "; ".join(done) or None


def _described(adjustment: Adjustment, load_factor: float) -> str:
    service = adjustment.service
    if adjustment.paused:
        return f"{service} is paused: it resumes at the reduced rate"
    if not adjustment.changed:
        return f"{service} kept at {adjustment.target:.4g} req/s (no lower within its bounds)"
    return (
        f"{service} reduced to {adjustment.target:.4g} req/s (version {adjustment.version});"
        f" polling load factor {load_factor:g}"
    )
