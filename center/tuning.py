"""The center's load-test tuning, wired: its settings (``[tuning]``), the workflow of
:mod:`eventcenter.handlers.tuning` on the store, the Locust tester, the HTTP dispatcher with a
circuit breaker per agent, and a failed dispatch reported to the RCA."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from eventcenter.domain.adjustment import Adjustment, polling_load_factor
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.rate_strategies import Seconds
from eventcenter.handlers.tuning import TuningSettings
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
