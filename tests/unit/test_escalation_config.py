"""The [escalation] table: validated at load, secrets never shown, sinks built and checked."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.escalation import EscalationNotice, RenotifyPolicy
from eventcenter.healing.escalation import CallbackSink, Escalator, LogSink, WebhookSink
from eventcenter.healing.escalation_config import (
    EscalationSettings,
    RenotifySettings,
    WebhookSinkSettings,
)

SECRET = "0123456789abcdef-very-secret"


def webhook(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "kind": "webhook",
        "name": "ops",
        "url": "https://ops.example.com/hooks/eventcenter",
        "secret": SECRET,
    }
    table.update(changes)
    return table


def test_the_defaults_send_to_a_log_sink_that_exists_without_being_declared() -> None:
    settings = EscalationSettings()

    escalator = Escalator.from_settings(settings)

    assert settings.default == ["log"]
    assert [sink.name for sink in escalator.sinks_for("anyone")] == ["log"]
    assert isinstance(escalator.sinks["log"], LogSink)
    assert settings.renotify.policy() == RenotifyPolicy()


def test_a_webhook_table_takes_durations_as_text() -> None:
    settings = WebhookSinkSettings.model_validate(
        webhook(timeout="2s", connect_timeout="500ms", backoff_max="1m", retry_after_max="5m")
    )

    assert (settings.timeout, settings.connect_timeout) == (2.0, 0.5)
    assert (settings.backoff_max, settings.retry_after_max) == (60.0, 300.0)


def test_the_secret_never_shows_in_a_repr_a_dump_or_the_sink() -> None:
    settings = EscalationSettings.model_validate({"sinks": [webhook()], "default": ["ops"]})
    sink = Escalator.from_settings(settings).sinks["ops"]

    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
        repr(sink),
    ]
    assert all(SECRET not in text for text in shown)
    assert isinstance(settings.sinks[0], WebhookSinkSettings)
    assert settings.sinks[0].secret.get_secret_value() == SECRET


def test_an_error_in_another_field_does_not_print_the_secret() -> None:
    with pytest.raises(ValidationError) as raised:
        EscalationSettings.model_validate({"sinks": [webhook(retries=-1)]})

    assert "sinks.0.webhook.retries" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_short_secret_is_refused_when_the_sink_is_built_without_printing_it() -> None:
    settings = EscalationSettings.model_validate(
        {"sinks": [webhook(secret="hunter2")], "default": ["ops"]}
    )

    with pytest.raises(ConfigurationError, match="secret is shorter than 16") as raised:
        Escalator.from_settings(settings)

    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("table", "where"),
    [
        (webhook(retries=-1), "retries"),
        (webhook(retries=50), "retries"),
        (webhook(timeout=0), "timeout"),
        (webhook(timeout="soon"), "timeout"),
        (webhook(url="ftp://ops.example.com/x"), "url"),
        (webhook(url="not a url"), "url"),
        (webhook(secrte="typo"), "secrte"),
        (webhook(name="Ops Team"), "name"),
        (webhook(backoff_base=10, backoff_max=1), "backoff_max (1 s) must be at least"),
        (webhook(timeout=1, connect_timeout=5), "connect_timeout (5 s) must not exceed"),
        ({"kind": "pigeon", "name": "p"}, "kind"),
        ({k: v for k, v in webhook().items() if k != "secret"}, "secret"),
    ],
)
def test_a_bad_sink_table_is_refused_naming_the_problem(table: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as raised:
        EscalationSettings.model_validate({"sinks": [table]})

    assert where in str(raised.value)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"sinks": [webhook(), webhook()]}, "sink 'ops' is declared twice"),
        ({"default": []}, "default names no sink: an escalated case would reach nobody"),
        ({"default": ["log", "log"]}, "default names sink 'log' twice"),
        ({"tenants": {"acme": []}}, "tenant 'acme' names no sink"),
        ({"tenants": {"a/b": ["log"]}}, "tenant 'a/b'"),
        ({"renotify": {"after": "2h", "max_wait": "1h"}}, "max_wait (3600 s) must be at least"),
        ({"renotify": {"factor": 0.5}}, "renotify.factor"),
        ({"renotify": {"every": "1h"}}, "renotify.every"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_escalation_table_is_refused_naming_the_problem(
    settings: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        EscalationSettings.model_validate(settings)


async def test_sinks_registered_in_code_can_be_chosen_per_tenant() -> None:
    got: list[str] = []
    settings = EscalationSettings.model_validate(
        {
            "sinks": [webhook(), {"kind": "log", "name": "audit", "level": "ERROR"}],
            "default": ["log", "ops"],
            "tenants": {"acme": ["audit", "pager"]},
        }
    )
    pager = CallbackSink("pager", lambda notice: got.append(notice.case_id))

    escalator = Escalator.from_settings(settings, sinks=[pager])

    assert [s.name for s in escalator.sinks_for("acme")] == ["audit", "pager"]
    assert [s.name for s in escalator.sinks_for("globex")] == ["log", "ops"]
    assert isinstance(escalator.sinks["ops"], WebhookSink)
    audit = escalator.sinks["audit"]
    assert isinstance(audit, LogSink)
    notice = EscalationNotice(
        "case-9", "acme", None, "handler_bug", "low", "a handler keeps failing", [], [], 1.0, 2.0
    )
    report = await escalator.escalate(notice)
    assert report.delivered == ("audit", "pager")
    assert got == ["case-9"]
    await escalator.aclose()


def test_a_selection_naming_an_unknown_sink_is_refused_when_the_escalator_is_built() -> None:
    settings = EscalationSettings.model_validate({"tenants": {"acme": ["pager"]}})

    with pytest.raises(ConfigurationError, match="tenant 'acme' name 'pager', which is not a"):
        Escalator.from_settings(settings)


async def test_the_log_sink_writes_where_the_table_says(caplog: pytest.LogCaptureFixture) -> None:
    settings = EscalationSettings.model_validate(
        {"sinks": [{"kind": "log", "name": "log", "level": "CRITICAL", "logger": "ops.pages"}]}
    )
    notice = EscalationNotice(
        "case-9", "acme", None, "handler_bug", "low", "a handler keeps failing", [], [], 1.0, 2.0
    )

    with caplog.at_level(logging.DEBUG):
        await Escalator.from_settings(settings).escalate(notice)

    [record] = [r for r in caplog.records if "case-9" in r.getMessage()]
    assert (record.name, record.levelno) == ("ops.pages", logging.CRITICAL)


def test_renotify_settings_make_the_policy() -> None:
    settings = RenotifySettings.model_validate(
        {"after": "10m", "factor": 1.5, "max_wait": "2h", "max_renotifications": 8}
    )

    assert settings.policy() == RenotifyPolicy(600.0, 1.5, 7200.0, 8)


def test_a_user_and_password_in_the_url_are_left_out_of_what_the_sink_shows() -> None:
    settings = WebhookSinkSettings.model_validate(
        webhook(url="https://hook-user:hook-pass@ops.example.com/hooks?team=a")
    )

    sink = WebhookSink(settings)

    assert sink.shown_url == "https://ops.example.com/hooks?team=a"
    assert "hook-pass" not in repr(sink)
