"""Escalation as the config file declares it: sinks, which tenant uses which, re-notification.

One ``[escalation]`` table (the center embeds :class:`EscalationSettings` in its settings)::

    [escalation]
    default = ["log", "ops"]              # sinks of every tenant without its own list
    tenants = { acme = ["acme-pager"] }   # a tenant's own list replaces the default

    [[escalation.sinks]]
    kind = "webhook"
    name = "ops"
    url = "https://ops.example.com/hooks/eventcenter"
    secret = "..."                        # shared with the receiver; at least 16 characters
    timeout = "10s"                       # one request, connecting included
    connect_timeout = "5s"
    retries = 4                           # after the first try: 429, 5xx, timeouts, refused
    backoff_base = "500ms"                # first wait; doubles, jittered, up to backoff_max
    backoff_max = "30s"
    retry_after_max = "5m"                # a longer Retry-After gives up on this sending

    [[escalation.sinks]]
    kind = "log"
    name = "log"                          # present even when not declared
    level = "WARNING"

    [escalation.renotify]
    after = "30m"                         # first reminder of an unanswered case
    factor = 2.0                          # each following wait grows by this (1: steady)
    max_wait = "4h"
    max_renotifications = 5               # then it stays escalated, silently

Sinks registered in code (a callback) may be named in ``default`` and ``tenants`` too; names
are checked against every sink when the escalator is built
(:meth:`eventcenter.healing.escalation.Escalator.from_settings`), which is also where a webhook
secret that is too short is refused: a pydantic error would print the value it refused.
The secret never shows in a repr, a dump or a log line (``SecretStr``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from eventcenter.domain.durations import parse_duration
from eventcenter.domain.escalation import RenotifyPolicy
from eventcenter.domain.event import NAME_PATTERN, NAME_RULE

__all__ = [
    "SINK_NAME_PATTERN",
    "EscalationSettings",
    "LogSinkSettings",
    "RenotifySettings",
    "SinkSettings",
    "WebhookSinkSettings",
]

SINK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""A sink's name: 1-64 characters out of a-z 0-9 _ -, starting with a letter or digit."""

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration: a number of seconds or text like ``"30s"``, ``"5m"``, ``"1h30m"``."""


class WebhookSinkSettings(BaseModel):
    """A webhook that receives each notice as a signed JSON POST (see
    :class:`eventcenter.healing.escalation.WebhookSink`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["webhook"] = "webhook"
    name: str = Field(pattern=SINK_NAME_PATTERN, description="the sink's name")
    url: AnyHttpUrl = Field(description="where notices are POSTed (http or https)")
    secret: SecretStr = Field(
        description="HMAC-SHA256 key shared with the receiver; at least 16 characters"
    )
    timeout: Seconds = Field(10.0, gt=0, description="seconds one request may take in all")
    connect_timeout: Seconds = Field(5.0, gt=0, description="seconds to connect")
    retries: int = Field(4, ge=0, le=20, description="tries after the first")
    backoff_base: Seconds = Field(0.5, gt=0, description="seconds before the first retry")
    backoff_max: Seconds = Field(30.0, gt=0, description="the longest wait between tries")
    retry_after_max: Seconds = Field(
        300.0,
        ge=0,
        description="the longest Retry-After honoured; a longer one ends this sending",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.backoff_max < self.backoff_base:
            raise ValueError(
                f"backoff_max ({self.backoff_max:g} s) must be at least backoff_base"
                f" ({self.backoff_base:g} s)"
            )
        if self.connect_timeout > self.timeout:
            raise ValueError(
                f"connect_timeout ({self.connect_timeout:g} s) must not exceed timeout"
                f" ({self.timeout:g} s), the time one request may take in all"
            )
        return self


class LogSinkSettings(BaseModel):
    """The log sink: one structured record per notice (see
    :class:`eventcenter.healing.escalation.LogSink`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["log"] = "log"
    name: str = Field("log", pattern=SINK_NAME_PATTERN, description="the sink's name")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "WARNING", description="level of the record"
    )
    logger: str = Field(
        "eventcenter.escalation", min_length=1, description="name of the logger written to"
    )


SinkSettings = Annotated[WebhookSinkSettings | LogSinkSettings, Field(discriminator="kind")]


class RenotifySettings(BaseModel):
    """When an unanswered case reminds its people again (:class:`RenotifyPolicy`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    after: Seconds = Field(1800.0, gt=0, description="seconds to the first reminder")
    factor: float = Field(2.0, ge=1.0, description="growth of each following wait (1: steady)")
    max_wait: Seconds = Field(4 * 3600.0, gt=0, description="the longest wait")
    max_renotifications: int = Field(5, ge=0, le=1000, description="reminders at most")

    @model_validator(mode="after")
    def _wait_bounds(self) -> Self:
        if self.max_wait < self.after:
            raise ValueError(
                f"max_wait ({self.max_wait:g} s) must be at least after ({self.after:g} s)"
            )
        return self

    def policy(self) -> RenotifyPolicy:
        return RenotifyPolicy(
            after=self.after,
            factor=self.factor,
            max_wait=self.max_wait,
            max_renotifications=self.max_renotifications,
        )


def _sink_names(where: str, names: list[str]) -> list[str]:
    if not names:
        raise ValueError(f"{where} names no sink: an escalated case would reach nobody")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{where} names sink {name!r} twice")
        seen.add(name)
    return names


class EscalationSettings(BaseModel):
    """The ``[escalation]`` table: the sinks, the default selection, per-tenant selections
    and the re-notification policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sinks: list[SinkSettings] = Field(
        default_factory=list, description="declared sinks; a 'log' sink exists even if absent"
    )
    default: list[str] = Field(
        default_factory=lambda: ["log"],
        description="sinks of every tenant that has no list of its own",
    )
    tenants: dict[str, list[str]] = Field(
        default_factory=dict, description="a tenant's own sinks, replacing the default"
    )
    renotify: RenotifySettings = Field(default_factory=RenotifySettings)

    @field_validator("sinks")
    @classmethod
    def _unique_names(cls, value: list[SinkSettings]) -> list[SinkSettings]:
        seen: dict[str, int] = {}
        for index, sink in enumerate(value):
            if sink.name in seen:
                raise ValueError(
                    f"sink {sink.name!r} is declared twice (sinks[{seen[sink.name]}] and"
                    f" sinks[{index}])"
                )
            seen[sink.name] = index
        return value

    @field_validator("default")
    @classmethod
    def _default_reaches_someone(cls, value: list[str]) -> list[str]:
        return _sink_names("default", value)

    @field_validator("tenants")
    @classmethod
    def _tenant_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for tenant, names in value.items():
            if not NAME_PATTERN.fullmatch(tenant) or ".." in tenant:
                raise ValueError(f"tenant {tenant!r}: a tenant name {NAME_RULE}")
            _sink_names(f"tenant {tenant!r}", names)
        return value
