"""Data sources in the config file: [[sources]] tables load into checked settings that build
the right DataSource and connectors without connecting; every mistake names its place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from eventcenter.center import settings as settings_module
from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.center.source_config import SourceSettings, connector_kinds
from eventcenter.domain.hysteresis import HysteresisConfig
from eventcenter.sources.connectors import (
    HttpList,
    HttpPoll,
    NatsJetStreamPath,
    PgNotifyPath,
    RedisStreamPath,
)
from eventcenter.sources.source import DataSource
from eventcenter.sources.webhook import WebhookPath

# Nothing listens on port 1: a connector that tried to connect while being built would fail.
CLOSED = "127.0.0.1:1"
REDIS = f"redis://{CLOSED}/0"

ORDERS = f"""
[[sources]]
tenant = "acme"
name = "orders"
failure_threshold = 3
success_threshold = 5
max_hysteresis = 10
event_timeout = "30s"
polling_interval = "5m"
reconciliation_interval = "15m"
events = {{ kind = "redis_stream", stream = "orders-events", group = "ec", url = "{REDIS}" }}
poll = {{ kind = "http_poll", url = "http://{CLOSED}/orders?since={{cursor}}" }}
reconcile = {{ kind = "http_list", url = "http://{CLOSED}/orders" }}
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("EVENTCENTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def load(tmp_path: Path, text: str) -> CenterSettings:
    config = tmp_path / "center.toml"
    config.write_text(text, encoding="utf-8")
    return CenterSettings.load(config)


def source(**table: object) -> SourceSettings:
    return SourceSettings.model_validate({"tenant": "acme", "name": "orders", **table})


class TestBuilding:
    def test_a_source_table_builds_its_data_source_and_connectors_without_connecting(
        self, tmp_path: Path
    ) -> None:
        [orders] = load(tmp_path, ORDERS).sources

        built = orders.to_source()  # no event loop, no server: nothing may connect

        assert isinstance(built, DataSource)
        assert (built.tenant, built.name, built.key) == ("acme", "orders", "acme/orders")
        assert isinstance(built.events, RedisStreamPath)
        assert (built.events.stream, built.events.group) == ("orders-events", "ec")
        assert isinstance(built.poll, HttpPoll)
        assert built.poll.describe == f"http_poll http://{CLOSED}/orders?since={{cursor}}"
        assert isinstance(built.reconcile, HttpList)
        assert (built.poll_every, built.reconcile_every) == (300.0, 900.0)
        assert built.hysteresis == orders.hysteresis() == HysteresisConfig()

    def test_each_build_makes_new_connectors(self) -> None:
        orders = source(events={"kind": "webhook"})
        assert orders.to_source().events is not orders.to_source().events

    def test_every_push_kind_builds_its_path(self) -> None:
        redis = source(events={"kind": "redis_stream", "stream": "s", "group": "g"})
        nats = source(
            events={"kind": "nats_jetstream", "stream": "S", "subject": "S.x", "durable": "d"}
        )
        pg = source(
            events={
                "kind": "pg_notify",
                "url": f"postgresql://u@{CLOSED}/db",
                "table": "outbox",
                "channel": "outbox",
            }
        )
        hook = source(events={"kind": "webhook", "max_pending": 50})

        assert isinstance(redis.to_source().events, RedisStreamPath)
        assert isinstance(nats.to_source().events, NatsJetStreamPath)
        assert isinstance(pg.to_source().events, PgNotifyPath)
        path = hook.to_source().events
        assert isinstance(path, WebhookPath)
        assert (path.tenant, path.source, path.max_pending) == ("acme", "orders", 50)

    def test_durations_are_seconds_or_text_in_the_source_and_in_connector_options(self) -> None:
        orders = source(
            events={"kind": "redis_stream", "stream": "s", "group": "g", "claim_idle": "1m30s"},
            event_timeout=45,
            polling_interval="1h",
            cool_down="250ms",
        )

        assert orders.events is not None
        assert orders.events.options["claim_idle"] == 90.0
        assert (orders.event_timeout, orders.polling_interval) == (45.0, 3600.0)
        assert orders.hysteresis().cool_down == 0.25

    def test_the_defaults_are_those_of_a_data_source(self) -> None:
        configured = source(events={"kind": "webhook"}).to_source()
        coded = DataSource(tenant="acme", name="orders", events=WebhookPath("acme", "orders"))

        assert configured.hysteresis == coded.hysteresis
        assert (configured.poll_every, configured.poll_min, configured.poll_max) == (
            coded.poll_every,
            coded.poll_min,
            coded.poll_max,
        )
        assert (configured.reconcile_every, configured.batch) == (
            coded.reconcile_every,
            coded.batch,
        )

    def test_settings_survive_a_round_trip_through_their_dump(self, tmp_path: Path) -> None:
        [orders] = load(tmp_path, ORDERS).sources

        assert SourceSettings.model_validate(orders.model_dump()) == orders
        assert orders.model_dump()["events"]["kind"] == "redis_stream"

    def test_http_poll_takes_its_url_as_url_or_url_template(self) -> None:
        template = "http://h/orders?since={cursor}"
        by_url = source(poll={"kind": "http_poll", "url": template})
        by_name = source(poll={"kind": "http_poll", "url_template": template})
        assert by_url == by_name

    def test_the_center_registers_the_declared_sources_without_io(self, tmp_path: Path) -> None:
        settings = load(
            tmp_path,
            f'data_dir = "{tmp_path / "data"}"\n'
            + ORDERS
            + '[[sources]]\ntenant = "globex"\nname = "hooks"\nevents = { kind = "webhook" }\n',
        )

        center = EventCenter(settings)
        try:
            keys = [runner.spec.key for runner in center.sources.runners()]
            hooks = center.sources.runner("globex", "hooks").spec.events
        finally:
            center.close()

        assert keys == ["acme/orders", "globex/hooks"]
        assert isinstance(hooks, WebhookPath)
        assert not (tmp_path / "data").exists(), "constructing the center touched nothing"


class TestDocumentedExample:
    def test_the_commented_sources_example_loads_and_shows_the_defaults(
        self, tmp_path: Path
    ) -> None:
        doc = settings_module.__doc__ or ""
        example = doc.split("A complete ``eventcenter.toml`` (every key, with its default)::", 1)[1]
        block = example.split("    # [[sources]]", 1)[1]
        lines = ["[[sources]]"]
        for line in block.splitlines():
            text = line.removeprefix("    ")
            if text.startswith("# ") and not text.startswith("# #"):
                lines.append(text.removeprefix("# "))

        [documented] = load(tmp_path, "\n".join(lines)).sources

        built = documented.to_source()
        assert isinstance(built.events, RedisStreamPath)
        assert isinstance(built.poll, HttpPoll)
        assert isinstance(built.reconcile, HttpList)
        defaults = source(events={"kind": "webhook"}).to_source()
        assert built.hysteresis == defaults.hysteresis
        assert (built.poll_every, built.poll_min, built.poll_max, built.batch) == (
            defaults.poll_every,
            defaults.poll_min,
            defaults.poll_max,
            defaults.batch,
        )
        for key in SourceSettings.model_fields:
            assert any(line.startswith(f"{key} = ") for line in lines), key

    def test_every_connector_kind_is_named_in_the_example(self) -> None:
        doc = settings_module.__doc__ or ""
        for kinds in connector_kinds().values():
            for kind in kinds:
                assert kind in doc


BAD = [
    pytest.param(
        'events = { kind = "redis_stream", strem = "x", group = "g" }',
        "sources.0.events.strem",
        "unknown option of redis_stream",
        id="connector-option-typo",
    ),
    pytest.param(
        'events = { kind = "redis", stream = "x" }',
        "sources.0.events.kind",
        "unknown events connector 'redis'",
        id="unknown-kind",
    ),
    pytest.param(
        'events = { stream = "x" }',
        "sources.0.events.kind",
        "needs a kind",
        id="no-kind",
    ),
    pytest.param(
        'events = { kind = "http_poll", url = "http://h/{cursor}" }',
        "sources.0.events.kind",
        "http_poll is a connector for poll",
        id="kind-of-another-path",
    ),
    pytest.param(
        'events = { kind = "redis_stream", stream = "x" }',
        "sources.0.events.group",
        "Field required",
        id="missing-option",
    ),
    pytest.param(
        'events = { kind = "redis_stream", stream = "x", group = "g", claim_idle = "soon" }',
        "sources.0.events.claim_idle",
        "not a duration: 'soon'",
        id="connector-duration",
    ),
    pytest.param(
        'events = { kind = "webhook" }\nevent_timeout = "30x"',
        "sources.0.event_timeout",
        "not a duration: '30x'",
        id="bad-duration",
    ),
    pytest.param(
        'events = { kind = "webhook" }\npolling_interval = "0s"',
        "sources.0.polling_interval",
        "greater than 0",
        id="zero-interval",
    ),
    pytest.param(
        'events = { kind = "webhook" }\nfailure_treshold = 4',
        "sources.0.failure_treshold",
        "Extra inputs are not permitted",
        id="source-key-typo",
    ),
    pytest.param(
        'events = { kind = "webhook" }\nfailure_threshold = "3"',
        "sources.0.failure_threshold",
        "valid integer",
        id="count-as-text",
    ),
    pytest.param(
        'events = { kind = "webhook" }\nmax_hysteresis = 4',
        "sources.0",
        "max_hysteresis (4) must be at least the larger threshold (5)",
        id="ceiling-below-thresholds",
    ),
    pytest.param(
        'poll = { kind = "http_poll", url = "http://h/orders" }',
        "sources.0.poll",
        "has no {cursor}",
        id="connector-own-check",
    ),
    pytest.param(
        'events = { kind = "webhook" }\npolling_interval = "5m"\nmin_polling_interval = "10m"',
        "sources.0",
        "polling_interval must lie between",
        id="interval-bounds",
    ),
    pytest.param(
        'reconcile = { kind = "http_list", url = "http://h/" }',
        "sources.0",
        "has no path",
        id="no-path",
    ),
    pytest.param(
        'events = "webhook"',
        "sources.0.events",
        "a connector is a table",
        id="connector-not-a-table",
    ),
]


@pytest.mark.parametrize(("table", "place", "message"), BAD)
def test_a_mistake_is_an_error_naming_its_place(
    tmp_path: Path, table: str, place: str, message: str
) -> None:
    text = f'[[sources]]\ntenant = "acme"\nname = "orders"\n{table}\n'

    with pytest.raises(ValidationError) as caught:
        load(tmp_path, text)

    first = caught.value.errors(include_url=False)[0]
    assert ".".join(str(part) for part in first["loc"]) == place
    assert message in first["msg"]


def test_a_source_declared_twice_is_refused(tmp_path: Path) -> None:
    table = '[[sources]]\ntenant = "acme"\nname = "orders"\nevents = { kind = "webhook" }\n'

    with pytest.raises(ValidationError, match=r"'acme/orders' is declared twice \(sources\[0\]"):
        load(tmp_path, table + table)


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a..b"])
def test_a_name_that_cannot_name_a_source_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        source(name=name, events={"kind": "webhook"})
