"""The center's load-test tuning, wired: its settings (``[tuning]``), the workflow of
:mod:`eventcenter.handlers.tuning` on the store, the Locust tester, the HTTP dispatcher with a
circuit breaker per agent, and a failed dispatch reported to the RCA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventcenter.domain.rate_strategies import Seconds
from eventcenter.handlers.tuning import TuningSettings


class CenterTuningSettings(TuningSettings):
    """``[tuning]``: the workflow's settings and how the center measures and dispatches."""

    tester: Literal["locust", "none"] = Field(
        "locust", description="load-test a new signature with Locust, or never (none)"
    )
    dispatch_timeout: Seconds = Field(
        5.0, gt=0, description="seconds one POST to an agent may take"
    )
    dispatch_attempts: int = Field(4, ge=1, le=20, description="tries per agent and version")
