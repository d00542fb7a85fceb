"""Escalation sinks: how a notice about an unhealable case reaches a person.

A sink (:class:`EscalationSink`) sends one :class:`~eventcenter.domain.escalation.
EscalationNotice` and reports a :class:`Delivery`; it does not raise for a failed delivery,
because the caller's next step (record which sinks were reached, try the others) is the same
whatever went wrong. Three come with eventcenter:

- :class:`WebhookSink` POSTs the notice's canonical JSON body, signed with HMAC-SHA256 over
  ``"<timestamp>.<body>"`` in ``X-Eventcenter-Signature: t=<unix seconds>,v1=<hex>`` (receivers
  check it with :func:`verify_signature`), with ``Idempotency-Key: <notice id>`` so a receiver
  drops a retry it already has. It retries connection errors, timeouts, 429 (waiting at least
  the server's ``Retry-After``) and 5xx with exponential back-off and jitter; any other answer
  is final;
- :class:`LogSink` writes one structured log record per notice;
- :class:`CallbackSink` calls a function of the user's (sync or async).

The :class:`Escalator` sends a notice to the sinks chosen for its tenant, all at once, and
reports which were reached. Reminders of unanswered cases are the RCA runner's (it owns the
cases), at the pace of a :class:`~eventcenter.domain.escalation.RenotifyPolicy`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import httpx

from eventcenter.domain.backoff import retry_after_seconds, spread_delay
from eventcenter.domain.errors import ConfigurationError, SignatureInvalid
from eventcenter.domain.escalation import (
    EscalationNotice,
)
from eventcenter.domain.sources import Clock
from eventcenter.healing.escalation_config import (
    EscalationSettings,
    LogSinkSettings,
    WebhookSinkSettings,
)

__all__ = [
    "ATTEMPT_HEADER",
    "DEFAULT_TOLERANCE",
    "IDEMPOTENCY_HEADER",
    "SECRET_MIN",
    "SIGNATURE_HEADER",
    "CallbackSink",
    "Delivery",
    "EscalationReport",
    "EscalationSink",
    "Escalator",
    "LogSink",
    "WebhookSink",
    "sign",
    "verify_signature",
]

logger = logging.getLogger("eventcenter.escalation")

SIGNATURE_HEADER = "X-Eventcenter-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Eventcenter-Delivery-Attempt"
USER_AGENT = "eventcenter-escalation/1"
DEFAULT_TOLERANCE = 300.0
"""Seconds a signature's timestamp may lie from the receiver's clock (either way)."""
SECRET_MIN = 16
"""Characters a webhook secret has at least: a short HMAC key is guessed offline."""
SHOWN_BODY = 200  # characters of a refusing receiver's answer kept in the reason
BACKOFF_SPREAD = 0.5  # share of each back-off the jitter may take off (never all of it)


# --- signatures ----------------------------------------------------------------------------------


def _digest(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int:
    """Check a received body against its ``X-Eventcenter-Signature`` header; return its
    timestamp.

    ``body`` must be the bytes as received (not re-encoded JSON), ``now`` the receiver's unix
    time. A timestamp more than ``tolerance`` seconds from ``now`` is refused, so a captured
    request cannot be replayed later; every ``v1=`` value is tried (a sender rotating secrets
    may send several). Raises :class:`SignatureInvalid` saying which check failed.
    """
    if not header:
        raise SignatureInvalid(f"no {SIGNATURE_HEADER} header: the body cannot be trusted")
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        raise SignatureInvalid(
            f"{SIGNATURE_HEADER} must hold one t=<unix seconds>, got {header[:100]!r}"
        )
    if not signatures:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} holds no v1=<hex> signature")
    timestamp = int(timestamps[0])
    if abs(now - timestamp) > tolerance:
        raise SignatureInvalid(
            f"signed at {timestamp}, {abs(now - timestamp):.0f} s from now ({now:.0f}); at most"
            f" {tolerance:g} s is accepted: a replayed request, or clocks far apart"
        )
    expected = _digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise SignatureInvalid(
            "no v1 signature matches the body: another secret, or the body was changed"
        )
    return timestamp


# --- what a sink reports -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one sink fared with one notice. ``attempts`` counts the tries it made; ``reason``
    says why it failed (empty when ``ok``); ``status`` is the last HTTP status, if any."""

    sink: str
    notice_id: str
    ok: bool
    attempts: int = 1
    reason: str = ""
    status: int | None = None


@dataclass(frozen=True, slots=True)
class EscalationReport:
    """What became of one notice: one :class:`Delivery` per sink it was sent to."""

    notice: EscalationNotice
    deliveries: tuple[Delivery, ...]

    @property
    def delivered(self) -> tuple[str, ...]:
        """Names of the sinks that took the notice."""
        return tuple(d.sink for d in self.deliveries if d.ok)

    @property
    def failed(self) -> tuple[Delivery, ...]:
        return tuple(d for d in self.deliveries if not d.ok)

    @property
    def reached(self) -> bool:
        """True if at least one sink took the notice."""
        return any(d.ok for d in self.deliveries)


class EscalationSink(Protocol):
    """Sends notices somewhere a person looks. ``send`` reports a failure in its
    :class:`Delivery` rather than raising it (an exception is turned into one by the
    :class:`Escalator`). A sink that holds resources may have an ``async aclose()``."""

    @property
    def name(self) -> str: ...

    async def send(self, notice: EscalationNotice) -> Delivery: ...


def _fields(notice: EscalationNotice, sink: str) -> dict[str, object]:
    """The fields every escalation log record carries."""
    return {
        "tenant": notice.tenant,
        "source": notice.source,
        "correlation_id": notice.correlation_id,
        "case_id": notice.case_id,
        "notice_id": notice.notice_id,
        "notification": notice.notification,
        "sink": sink,
    }


# --- webhook -------------------------------------------------------------------------------------


class _AsyncioClock:
    """Loop time and ``asyncio.sleep``, when no clock is given."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class _Try:
    """One request's outcome: taken, or why not and whether another try may help."""

    ok: bool
    retry: bool
    reason: str = ""
    status: int | None = None
    retry_after: float | None = None


class WebhookSink:
    """POSTs each notice to a URL, signed, retried; see the module docstring.

    ``client`` may be passed (it is then borrowed and left open), else one is made on first use
    and closed by :meth:`aclose`. ``clock`` sleeps between tries (tests pass one that does not
    sleep); ``wall_time`` gives the unix time that signatures carry; ``jitter`` draws in
    [0, 1). Raises :class:`ConfigurationError` for a secret shorter than :data:`SECRET_MIN`.
    """

    def __init__(
        self,
        settings: WebhookSinkSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        wall_time: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if len(settings.secret.get_secret_value()) < SECRET_MIN:
            raise ConfigurationError(
                f"webhook sink {settings.name!r}: its secret is shorter than {SECRET_MIN}"
                " characters; use a long random one (python -c 'import secrets;"
                " print(secrets.token_hex(32))') and give the receiver the same"
            )
        self.settings = settings
        self._secret = settings.secret
        self._url = str(settings.url)
        self._client = client
        self._owned = client is None
        self._clock: Clock = clock if clock is not None else _AsyncioClock()
        self._wall = wall_time
        self._jitter = jitter

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def shown_url(self) -> str:
        """The URL for messages: without any user or password it may hold."""
        url = httpx.URL(self._url)
        return str(url.copy_with(userinfo=b"")) if url.userinfo else self._url

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r}, url={self.shown_url!r})"

    async def send(self, notice: EscalationNotice) -> Delivery:
        body = notice.body()
        tries = self.settings.retries + 1
        outcome = _Try(ok=False, retry=False, reason="not sent")
        attempt = 0
        for attempt in range(1, tries + 1):
            outcome = await self._try(notice, body, attempt)
            if outcome.ok:
                return Delivery(self.name, notice.notice_id, True, attempt, status=outcome.status)
            if not outcome.retry:
                break
            if attempt == tries:
                outcome = _with_reason(outcome, f"{outcome.reason} (gave up after {tries} tries)")
                break
            delay = self._delay(attempt, outcome.retry_after)
            if delay is None:
                outcome = _with_reason(
                    outcome,
                    f"{outcome.reason}; the receiver asked to wait {outcome.retry_after:g} s,"
                    f" more than retry_after_max ({self.settings.retry_after_max:g} s)",
                )
                break
            logger.info(
                "escalation webhook %s: try %d of %d failed (%s); next in %.2f s",
                self.name,
                attempt,
                tries,
                outcome.reason,
                delay,
                extra=_fields(notice, self.name),
            )
            await self._clock.sleep(delay)
        logger.warning(
            "escalation webhook %s (%s) did not take notice %s of case %s: %s",
            self.name,
            self.shown_url,
            notice.notice_id,
            notice.case_id,
            outcome.reason,
            extra=_fields(notice, self.name),
        )
        return Delivery(
            self.name, notice.notice_id, False, attempt, outcome.reason, status=outcome.status
        )

    async def _try(self, notice: EscalationNotice, body: bytes, attempt: int) -> _Try:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self._secret.get_secret_value(), body, int(self._wall())),
            IDEMPOTENCY_HEADER: notice.notice_id,
            ATTEMPT_HEADER: str(attempt),
        }
        try:
            response = await self._http().post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as error:
            kind = type(error).__name__
            return _Try(False, True, f"no answer within {self.settings.timeout:g} s ({kind})")
        except httpx.TransportError as error:
            return _Try(False, True, f"connection failed: {error or type(error).__name__}")
        status = response.status_code
        if response.is_success:
            return _Try(True, False, status=status)
        shown = f"HTTP {status} {response.reason_phrase}".rstrip()
        answer = response.text[:SHOWN_BODY].strip()
        if answer:
            shown = f"{shown}: {answer}"
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("Retry-After"), self._wall())
            return _Try(False, True, shown, status, wait)
        return _Try(False, False, f"{shown} (refused: not retried)", status)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before the next try, or None when the receiver asks for too long a wait."""
        settings = self.settings
        jitter = min(max(self._jitter(), 0.0), 1.0)
        delay = spread_delay(
            attempt, settings.backoff_base, settings.backoff_max, jitter, BACKOFF_SPREAD
        )
        if retry_after is None:
            return delay
        if retry_after > settings.retry_after_max:
            return None
        return max(delay, retry_after)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(self.settings.timeout, connect=self.settings.connect_timeout)
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()


def _with_reason(outcome: _Try, reason: str) -> _Try:
    return _Try(outcome.ok, outcome.retry, reason, outcome.status, outcome.retry_after)


# --- log and callback ----------------------------------------------------------------------------


class LogSink:
    """One log record per notice: the facts in the message, the whole notice in the record's
    ``escalation`` field (with ``tenant``, ``source``, ``correlation_id``, ``case_id``,
    ``notice_id`` beside it) for a structured formatter. Never fails, unless logging does."""

    def __init__(
        self,
        name: str = "log",
        *,
        logger: logging.Logger | None = None,
        level: int = logging.WARNING,
    ) -> None:
        self._name = name
        self._logger = logger if logger is not None else logging.getLogger("eventcenter.escalation")
        self._level = level

    @classmethod
    def from_settings(cls, settings: LogSinkSettings) -> Self:
        level = logging.getLevelNamesMapping()[settings.level]
        return cls(settings.name, logger=logging.getLogger(settings.logger), level=level)

    @property
    def name(self) -> str:
        return self._name

    async def send(self, notice: EscalationNotice) -> Delivery:
        where = f"{notice.tenant}/{notice.source}" if notice.source else notice.tenant
        self._logger.log(
            self._level,
            "case %s (%s) escalated, notice %d: %s [%s, %s]; tried: %s; answer: %s",
            notice.case_id,
            where,
            notice.notification,
            notice.summary,
            notice.category,
            notice.severity,
            ", ".join(f"{a.strategy} ({a.outcome})" for a in notice.attempts) or "nothing",
            notice.answer_hints["acknowledge"],
            extra={**_fields(notice, self._name), "escalation": notice.as_dict()},
        )
        return Delivery(self._name, notice.notice_id, True)


Callback = Callable[[EscalationNotice], object]
"""A function of the user's: returns nothing, or an awaitable that the sink awaits."""


class CallbackSink:
    """Hands each notice to a function (sync or async). An exception it raises makes a failed
    :class:`Delivery` with the exception as reason. A sync function runs on the event loop:
    keep it quick, or give an async one."""

    def __init__(self, name: str, callback: Callback) -> None:
        self._name = name
        self._callback = callback

    @property
    def name(self) -> str:
        return self._name

    async def send(self, notice: EscalationNotice) -> Delivery:
        try:
            result = self._callback(notice)
            if inspect.isawaitable(result):
                await result
        except Exception as error:  # the user's code: its failure is this delivery's reason
            reason = f"{type(error).__name__}: {error}"
            return Delivery(self._name, notice.notice_id, False, reason=reason)
        return Delivery(self._name, notice.notice_id, True)


# --- escalator -----------------------------------------------------------------------------------


class Escalator:
    """Sends notices to the sinks of their tenant: ``tenants[tenant]`` if the tenant has its
    own list, else ``default``. Every name must be one of ``sinks`` (checked here, raising
    :class:`ConfigurationError`), so a typo shows when the center starts, not when a case
    escalates."""

    def __init__(
        self,
        sinks: Iterable[EscalationSink],
        *,
        default: Sequence[str] = ("log",),
        tenants: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._sinks: dict[str, EscalationSink] = {}
        for sink in sinks:
            if sink.name in self._sinks:
                raise ConfigurationError(f"two escalation sinks are named {sink.name!r}")
            self._sinks[sink.name] = sink
        self._default = self._chosen("the default escalation sinks", default)
        self._tenants = {
            tenant: self._chosen(f"the escalation sinks of tenant {tenant!r}", names)
            for tenant, names in (tenants or {}).items()
        }

    def _chosen(self, what: str, names: Sequence[str]) -> tuple[EscalationSink, ...]:
        if not names:
            raise ConfigurationError(f"{what} are empty: an escalated case would reach nobody")
        unknown = [name for name in names if name not in self._sinks]
        if unknown:
            known = ", ".join(sorted(self._sinks)) or "none"
            raise ConfigurationError(
                f"{what} name {', '.join(map(repr, unknown))}, which is not a sink (sinks: {known})"
            )
        return tuple(dict.fromkeys(self._sinks[name] for name in names))

    @classmethod
    def from_settings(
        cls,
        settings: EscalationSettings,
        *,
        sinks: Iterable[EscalationSink] = (),
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
    ) -> Escalator:
        """The escalator the config describes, plus ``sinks`` registered in code. A ``log``
        sink is added when none is declared, so the default selection works as it is."""
        built: list[EscalationSink] = list(sinks)
        for declared in settings.sinks:
            if isinstance(declared, WebhookSinkSettings):
                built.append(WebhookSink(declared, client=client, clock=clock))
            else:
                built.append(LogSink.from_settings(declared))
        if all(sink.name != "log" for sink in built):
            built.append(LogSink())
        return cls(built, default=settings.default, tenants=settings.tenants)

    @property
    def sinks(self) -> Mapping[str, EscalationSink]:
        return dict(self._sinks)

    def sinks_for(self, tenant: str) -> tuple[EscalationSink, ...]:
        return self._tenants.get(tenant, self._default)

    async def escalate(
        self, notice: EscalationNotice, *, only: Collection[str] | None = None
    ) -> EscalationReport:
        """Send ``notice`` to its tenant's sinks at once; report how each fared. Never raises
        for a sink's failure. ``only`` limits the sending to those sink names (e.g. the ones
        not reached yet, after a restart)."""
        chosen = [s for s in self.sinks_for(notice.tenant) if only is None or s.name in only]
        deliveries = await asyncio.gather(*(self._send(sink, notice) for sink in chosen))
        return EscalationReport(notice, tuple(deliveries))

    async def _send(self, sink: EscalationSink, notice: EscalationNotice) -> Delivery:
        try:
            return await sink.send(notice)
        except Exception as error:  # a sink's bug must not keep the notice from the others
            logger.exception(
                "escalation sink %s raised instead of reporting",
                sink.name,
                extra=_fields(notice, sink.name),
            )
            reason = f"the sink raised {type(error).__name__}: {error}"
            return Delivery(sink.name, notice.notice_id, False, reason=reason)

    async def aclose(self) -> None:
        """Close the sinks that hold resources (an HTTP client)."""
        for sink in self._sinks.values():
            close = getattr(sink, "aclose", None)
            if close is not None:
                await close()
