"""Checkers refuse bad settings by name, custom checks accept what a function naturally returns,
messages never show a password, and the clock-bounded wait behind every timeout."""

from __future__ import annotations

import asyncio
import threading

import pytest

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.health import CheckResult
from eventcenter.healing.checkers import (
    CallableCheck,
    HttpCheck,
    NatsCheck,
    PostgresCheck,
    RedisCheck,
    describe,
    shown_url,
)
from eventcenter.healing.timing import within
from eventcenter.sources.clock import FakeClock


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: HttpCheck("api", "ftp://x/"), "not an http"),
        (lambda: HttpCheck("api", "http://x/", expected_status=700), "HTTP statuses"),
        (lambda: HttpCheck("api", "http://x/", expected_status=()), "HTTP statuses"),
        (lambda: HttpCheck("api", "http://x/", timeout=0), "timeout must be"),
        (lambda: HttpCheck("", "http://x/"), "non-empty name"),
        (lambda: PostgresCheck("db", "postgresql://h/db?bogus=1"), "not a PostgreSQL URL"),
        (lambda: PostgresCheck("db", "postgresql://h/db", timeout=float("inf")), "finite"),
        (lambda: RedisCheck("cache", "http://127.0.0.1:6379"), "not a redis:// URL"),
        (lambda: NatsCheck("bus", "redis://127.0.0.1"), "not a nats:// URL"),
        (lambda: CallableCheck("disk", "yes"), "is not callable"),  # type: ignore[arg-type]
    ],
)
def test_bad_checker_settings_are_refused_with_the_check_named(build, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


def test_postgres_check_takes_the_sqlalchemy_form_and_keeps_given_options() -> None:
    check = PostgresCheck(
        "db",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dx",
        timeout=0.5,
    )
    assert "connect_timeout=2" in check._dsn  # libpq counts whole seconds, at least 2
    assert "-csearch_path=x -c statement_timeout=500" in check._dsn


@pytest.mark.parametrize(
    ("returned", "ok", "error"),
    [
        (True, True, None),
        (None, True, None),
        (False, False, "disk: the check returned False"),
        (CheckResult.failed("98% full", used=0.98), False, "98% full"),
    ],
)
async def test_a_custom_check_accepts_bool_none_or_a_result(
    returned: object, ok: bool, error: str | None
) -> None:
    async def async_check() -> object:
        return returned

    for function in (lambda: returned, async_check):
        result = await CallableCheck("disk", function).check()
        assert (result.ok, result.error) == (ok, error)


async def test_a_custom_check_returning_something_else_says_what_to_return() -> None:
    with pytest.raises(TypeError, match="return a bool, a CheckResult or None"):
        await CallableCheck("disk", lambda: "fine").check()


async def test_a_blocking_custom_check_runs_off_the_loop() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def blocking() -> bool:
        threads.append(threading.get_ident())
        return True

    assert (await CallableCheck("disk", blocking, blocking=True).check()).ok
    assert threads
    assert threads[0] != loop_thread


def test_messages_never_show_a_password() -> None:
    assert shown_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert shown_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert shown_url("http://h/health") == "http://h/health"
    error = ConnectionError("auth failed for secret-pw")
    assert describe(error, "secret-pw") == "ConnectionError: auth failed for ***"
    assert describe(TimeoutError()) == "TimeoutError: TimeoutError()"


# the clock-bounded wait --------------------------------------------------------------------------


async def test_within_returns_what_finished_in_time() -> None:
    clock = FakeClock()

    async def quick() -> str:
        await clock.sleep(1.0)
        return "done"

    waiting = asyncio.create_task(within(clock, 2.0, quick()))
    await clock.advance(1.0)
    assert await waiting == "done"
    assert clock.sleepers == 0


async def test_within_cancels_what_runs_past_the_time_on_the_clock() -> None:
    clock = FakeClock()
    cancelled: list[bool] = []

    async def slow() -> str:
        try:
            await clock.sleep(10.0)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "late"

    waiting = asyncio.create_task(within(clock, 2.0, slow()))
    await clock.advance(1.999)
    assert not waiting.done()
    await clock.advance(0.001)
    with pytest.raises(TimeoutError, match="no answer within 2s"):
        await waiting
    assert cancelled == [True]
    assert clock.sleepers == 0


async def test_within_passes_the_call_s_own_error_on() -> None:
    async def broken() -> None:
        raise ValueError("bad answer")

    with pytest.raises(ValueError, match="bad answer"):
        await within(FakeClock(), 1.0, broken())


async def test_cancelling_the_caller_cancels_the_call() -> None:
    clock = FakeClock()
    cancelled: list[bool] = []

    async def slow() -> None:
        try:
            await clock.sleep(10.0)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    waiting = asyncio.create_task(within(clock, 5.0, slow()))
    await clock.advance(1.0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert cancelled == [True]
    assert clock.sleepers == 0
