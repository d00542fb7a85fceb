"""A data source as a user declares it: its paths and the policy's knobs.

```python
DataSource(
    tenant="acme", name="orders",
    events=redis_stream("orders-events", group="eventcenter"),
    poll=http_poll("http://127.0.0.1:9000/orders?since={cursor}"),
    reconcile=http_list("http://127.0.0.1:9000/orders"),
    failure_threshold=3, success_threshold=5, max_hysteresis=10,
    event_timeout="30s", polling_interval="5m", reconciliation_interval="15m",
)
```

Durations are seconds or text such as ``"30s"``, ``"5m"``. Everything is checked when the
source is built, with a message naming the source and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventcenter.domain.durations import parse_duration
from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.event import NAME_PATTERN, NAME_RULE
from eventcenter.domain.hysteresis import HysteresisConfig
from eventcenter.domain.sources import ListPath, PollPath, PushPath

NAME_MAX = 128


@dataclass
class DataSource:
    """One source of one tenant: at least one of ``events`` (push) and ``poll``.

    ``polling_interval`` is the rhythm of polling when it runs (HYBRID and POLLING_ONLY);
    ``min_polling_interval``/``max_polling_interval`` bound it when the tuning scales it
    (default a tenth and ten times it). ``reconciliation_interval`` applies when ``reconcile``
    is given. ``flap_window``, ``flap_switches``, ``cool_down`` and ``decay_period`` tune the
    damping of a flapping push path (see :mod:`eventcenter.domain.hysteresis`).
    """

    tenant: str
    name: str
    events: PushPath | None = None
    poll: PollPath | None = None
    reconcile: ListPath | None = None
    failure_threshold: int = 3
    success_threshold: int = 5
    max_hysteresis: int = 10
    event_timeout: str | float = "30s"
    polling_interval: str | float = "5m"
    reconciliation_interval: str | float = "15m"
    min_polling_interval: str | float | None = None
    max_polling_interval: str | float | None = None
    flap_window: str | float = "5m"
    flap_switches: int = 4
    cool_down: str | float = "1m"
    decay_period: str | float = "10m"
    batch: int = 100
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, shown by ``sources show``

    def __post_init__(self) -> None:
        for label, value in (("tenant", self.tenant), ("name", self.name)):
            if (
                not isinstance(value, str)
                or not 0 < len(value) <= NAME_MAX
                or not NAME_PATTERN.fullmatch(value)
                or ".." in value
            ):
                raise ConfigurationError(f"data source {label} {value!r}: {NAME_RULE}")
        if self.events is None and self.poll is None:
            raise ConfigurationError(
                f"source '{self.key}': give it a push path (events=...), a poll path"
                " (poll=...) or both"
            )
        self.hysteresis = HysteresisConfig(
            failure_threshold=self.failure_threshold,
            success_threshold=self.success_threshold,
            max_hysteresis=self.max_hysteresis,
            event_timeout=self._seconds("event_timeout", self.event_timeout, positive=True),
            flap_window=self._seconds("flap_window", self.flap_window, positive=True),
            flap_switches=self.flap_switches,
            cool_down=self._seconds("cool_down", self.cool_down),
            decay_period=self._seconds("decay_period", self.decay_period, positive=True),
        )
        interval = self._seconds("polling_interval", self.polling_interval, positive=True)
        self.poll_every = interval
        self.poll_min = (
            interval / 10
            if self.min_polling_interval is None
            else self._seconds("min_polling_interval", self.min_polling_interval, positive=True)
        )
        self.poll_max = (
            interval * 10
            if self.max_polling_interval is None
            else self._seconds("max_polling_interval", self.max_polling_interval, positive=True)
        )
        if not self.poll_min <= interval <= self.poll_max:
            raise ConfigurationError(
                f"source '{self.key}': polling_interval must lie between min_polling_interval"
                " and max_polling_interval"
            )
        self.reconcile_every = self._seconds(
            "reconciliation_interval", self.reconciliation_interval, positive=True
        )
        if self.batch < 1:
            raise ConfigurationError(f"source '{self.key}': batch must be at least 1")

    @property
    def key(self) -> str:
        """``tenant/name``: how the CLI and logs name the source."""
        return f"{self.tenant}/{self.name}"

    def _seconds(self, label: str, value: str | float, *, positive: bool = False) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            raise ConfigurationError(f"source '{self.key}': {label}: {error}") from None
        if positive and seconds <= 0:
            raise ConfigurationError(f"source '{self.key}': {label} must be more than 0")
        return seconds
