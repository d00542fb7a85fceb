"""Data sources declared in the config file: ``[[sources]]`` tables, checked, then built.

One table per source of a tenant::

    [[sources]]
    tenant = "acme"
    name = "orders"
    events = { kind = "redis_stream", stream = "orders-events", group = "eventcenter" }
    poll = { kind = "http_poll", url = "http://127.0.0.1:9000/orders?since={cursor}" }
    reconcile = { kind = "http_list", url = "http://127.0.0.1:9000/orders" }
    failure_threshold = 3
    event_timeout = "30s"

The policy keys are :class:`~eventcenter.sources.source.DataSource`'s, with its defaults;
durations are seconds or text such as ``"30s"``, ``"5m"``, ``"1h30m"``
(:mod:`eventcenter.domain.durations`).

A connector table has ``kind`` plus that connector's options, checked against the keyword
arguments of its factory (:mod:`eventcenter.sources.connectors`), so a typo is an error naming
it (``sources.0.events.strem``) instead of an option silently left at its default. Options
that are seconds take durations too. Push (``events``): ``redis_stream``, ``nats_jetstream``,
``pg_notify``, ``webhook`` (items POSTed to ``/sources/<tenant>/<name>/webhook`` of
``eventcenter run``); poll: ``http_poll`` (``url`` holds ``{cursor}``); listing
(``reconcile``): ``http_list``. Options that only Python can give (an httpx client, a
callable, an async iterator) have no TOML form: register such sources in code
(``center.sources.register(DataSource(...))``, e.g. from ``eventcenter run --handlers``).

Everything is checked when the settings load, connectors included: each one is built once
then (building only stores its options; nothing connects before the center starts the
source), so an error a connector would raise shows at load time, naming its table.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from eventcenter.domain.durations import parse_duration
from eventcenter.domain.event import NAME_PATTERN, NAME_RULE
from eventcenter.domain.hysteresis import MAX_FLAP_SWITCHES, HysteresisConfig
from eventcenter.sources.source import NAME_MAX, DataSource
from eventcenter.sources.webhook import WebhookPath

__all__ = [
    "ConnectorKind",
    "ConnectorSettings",
    "ListConnector",
    "PollConnector",
    "PushConnector",
    "SourceSettings",
    "connector_kinds",
    "webhook",
]

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration: a number of seconds or text like ``"30s"``, ``"5m"``, ``"1h30m"``."""


def webhook(tenant: str, source: str, *, max_pending: int = 10_000) -> WebhookPath:
    """The webhook push path of a source: its items are POSTed to the center's HTTP server."""
    return WebhookPath(tenant, source, max_pending=max_pending)


@dataclass(frozen=True)
class ConnectorKind:
    """A connector as the config file names it: its factory and the options it takes.

    ``supplied`` are arguments the source gives (its tenant and name), ``code_only`` those
    only Python can give; neither is an option of the table. ``aliases`` maps a table key to
    the factory's parameter (``url`` for ``http_poll``'s ``url_template``).
    """

    name: str
    role: str
    factory: Callable[..., Any]
    supplied: tuple[str, ...] = ()
    code_only: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def parameters(self) -> dict[str, inspect.Parameter]:
        """The factory's parameters that a table may set, by parameter name."""
        skipped = {*self.supplied, *self.code_only}
        signature = inspect.signature(self.factory)
        return {name: p for name, p in signature.parameters.items() if name not in skipped}

    @property
    def keys(self) -> list[str]:
        """The keys a table of this kind may have besides ``kind`` (for messages)."""
        renamed = {parameter: key for key, parameter in self.aliases.items()}
        return [renamed.get(name, name) for name in self.parameters]

    @cached_property
    def _options_model(self) -> type[BaseModel]:
        hints = typing.get_type_hints(self.factory)
        fields: dict[str, Any] = {}
        for name, parameter in self.parameters.items():
            hint = hints[name]
            if hint is float:
                hint = Seconds
            elif hint == float | None:
                hint = Seconds | None
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (hint, default)
        config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=False)
        model: type[BaseModel] = create_model(f"{self.name}_options", __config__=config, **fields)
        return model

    def check(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """The table's options as the factory's keyword arguments, converted and checked.

        Raises ValidationError whose locations are the table's keys: unknown keys first (a
        typo also explains a missing key), then wrong or missing values.
        """
        unknown = [key for key in table if self._parameter(key) is None]
        if unknown:
            known = ", ".join(self.keys) or "none"
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError(
                        "unknown_option",
                        "unknown option of {kind} (its options: {known})",
                        {"kind": self.name, "known": known},
                    ),
                    loc=(key,),
                    input=table[key],
                )
                for key in unknown
            ]
            raise ValidationError.from_exception_data(self.name, errors)
        given: dict[str, Any] = {}
        keys: dict[str, str] = {}
        for key, value in table.items():
            parameter = self._parameter(key)
            assert parameter is not None
            if parameter in given:
                message = "{key} and {other} are one option: give one of them"
                raise _error(key, message, other=keys[parameter])
            given[parameter] = value
            keys[parameter] = key
        options = self._options_model.model_validate(given)
        return {name: getattr(options, name) for name in self.parameters}

    def build(self, options: Mapping[str, Any], tenant: str, source: str) -> Any:
        """A new connector with ``options`` (checked by :meth:`check`); nothing connects."""
        supplied = {"tenant": tenant, "source": source}
        return self.factory(**{name: supplied[name] for name in self.supplied}, **options)

    def _parameter(self, key: str) -> str | None:
        """The factory parameter a table key sets (None: not an option of this kind)."""
        name = self.aliases.get(key, key)
        return name if name in self.parameters else None


def _error(key: str, message: str, **context: Any) -> ValidationError:
    return ValidationError.from_exception_data(
        "connector",
        [
            InitErrorDetails(
                type=PydanticCustomError("connector_option", message, {"key": key, **context}),
                loc=(key,),
                input=key,
            )
        ],
    )


@cache
def connector_kinds() -> dict[str, dict[str, ConnectorKind]]:
    """Every connector the config file can name, by role (``events``, ``poll``,
    ``reconcile``) and kind. Imported on first use: the client libraries load only when a
    configuration declares a source."""
    from eventcenter.sources.connectors import (
        http_list,
        http_poll,
        nats_jetstream,
        pg_notify,
        redis_stream,
    )

    kinds = [
        ConnectorKind("redis_stream", "events", redis_stream),
        ConnectorKind("nats_jetstream", "events", nats_jetstream),
        ConnectorKind("pg_notify", "events", pg_notify),
        ConnectorKind("webhook", "events", webhook, supplied=("tenant", "source")),
        ConnectorKind(
            "http_poll", "poll", http_poll, code_only=("client",), aliases={"url": "url_template"}
        ),
        ConnectorKind("http_list", "reconcile", http_list, code_only=("client",)),
    ]
    found: dict[str, dict[str, ConnectorKind]] = {"events": {}, "poll": {}, "reconcile": {}}
    for kind in kinds:
        found[kind.role][kind.name] = kind
    return found


class ConnectorSettings(BaseModel):
    """One connector table: ``kind`` and that connector's options (checked, converted).

    Written and serialised flat, as in the file: ``{kind = "redis_stream", stream = ...}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: ClassVar[str] = ""

    kind: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_table(cls, value: Any) -> Any:
        if isinstance(value, ConnectorSettings):
            return value
        if not isinstance(value, Mapping):
            raise PydanticCustomError(
                "connector_table",
                "a connector is a table: kind plus its options, e.g."
                ' { kind = "webhook" }; {role} connectors: {kinds}',
                {"role": cls.role, "kinds": ", ".join(connector_kinds()[cls.role])},
            )
        kinds = connector_kinds()[cls.role]
        kind = value.get("kind")
        if kind not in kinds:
            raise _kind_error(cls.role, kind, kinds)
        table = {key: option for key, option in value.items() if key != "kind"}
        options = kinds[kind].check(table)
        try:
            kinds[kind].build(options, "tenant", "source")  # the connector's own checks
        except ValueError as error:  # ConfigurationError is one
            raise PydanticCustomError("connector", "{error}", {"error": str(error)}) from None
        return {"kind": kind, "options": options}

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options}

    @property
    def connector(self) -> ConnectorKind:
        return connector_kinds()[self.role][self.kind]

    def build(self, tenant: str, source: str) -> Any:
        """A new connector object for source ``tenant/source``; nothing connects yet."""
        return self.connector.build(self.options, tenant, source)


def _kind_error(role: str, kind: Any, kinds: Mapping[str, ConnectorKind]) -> ValidationError:
    known = ", ".join(kinds)
    if kind is None:
        message = "a connector table needs a kind: one of {known}"
    else:
        message = "unknown {role} connector '{kind}': use one of {known}"
        for other, by_name in connector_kinds().items():
            if other != role and kind in by_name:
                message += f" ({kind} is a connector for {other} = ...)"
    return ValidationError.from_exception_data(
        "connector",
        [
            InitErrorDetails(
                type=PydanticCustomError(
                    "connector_kind", message, {"role": role, "kind": kind, "known": known}
                ),
                loc=("kind",),
                input=kind,
            )
        ],
    )


class PushConnector(ConnectorSettings):
    """``events = {...}``: the source's push path."""

    role: ClassVar[str] = "events"


class PollConnector(ConnectorSettings):
    """``poll = {...}``: the source's poll path."""

    role: ClassVar[str] = "poll"


class ListConnector(ConnectorSettings):
    """``reconcile = {...}``: the source's authoritative listing."""

    role: ClassVar[str] = "reconcile"


class SourceSettings(BaseModel):
    """One ``[[sources]]`` table: see the module docstring. Defaults are DataSource's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(description="the tenant whose events the source's items become")
    name: str = Field(description="the source's name, unique within its tenant")
    events: PushConnector | None = Field(None, description="the push path")
    poll: PollConnector | None = Field(None, description="the poll path")
    reconcile: ListConnector | None = Field(None, description="the authoritative listing")
    failure_threshold: StrictInt = Field(3, ge=1, description="push failures to leave push")
    success_threshold: StrictInt = Field(5, ge=1, description="push successes to come back")
    max_hysteresis: StrictInt = Field(10, ge=1, description="ceiling flapping raises them to")
    event_timeout: Seconds = Field(30.0, gt=0, description="push silence counted as a failure")
    polling_interval: Seconds = Field(300.0, gt=0, description="rhythm of polling")
    reconciliation_interval: Seconds = Field(900.0, gt=0, description="rhythm of listings")
    min_polling_interval: Seconds | None = Field(None, gt=0, description="default: a tenth")
    max_polling_interval: Seconds | None = Field(None, gt=0, description="default: ten times")
    flap_window: Seconds = Field(300.0, gt=0, description="window in which switches count")
    flap_switches: StrictInt = Field(
        4, ge=2, le=MAX_FLAP_SWITCHES, description="switches within flap_window that flap"
    )
    cool_down: Seconds = Field(60.0, gt=0, description="wait before returning after flapping")
    decay_period: Seconds = Field(600.0, gt=0, description="quiet time that lowers thresholds")
    batch: StrictInt = Field(100, ge=1, description="push messages asked for per receive")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="free-form, shown by eventcenter sources show"
    )

    @field_validator("tenant", "name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not 0 < len(value) <= NAME_MAX or not NAME_PATTERN.fullmatch(value) or ".." in value:
            raise ValueError(NAME_RULE)
        return value

    @model_validator(mode="after")
    def _works(self) -> Self:
        if self.events is None and self.poll is None:
            raise ValueError(
                f"source '{self.key}' has no path: give it events = {{ kind = ... }} (push),"
                " poll = { kind = ... } or both"
            )
        self.hysteresis()  # its own checks (max_hysteresis against the thresholds)
        interval = self.polling_interval
        low = self.min_polling_interval or interval / 10
        high = self.max_polling_interval or interval * 10
        if not low <= interval <= high:
            raise ValueError(
                f"source '{self.key}': polling_interval must lie between min_polling_interval"
                " and max_polling_interval"
            )
        return self

    @property
    def key(self) -> str:
        """``tenant/name``, as the CLI names the source."""
        return f"{self.tenant}/{self.name}"

    def hysteresis(self) -> HysteresisConfig:
        """The hysteresis policy's configuration for this source."""
        return HysteresisConfig(
            failure_threshold=self.failure_threshold,
            success_threshold=self.success_threshold,
            max_hysteresis=self.max_hysteresis,
            event_timeout=self.event_timeout,
            flap_window=self.flap_window,
            flap_switches=self.flap_switches,
            cool_down=self.cool_down,
            decay_period=self.decay_period,
        )

    def to_source(self) -> DataSource:
        """The source to register, with new connector objects (nothing connects until the
        center starts it). Call it once per center: connectors are not shared."""
        return DataSource(
            tenant=self.tenant,
            name=self.name,
            events=None if self.events is None else self.events.build(self.tenant, self.name),
            poll=None if self.poll is None else self.poll.build(self.tenant, self.name),
            reconcile=(
                None if self.reconcile is None else self.reconcile.build(self.tenant, self.name)
            ),
            failure_threshold=self.failure_threshold,
            success_threshold=self.success_threshold,
            max_hysteresis=self.max_hysteresis,
            event_timeout=self.event_timeout,
            polling_interval=self.polling_interval,
            reconciliation_interval=self.reconciliation_interval,
            min_polling_interval=self.min_polling_interval,
            max_polling_interval=self.max_polling_interval,
            flap_window=self.flap_window,
            flap_switches=self.flap_switches,
            cool_down=self.cool_down,
            decay_period=self.decay_period,
            batch=self.batch,
            extra=dict(self.extra),
        )
