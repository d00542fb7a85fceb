"""The center's configuration: validated once at the edge, then passed to whatever needs it.

Values come from four places, the first that sets a field wins:

1. arguments (``CenterSettings.load(name="orders")`` or ``CenterSettings(name="orders")``);
2. environment variables ``EVENTCENTER_<FIELD>``, nested with ``__``
   (``EVENTCENTER_DATABASE_URL``, ``EVENTCENTER_PROCESSOR__WORKERS=8``);
3. a TOML file, read only by ``CenterSettings.load``: its ``config_file`` argument, else the file
   named by ``EVENTCENTER_CONFIG``, else ``./eventcenter.toml`` when it exists;
4. the defaults, which work on a laptop (SQLite under ``./data``).

Nested tables are merged key by key across sources: ``EVENTCENTER_PROCESSOR__WORKERS`` changes
``workers`` and keeps the file's other ``[processor]`` keys. An invalid value raises
``pydantic.ValidationError`` naming the field (``processor.workers``); a config file that is
named but missing, or is not valid TOML, raises ``ConfigurationError`` naming the path. Unknown
keys are errors too, so a typo does not silently fall back to a default. The data sources
(``[[sources]]`` tables, :mod:`eventcenter.center.source_config`) are one list, taken whole
from the first place that sets it (``EVENTCENTER_SOURCES`` holds it as JSON); an error in one
names its place (``sources.0.events.stream``).

A complete ``eventcenter.toml`` (every key, with its default)::

    # The center's name: 1-24 characters out of a-z 0-9 _ -
    name = "default"
    # Where the center keeps its files (the default SQLite database is <data_dir>/center.db)
    data_dir = "./data"
    # An SQLAlchemy URL: sqlite:///... or postgresql+psycopg2://... (postgresql:// is accepted);
    # leave it out to use SQLite under data_dir
    # database_url = "postgresql+psycopg2://eventcenter:secret@127.0.0.1:5432/eventcenter"
    # Seconds start() waits as a standby while another process is the active center of this
    # name on this store; 0 refuses at once
    standby_wait = 0.0
    # At the first start in a process, freeze what exists then (gc.freeze): the garbage
    # collector's full collections then skip the imported modules and classes
    freeze_heap = true

    [processor]
    max_queued = 10000                    # events admitted but not yet handled
    publish_timeout = 5.0                 # seconds publish waits for queue space; 0 fails at once
    workers = 32                          # deliveries handled at the same time
    max_in_flight_per_subscription = 8    # a subscription's concurrent deliveries
    max_attempts = 5                      # tries per delivery before dead-lettering
    backoff_base = 0.05                   # seconds before the first retry
    backoff_max = 5.0                     # cap on one retry delay
    dedupe_window = 600.0                 # seconds an event id is remembered; 0 turns dedupe off
    dedupe_max_ids = 100000               # ids remembered at most (oldest go)
    max_wait_high = 0.25                  # ageing bound for HIGH, seconds
    max_wait_normal = 0.5                 # ageing bound for NORMAL, seconds
    max_wait_low = 1.0                    # ageing bound for LOW, seconds
    shutdown_timeout = 10.0               # seconds stop() waits for running work
    shutdown_grace = 1.0                  # seconds cancelled handlers get to unwind
    handler_timeout = 30.0                # seconds one handler attempt may run
    timeout_tick = 0.1                    # seconds between checks for attempts past it
    memory_window = 1000                  # a subscription's deliveries held in memory
    max_backlog = 100000                  # a subscription's unfinished deliveries at most
    max_key_length = 200                  # characters in an idempotency key
    load_test_cooldown = 0.0              # seconds between two load tests
    route_cache_size = 10000              # event types whose routes are cached (LRU)
    metrics_max_types = 1000              # event types counted by name; the rest as '(other)'
    metrics_max_tenants = 1000            # tenants counted by name; the rest as '(other)'
    metrics_max_series = 10000            # (type, tenant, priority) counters kept at most

    [processor.limits]
    max_type_length = 128                 # characters in an event's type
    max_name_length = 128                 # characters in source, tenant
    max_correlation_id_length = 128       # characters in correlation_id (at least 36)
    max_version_length = 64               # characters in version
    max_payload_bytes = 65536             # bytes of the payload as compact JSON
    max_metadata_bytes = 8192             # bytes of metadata as compact JSON
    max_depth = 16                        # nesting depth of payload and metadata (1-128)
    max_body_bytes = 262144               # bytes of one raw JSON envelope (HTTP body)
    max_batch_bytes = 4194304             # bytes of a raw JSON array of envelopes
    max_batch_events = 1000               # envelopes in one JSON batch

    [recording]
    batch_max = 500                       # decisions saved in one transaction at most
    snapshot_interval = 100               # events between snapshots of the processor log
    cache_size = 1000                     # aggregates kept in the LRU cache; 0 turns it off
    key_retention = 604800.0              # seconds idempotency keys and decision causes are kept

    [projections]
    # The read model behind audit, explain and the API.
    interval = 1.0                        # seconds between catch-ups while the center runs
    page = 500                            # events per read-model transaction
    max_lag = 10000                       # events behind the log before /readyz is not ready

    [http]
    # The HTTP server of ``eventcenter run`` (or ``serve``): ingest (POST /events), webhook
    # push sources, RCA cases, dead letters, sources, /healthz and /readyz. Loopback by
    # default: put a proxy with TLS in front to expose it.
    enabled = true                        # false: run the center and its sources without it
    host = "127.0.0.1"                    # address to listen on ("0.0.0.0": every interface)
    port = 8080                           # 0 picks a free port (printed at start)
    publish_wait = 30.0                   # seconds a request waits for its events to be durable
    retry_after = 1                       # seconds a 503 answer tells the client to wait
    shutdown_timeout = 10                 # seconds requests in progress get to finish at stop
    auth = "keys"                         # API keys (eventcenter keys create); "none": every
                                          # caller is admin, allowed on a loopback host only
    key_cache = 5.0                       # seconds a key looked up is trusted (a revoked key
                                          # is refused within this)
    public_metrics = false                # true: GET /metrics without an admin key

    [healing]
    # Self-healing: failures become RCA cases, healed (each action re-checked) or escalated
    enabled = true                        # false: no analysis, no healing, no escalation
    epsilon = 0.1                         # share of strategy choices that explore
    verify_timeout = 30.0                 # seconds a healing action's re-check may take
    max_healing = 10                      # cases healed at the same time
    answers_every = 2.0                   # seconds between looks for rca ack / resolve answers

    [healing.strategies]
    # per built-in strategy, its attempts in one case and cool-down per source, e.g.
    # restart_stream = { max_attempts = 3, cooldown = "2m" }; left out: the strategy's own
    # (restart_stream, reconnect, rerun_reconciliation, reduce_frequency: 2 attempts, 60 s;
    # force_polling: 1, 60 s; recover_service: 3, 30 s)

    [healing.escalation]
    default = ["log"]                     # sinks of every tenant without its own list
    tenants = {}                          # a tenant's own list: { acme = ["acme-pager"] }
    # sinks: [[healing.escalation.sinks]] tables, kind "webhook" or "log"; none by default
    # (see eventcenter.healing.escalation_config)

    [healing.escalation.renotify]
    after = 1800.0                        # seconds to the first reminder of an unanswered case
    factor = 2.0                          # growth of each following wait (1: steady)
    max_wait = 14400.0                    # the longest wait
    max_renotifications = 5               # reminders at most
    # [healing.health]: health checks (defaults, recovery, [[healing.health.checks]]); none by
    # default (see eventcenter.center.healing.HealthSettings)

    [tuning]
    # Load-test driven tuning: a deployment.changed event measures the new signature (unless
    # its capacity is on record), computes each agent's frequency and sends it
    tester = "locust"                     # "none": never load-test (recorded capacities only)
    slo_p95 = 0.2                         # seconds: p95 latency a sustainable load keeps
    max_error_rate = 0.01                 # share of failed requests a sustainable load keeps
    # max_age = "7d"                      # a recorded capacity older than this is measured again
    settle_after = 60.0                   # seconds without a latency spike before stable again
    retry_after = 30.0                    # seconds before a run the state machine refused retries
    dispatch_timeout = 5.0                # seconds one POST to an agent may take
    dispatch_attempts = 4                 # tries per agent and version (back-off between)
    sources = {}                          # per service, sources polled in step with it:
                                          # { orders = ["acme/orders"] }
    # adjust: strategies and limits, e.g. [tuning.adjust] strategy = { strategy = "aimd",
    # latency_limit = "200ms" } (see eventcenter.domain.adjustment.TuningConfig); default:
    # headroom, 80 % of the capacity, scaled down when latency passes slo_p95

    [tuning.plan]
    # The load test's open-model step search (see eventcenter.domain.step_plan)
    start_rate = 10.0                     # requests/s of the first step
    growth = 1.5                          # factor between two ramp steps
    max_rate = 10000.0                    # the highest rate ever offered
    min_rate = 1.0                        # the lowest rate a ramp down offers
    resolution = 0.05                     # bisection stops at this share of the knee
    repeats = 1                           # runs of every rate
    confirm = 0                           # extra runs a failing rate may get
    warmup = 2.0                          # seconds at a step's rate before measuring
    hold = 10.0                           # seconds a step is measured over
    max_steps = 40                        # steps of one search at most
    max_duration = 600.0                  # seconds one search may take (a hard limit)

    [tuning.regression]
    max_drop = 0.2                        # a new signature this share below the previous one
                                          # is recorded and published as capacity.regressed

    # Data sources: one [[sources]] table per source of a tenant; none by default (shown
    # commented). Every key but tenant, name and one path has the default shown. Durations are
    # seconds or text like "30s", "5m", "1h30m". Connector tables take kind plus that
    # connector's options (see eventcenter.center.source_config); nothing connects before the
    # center starts.
    # [[sources]]
    # tenant = "acme"                       # the tenant the source's events belong to
    # name = "orders"                       # unique within the tenant
    # # push path: redis_stream (stream, group, consumer, url, ...), nats_jetstream (stream,
    # # subject, durable, url, ...), pg_notify (url, table, channel, ...) or webhook (items
    # # POSTed to /sources/<tenant>/<name>/webhook of eventcenter run; max_pending)
    # events = { kind = "redis_stream", stream = "orders-events", group = "eventcenter" }
    # poll = { kind = "http_poll", url = "http://127.0.0.1:9000/orders?since={cursor}" }
    # reconcile = { kind = "http_list", url = "http://127.0.0.1:9000/orders" }   # optional
    # failure_threshold = 3                 # consecutive push failures that leave push
    # success_threshold = 5                 # consecutive push successes that come back
    # max_hysteresis = 10                   # ceiling flapping raises both thresholds to
    # event_timeout = "30s"                 # push silence counted as one failure
    # polling_interval = "5m"               # rhythm of polling while it runs
    # min_polling_interval = "30s"          # bounds of a tuned interval (default: a tenth
    # max_polling_interval = "50m"          #   and ten times polling_interval)
    # reconciliation_interval = "15m"       # rhythm of the listing, when reconcile is given
    # flap_window = "5m"                    # flap_switches switches within flap_window are
    # flap_switches = 4                     #   flapping: thresholds rise one step and
    # cool_down = "1m"                      #   returns towards push wait this long
    # decay_period = "10m"                  # a quiet period that lowers thresholds a step
    # batch = 100                           # push messages asked for per receive
    # extra = { team = "orders" }           # free-form, shown by eventcenter sources show
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from eventcenter.center.healing import HealingSettings
from eventcenter.center.source_config import SourceSettings
from eventcenter.center.tuning import CenterTuningSettings
from eventcenter.domain.errors import ConfigurationError
from eventcenter.handlers.config import ProcessorSettings

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_FILE",
    "CenterSettings",
    "HttpSettings",
    "RecordingSettings",
    "SourceSettings",
]

CONFIG_ENV_VAR = "EVENTCENTER_CONFIG"
"""Environment variable naming the TOML file when ``load`` is given none."""

DEFAULT_CONFIG_FILE = Path("eventcenter.toml")
"""Read from the working directory when neither the argument nor the variable names a file."""

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIX = "postgresql+psycopg2://"
_POSTGRES_PLAIN_PREFIX = "postgresql://"

# The TOML file of the ``load`` call in progress. Settings sources are chosen in a classmethod
# (``settings_customise_sources``) that receives no per-call arguments; a context variable set
# and reset around one construction carries the path there without any state outliving the call.
_toml_file: ContextVar[Path | None] = ContextVar("eventcenter_toml_file", default=None)


class RecordingSettings(BaseModel):
    """How decisions are made durable in the event store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_max: int = Field(500, ge=1, description="decisions saved in one transaction at most")
    snapshot_interval: int = Field(
        100, ge=2, description="events between snapshots of the processor log"
    )
    cache_size: int = Field(
        1000, ge=0, description="aggregates kept in the LRU cache; 0 turns the cache off"
    )
    key_retention: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="seconds idempotency keys and decision causes are remembered",
    )


class ProjectionSettings(BaseModel):
    """The read model: the notification log followed into SQL tables (audit, explain, API)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval: float = Field(
        1.0, gt=0, description="seconds between catch-ups of the read model while running"
    )
    page: int = Field(500, ge=1, le=10_000, description="events per read-model transaction")
    max_lag: int = Field(
        10_000,
        ge=0,
        description="events the read model may be behind the log before /readyz says not ready",
    )


class HttpSettings(BaseModel):
    """The HTTP server that ``eventcenter run`` starts next to the center."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="serve HTTP; false runs the center without it")
    host: str = Field(
        "127.0.0.1", min_length=1, description="address to listen on; loopback by default"
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one")
    publish_wait: float = Field(
        30.0,
        gt=0,
        description="seconds a request waits for the center to make its events durable before"
        " it is answered 503 (they may still be stored: retry with the same key)",
    )
    retry_after: int = Field(
        1, ge=0, description="seconds in the Retry-After header of a 503 answer"
    )
    shutdown_timeout: int = Field(
        10, ge=0, description="seconds requests in progress get to finish when stopping"
    )
    auth: Literal["keys", "none"] = Field(
        "keys",
        description="'keys': every endpoint but health and readiness needs an API key;"
        " 'none': every caller is admin (only on a loopback host)",
    )
    key_cache: float = Field(
        5.0,
        ge=0,
        le=300,
        description="seconds an API key looked up is trusted before it is looked up again: a"
        " revoked key is refused within this",
    )
    public_metrics: bool = Field(
        False, description="serve GET /metrics without an admin key (for a scraper on loopback)"
    )

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> Self:
        if self.auth == "none" and self.enabled and not is_loopback(self.host):
            raise PydanticCustomError(
                "auth_off_beyond_loopback",
                'auth = "none" makes every caller an admin, so it is refused on host {host}:'
                ' use a loopback host (127.0.0.1, ::1, localhost) or auth = "keys" with'
                " eventcenter keys create",
                {"host": repr(self.host)},
            )
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class CenterSettings(BaseSettings):
    """Everything one center needs to start. Build it with ``load`` at the edge, pass it inward."""

    model_config = SettingsConfigDict(
        env_prefix="EVENTCENTER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    name: str = Field(
        "default",
        pattern=r"^[a-z0-9_-]{1,24}$",
        description="the center's name: 1-24 characters out of a-z 0-9 _ -",
    )
    data_dir: Path = Field(
        Path("./data"), description="where the center keeps its files; made absolute on load"
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL (sqlite:///... or postgresql+psycopg2://...);"
        " None means SQLite under data_dir",
    )
    standby_wait: float | None = Field(
        0.0,
        ge=0,
        description="seconds start() waits as a standby while another process is the active"
        " center of this name; 0 refuses at once, None waits for ever",
    )
    freeze_heap: bool = Field(
        True,
        description="at the first start in a process, move the objects that exist then"
        " (modules, classes, settings) out of the garbage collector's reach (gc.freeze), so"
        " that the full collections a busy center triggers skip them",
    )
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    projections: ProjectionSettings = Field(default_factory=ProjectionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    healing: HealingSettings = Field(default_factory=HealingSettings)
    tuning: CenterTuningSettings = Field(default_factory=CenterTuningSettings)
    sources: list[SourceSettings] = Field(
        default_factory=list,
        description="data sources the center registers and runs ([[sources]] tables)",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved against the working directory at load time, so a later chdir changes nothing.
        return value.expanduser().resolve()

    @field_validator("sources")
    @classmethod
    def _one_table_per_source(cls, value: list[SourceSettings]) -> list[SourceSettings]:
        seen: dict[str, int] = {}
        for index, source in enumerate(value):
            if source.key in seen:
                raise ValueError(
                    f"source '{source.key}' is declared twice (sources[{seen[source.key]}]"
                    f" and sources[{index}])"
                )
            seen[source.key] = index
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(_POSTGRES_PLAIN_PREFIX):
            value = _POSTGRES_PREFIX + value.removeprefix(_POSTGRES_PLAIN_PREFIX)
        if value.startswith(_SQLITE_PREFIX) or value.startswith(_POSTGRES_PREFIX):
            return value
        scheme = value.split("://", 1)[0] if "://" in value else value
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use {_SQLITE_PREFIX}<path>"
            f" or {_POSTGRES_PREFIX}<user>@<host>:<port>/<db> ({_POSTGRES_PLAIN_PREFIX} is"
            " accepted and normalised)"
        )

    @property
    def database_file(self) -> Path:
        """The SQLite file used when ``database_url`` is not set."""
        return self.data_dir / "center.db"

    @property
    def effective_url(self) -> str:
        """The SQLAlchemy URL to connect to: ``database_url``, else SQLite under ``data_dir``.

        Call ``ensure_data_dir()`` before connecting to the default SQLite database: SQLite
        does not create missing directories.
        """
        if self.database_url is not None:
            return self.database_url
        return f"{_SQLITE_PREFIX}{self.database_file}"

    @property
    def shown_url(self) -> str:
        """The URL for messages and logs: its password masked."""
        from sqlalchemy.engine import make_url

        return make_url(self.effective_url).render_as_string(hide_password=True)

    def ensure_data_dir(self) -> Path:
        """Create ``data_dir`` (and its parents) if missing; return it.

        For an SQLite file named by ``database_url``, its directory is created too: SQLite
        does not create missing directories.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url = self.effective_url
        if url.startswith(_SQLITE_PREFIX) and ":memory:" not in url:
            path = url.removeprefix(_SQLITE_PREFIX).split("?", 1)[0]
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Self:
        """Read the settings from arguments, environment, TOML file and defaults, in that order.

        ``config_file`` (or the file ``EVENTCENTER_CONFIG`` names) must exist;
        ``./eventcenter.toml`` is read only when present. Raises ``ConfigurationError`` for a
        missing or malformed file and ``pydantic.ValidationError`` for an invalid value.
        """
        path = _config_path(None if config_file is None else Path(config_file))
        token = _toml_file.set(path)
        try:
            return cls(**overrides)
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(f"config file {path} is not valid TOML: {error}") from None
        finally:
            _toml_file.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then environment, then the TOML file of ``load`` (no .env, no secrets)."""
        path = _toml_file.get()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=path)


def _config_path(config_file: Path | None) -> Path | None:
    """The TOML file to read: the argument, else ``$EVENTCENTER_CONFIG``, else the default if any.

    A file named by the caller or the environment must exist; the default one is optional.
    """
    if config_file is None and os.environ.get(CONFIG_ENV_VAR):
        config_file = Path(os.environ[CONFIG_ENV_VAR])
    if config_file is None:
        return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None
    if not config_file.is_file():
        raise ConfigurationError(f"config file {config_file} does not exist or is not a file")
    return config_file
