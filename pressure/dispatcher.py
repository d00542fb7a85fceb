"""The HTTP Dispatcher: each agent of a service is POSTed its new request frequency.

:class:`HttpDispatcher` implements the :class:`~eventcenter.domain.ports.Dispatcher` port. For
one :class:`~eventcenter.domain.adjustment.Adjustment` it first checks that every agent has an
endpoint with an http(s) URL (else :class:`~eventcenter.domain.errors.DispatchRefused`, and
nothing is sent), then sends all agents at once, each its own JSON body::

    {"service", "agent", "version", "rate", "interval", "paused", "target", "reason", "at",
     "correlation_id"}

with ``Idempotency-Key: <service>:<agent>:<version>`` and ``X-Correlation-Id``. The version is
the idempotency key: an agent keeps the newest version it was sent, so a repeated or late
dispatch changes nothing. What each answer means:

- **2xx**: taken (ok); ``detail`` says ``"unchanged: ..."`` when the agent answers
  ``{"status": "unchanged"}`` (it held that version already);
- **409** whose JSON body says the agent holds a newer ``version``: ok, with ``detail``
  ``"stale: agent holds version N"`` (a later dispatch got there first); never retried;
- **429, 5xx, a connection error or a timeout**: tried again, up to ``attempts`` in all, after
  an exponential back-off with jitter (:class:`~eventcenter.domain.backoff.ReconnectBackoff`:
  every agent of a service failing together retries spread out, and never at once), waiting at
  least what ``Retry-After`` asks, at most ``retry_after_max``;
- **any other answer** (400, 404, 422, a 409 without a newer version, a redirect): failed at
  once, with the reason the body gives.

Circuit breakers: with ``breaker_for``, each attempt runs through the breaker named
``dispatch:<service>:<agent>`` (:func:`breaker_name`; one per agent of a service, created by
the caller's function on first use, e.g. ``lambda name: registry.get_or_create(name, cfg)``;
give it no fallback: a fallback's value is no agent's answer, and counts as a failed dispatch).
Connection errors, timeouts, 429 and 5xx count as failures of the agent; any other answer is
the agent answering, so a success for the breaker. A refused call ends that agent's dispatch at
once (``error`` starts with ``"circuit open"``, ``attempts`` counts the requests made before).

Each outcome is logged as one line with service, agent, version and correlation id (also as
``extra`` fields for a structured formatter).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

from eventcenter.domain.adjustment import Adjustment, AgentFrequency
from eventcenter.domain.backoff import ReconnectBackoff, retry_after_seconds
from eventcenter.domain.errors import (
    CallNotPermitted,
    CallTimedOut,
    ConfigurationError,
    DispatchRefused,
)
from eventcenter.domain.ports import AgentEndpoint, CallGuard, DispatchOutcome

__all__ = [
    "CORRELATION_HEADER",
    "IDEMPOTENCY_HEADER",
    "DispatchPolicy",
    "HttpDispatcher",
    "breaker_name",
    "frequency_body",
    "idempotency_key",
]

log = logging.getLogger("eventcenter.pressure.dispatch")

IDEMPOTENCY_HEADER = "Idempotency-Key"
CORRELATION_HEADER = "X-Correlation-Id"
USER_AGENT = "eventcenter-dispatcher/1"
SHOWN_BODY = 300  # characters of an agent's answer kept in a reason

Sleep = Callable[[float], Awaitable[None]]


def _default_backoff() -> ReconnectBackoff:
    return ReconnectBackoff(base=0.2, cap=5.0, spread=0.5)


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """How hard one agent is tried: ``attempts`` requests at most (1 = no retry), each within
    ``timeout`` seconds, ``backoff`` between them, a ``Retry-After`` honoured up to
    ``retry_after_max`` seconds (a longer one is cut to that)."""

    attempts: int = 4
    timeout: float = 5.0
    backoff: ReconnectBackoff = field(default_factory=_default_backoff)
    retry_after_max: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(f"dispatch attempts must be at least 1, got {self.attempts}")
        if not self.timeout > 0:
            raise ConfigurationError(
                f"dispatch timeout must be positive seconds, got {self.timeout}"
            )
        if self.retry_after_max < 0:
            raise ConfigurationError(
                f"dispatch retry_after_max must be >= 0 seconds, got {self.retry_after_max}"
            )


def breaker_name(service: str, agent: str) -> str:
    """The name of the breaker that guards sending ``agent`` of ``service`` its frequency."""
    return f"dispatch:{service}:{agent}"


def idempotency_key(service: str, agent: str, version: int) -> str:
    return f"{service}:{agent}:{version}"


def frequency_body(
    adjustment: Adjustment, frequency: AgentFrequency, correlation_id: str
) -> dict[str, Any]:
    """What one agent is sent. A paused service sends rate 0 and no interval (stop polling),
    whatever the shares say."""
    paused = adjustment.paused
    return {
        "service": adjustment.service,
        "agent": frequency.agent,
        "version": adjustment.version,
        "rate": 0.0 if paused else frequency.rate,
        "interval": None if paused else frequency.interval,
        "paused": paused,
        "target": adjustment.target,
        "reason": adjustment.reason,
        "at": adjustment.at,
        "correlation_id": correlation_id,
    }


@dataclass(frozen=True, slots=True)
class _Answer:
    """One attempt's outcome: taken, or why not and whether another attempt may help."""

    ok: bool
    retry: bool
    status: int | None = None
    error: str = ""
    detail: str = ""
    retry_after: float | None = None


class _AgentFailed(Exception):
    """Raised inside the breaker for an answer that counts as the agent failing (connection
    error, timeout, 429, 5xx); carries the answer out again."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.error)
        self.answer = answer


@dataclass(frozen=True, slots=True)
class _Target:
    frequency: AgentFrequency
    url: str


@dataclass(frozen=True, slots=True)
class _Request:
    """What every attempt for one agent sends."""

    url: str
    version: int
    body: bytes
    headers: dict[str, str]


class HttpDispatcher:
    """Sends frequencies over HTTP; see the module docstring.

    ``client`` is borrowed (left open); without it one is made with ``transport`` (if given)
    and closed by :meth:`aclose` or on leaving ``async with``. ``sleep`` waits between attempts
    and ``jitter`` draws in [0, 1] (tests pass ones that do not wait and do not vary).
    ``wall_time`` reads an HTTP-date ``Retry-After``. A closed dispatcher refuses to dispatch.
    """

    def __init__(
        self,
        policy: DispatchPolicy | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        breaker_for: Callable[[str], CallGuard] | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        if client is not None and transport is not None:
            raise ConfigurationError("give the dispatcher a client or a transport, not both")
        self.policy = policy or DispatchPolicy()
        self._owned = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.policy.timeout),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._breaker_for = breaker_for
        self._sleep = sleep
        self._jitter = jitter
        self._wall = wall_time
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if the dispatcher made it; later dispatches are refused."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            await self._client.aclose()

    # the port ----------------------------------------------------------------------------------

    async def dispatch(
        self,
        adjustment: Adjustment,
        endpoints: Sequence[AgentEndpoint],
        *,
        correlation_id: str,
    ) -> list[DispatchOutcome]:
        """One outcome per agent of ``adjustment``, in its order (none for an adjustment
        without agents); :class:`DispatchRefused` (nothing sent) when an agent has no endpoint
        or its URL is not http(s). ``endpoints`` of agents not in the adjustment are ignored."""
        if self._closed:
            raise RuntimeError("the dispatcher is closed: make a new one to dispatch again")
        targets = _targets(adjustment, endpoints)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._send(adjustment, target, correlation_id))
                for target in targets
            ]
        return [task.result() for task in tasks]

    # one agent ---------------------------------------------------------------------------------

    async def _send(
        self, adjustment: Adjustment, target: _Target, correlation_id: str
    ) -> DispatchOutcome:
        agent = target.frequency.agent
        body = json.dumps(frequency_body(adjustment, target.frequency, correlation_id)).encode()
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: idempotency_key(adjustment.service, agent, adjustment.version),
            CORRELATION_HEADER: correlation_id,
        }
        request = _Request(target.url, adjustment.version, body, headers)
        guard = None
        if self._breaker_for is not None:
            guard = self._breaker_for(breaker_name(adjustment.service, agent))
        attempts = self.policy.attempts
        answer = _Answer(False, False, error="not sent")
        made = 0
        for attempt in range(1, attempts + 1):
            try:
                answer = await self._through(guard, request)
            except CallNotPermitted as refused:
                answer = _Answer(False, False, answer.status, f"circuit open: {refused}")
                break
            made = attempt
            if answer.ok or not answer.retry:
                break
            if attempt == attempts:
                answer = _with_error(answer, f"{answer.error} (gave up after {attempts} attempts)")
                break
            await self._sleep(self._delay(attempt, answer.retry_after))
        outcome = DispatchOutcome(
            agent=agent,
            url=target.url,
            version=adjustment.version,
            ok=answer.ok,
            attempts=made,
            status=answer.status,
            error=answer.error,
            detail=answer.detail,
        )
        _log(adjustment, outcome, correlation_id)
        return outcome

    async def _through(self, guard: CallGuard | None, request: _Request) -> _Answer:
        """One attempt, through the agent's breaker if there is one (which sees the agent's
        failures as exceptions)."""
        if guard is None:
            return await self._attempt(request)
        try:
            answer = await guard.acall(self._raising, request)
        except _AgentFailed as failed:
            return failed.answer
        except CallTimedOut as error:  # the breaker's own timeout, shorter than ours
            return _Answer(False, True, error=str(error))
        if not isinstance(answer, _Answer):  # a breaker's fallback answered instead of the agent
            return _Answer(
                False, False, error=f"the breaker answered with its fallback: {answer!r}"
            )
        return answer

    async def _raising(self, request: _Request) -> _Answer:
        answer = await self._attempt(request)
        if answer.retry:
            raise _AgentFailed(answer)
        return answer

    async def _attempt(self, request: _Request) -> _Answer:
        timeout = self.policy.timeout
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.post(
                    request.url, content=request.body, headers=request.headers
                )
        except (TimeoutError, httpx.TimeoutException) as error:
            kind = type(error).__name__
            return _Answer(False, True, error=f"no answer within {timeout:g} s ({kind})")
        except httpx.TransportError as error:
            return _Answer(False, True, error=f"connection failed: {error or type(error).__name__}")
        return self._judge(response, request.version)

    def _judge(self, response: httpx.Response, version: int) -> _Answer:
        status = response.status_code
        if response.is_success:
            data = _json(response)
            if isinstance(data, dict) and data.get("status") == "unchanged":
                return _Answer(
                    True, False, status, detail=f"unchanged: agent holds version {version}"
                )
            return _Answer(True, False, status)
        reason = _reason(response)
        shown = f"HTTP {status} {response.reason_phrase}".rstrip()
        shown = f"{shown}: {reason}" if reason else shown
        if status == 409:
            held = _held_version(response)
            if held is not None and held > version:
                return _Answer(True, False, status, detail=f"stale: agent holds version {held}")
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("Retry-After"), self._wall())
            return _Answer(False, True, status, shown, retry_after=wait)
        return _Answer(False, False, status, f"{shown} (refused: not retried)")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: the back-off, or the agent's ``Retry-After`` (cut
        to ``retry_after_max``) when that is longer."""
        policy = self.policy
        jitter = min(max(self._jitter(), 0.0), 1.0)
        delay = policy.backoff.delay(attempt, jitter)
        if retry_after is None:
            return delay
        return max(delay, min(retry_after, policy.retry_after_max))


def _targets(adjustment: Adjustment, endpoints: Sequence[AgentEndpoint]) -> list[_Target]:
    """Each agent of the adjustment with its checked URL, in the adjustment's order."""
    by_name: dict[str, AgentEndpoint] = {}
    for endpoint in endpoints:
        if endpoint.name in by_name and by_name[endpoint.name].url != endpoint.url:
            raise DispatchRefused(
                endpoint.name,
                f"it has two endpoints ({by_name[endpoint.name].url} and {endpoint.url});"
                " give each agent one URL",
            )
        by_name[endpoint.name] = endpoint
    targets: list[_Target] = []
    for frequency in adjustment.agents:
        found = by_name.get(frequency.agent)
        if found is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise DispatchRefused(
                frequency.agent,
                f"service {adjustment.service!r} has no endpoint for it (endpoints: {known})",
            )
        targets.append(_Target(frequency, _checked_url(frequency.agent, found.url)))
    return targets


def _checked_url(agent: str, url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise DispatchRefused(agent, f"its URL {url!r} cannot be read: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DispatchRefused(
            agent,
            f"its URL {url!r} is not an http(s) URL with a host (e.g. http://host:8082/frequency)",
        )
    return url


def _with_error(answer: _Answer, error: str) -> _Answer:
    return _Answer(answer.ok, answer.retry, answer.status, error, answer.detail, answer.retry_after)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reason(response: httpx.Response) -> str:
    """What the agent said: a JSON ``detail`` (FastAPI's, its validation errors as
    ``field: message``), ``reason``, ``error`` or ``message``; else the start of the text."""
    data = _json(response)
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list):
            return "; ".join(_validation_error(item) for item in detail)[:SHOWN_BODY]
        for key in ("detail", "reason", "error", "message"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:SHOWN_BODY]
    return " ".join(response.text[:SHOWN_BODY].split())


def _validation_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = [str(part) for part in item.get("loc", ()) if part != "body"]
    message = str(item.get("msg", ""))
    return f"{'.'.join(where)}: {message}" if where else message


def _held_version(response: httpx.Response) -> int | None:
    data = _json(response)
    value = data.get("version") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _log(adjustment: Adjustment, outcome: DispatchOutcome, correlation_id: str) -> None:
    fields = {
        "service": adjustment.service,
        "agent": outcome.agent,
        "version": outcome.version,
        "correlation_id": correlation_id,
    }
    where = (
        f"dispatch {adjustment.service}/{outcome.agent} version {outcome.version}"
        f" (correlation {correlation_id})"
    )
    tries = f"{outcome.attempts} attempt{'s' if outcome.attempts != 1 else ''}"
    if outcome.ok:
        note = f": {outcome.detail}" if outcome.detail else ""
        log.info("%s: taken by %s after %s%s", where, outcome.url, tries, note, extra=fields)
    else:
        log.warning(
            "%s: not taken by %s after %s: %s", where, outcome.url, tries, outcome.error,
            extra=fields,
        )  # fmt: skip
