"""Processor settings: queue bounds, concurrency, retries, dedupe window, ageing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventcenter.domain.event import EnvelopeLimits
from eventcenter.domain.priority import Priority


class ProcessorSettings(BaseModel):
    """Everything that tunes the EventProcessor. The defaults suit a laptop and a small service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_queued: int = Field(10_000, ge=1, description="events admitted but not yet handled")
    publish_timeout: float = Field(
        5.0, ge=0, description="seconds publish waits for queue space; 0 fails at once"
    )
    workers: int = Field(32, ge=1, le=4096, description="deliveries handled at the same time")
    max_in_flight_per_subscription: int = Field(
        8, ge=1, description="a subscription's concurrent deliveries (a slow one parks the rest)"
    )
    max_attempts: int = Field(5, ge=1, description="tries per delivery before dead-lettering")
    backoff_base: float = Field(0.05, gt=0, description="seconds before the first retry")
    backoff_max: float = Field(5.0, gt=0, description="cap on one retry delay")
    dedupe_window: float = Field(
        600.0, ge=0, description="seconds an event id is remembered; 0 turns dedupe off"
    )
    dedupe_max_ids: int = Field(100_000, ge=1, description="ids remembered at most (oldest go)")
    max_wait_high: float | None = Field(0.25, ge=0, description="ageing bound for HIGH, s")
    max_wait_normal: float | None = Field(0.5, ge=0, description="ageing bound for NORMAL, s")
    max_wait_low: float | None = Field(1.0, ge=0, description="ageing bound for LOW, s")
    shutdown_timeout: float = Field(
        10.0, ge=0, description="seconds stop() waits for running (and, in memory, queued) work"
    )
    shutdown_grace: float = Field(
        1.0, ge=0, description="seconds stop() then waits for cancelled handlers to unwind"
    )
    handler_timeout: float | None = Field(
        30.0, gt=0, description="seconds one handler attempt may run; None: no limit"
    )
    timeout_tick: float = Field(
        0.1, gt=0, le=5, description="seconds between checks for attempts past their timeout"
    )
    memory_window: int = Field(
        1000, ge=1, description="a subscription's deliveries held in memory (durable store)"
    )
    max_backlog: int = Field(
        100_000, ge=1, description="a subscription's unfinished deliveries (durable store)"
    )
    max_key_length: int = Field(200, ge=1, description="characters in an idempotency key")
    load_test_cooldown: float = Field(0.0, ge=0, description="seconds between two load tests")
    route_cache_size: int = Field(
        10_000, ge=1, description="event types whose routes are cached (least recently used go)"
    )
    metrics_max_types: int = Field(
        1000, ge=1, description="event types counted by name; the rest as '(other)'"
    )
    metrics_max_tenants: int = Field(
        1000, ge=1, description="tenants counted by name; the rest as '(other)'"
    )
    metrics_max_series: int = Field(
        10_000, ge=1, description="(type, tenant, priority) counters kept by name at most"
    )
    limits: EnvelopeLimits = Field(default_factory=EnvelopeLimits)

    @model_validator(mode="after")
    def _coherent(self) -> ProcessorSettings:
        if self.backoff_base > self.backoff_max:
            raise ValueError(
                f"backoff_base ({self.backoff_base}) must not exceed backoff_max"
                f" ({self.backoff_max})"
            )
        return self

    def max_wait(self) -> dict[Priority, float | None]:
        return {
            Priority.HIGH: self.max_wait_high,
            Priority.NORMAL: self.max_wait_normal,
            Priority.LOW: self.max_wait_low,
        }
