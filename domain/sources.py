"""What a data source yields, and the ports its connectors implement.

A source has up to three paths (ARCHITECTURE.md, "How data flows"):

- a **push path** (:class:`PushPath`): Redis Streams, NATS JetStream, PostgreSQL LISTEN/NOTIFY,
  a webhook, or a user's async iterator. It is opened at a position, hands out messages, and is
  told which ones are durable (``ack``) only after the center has admitted them;
- a **poll path** (:class:`PollPath`): an async callable ``cursor -> (items, next cursor)``;
- a **listing** (:class:`ListPath`): an async callable returning every item the source holds
  now, the authority that reconciliation compares against.

Every item has an identity ``(tenant, source, key, version)``; whichever path brings it, the
center admits it once. A message that is not an item (unparseable, no key) is still handed out
as a :class:`Received` with its ``problem`` so it can be dead-lettered with the reason and
acknowledged: a bad message never stops the flow and is never dropped silently.

Connector failures are :class:`SourceError` with a :class:`SourceErrorKind`, so the hysteresis
policy and, later, the self-healing runner can tell a timeout from a refused password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from eventcenter.domain.errors import EventCenterError

KEY_MAX = 512
VERSION_MAX = 128
RAW_MAX = 4_096  # how much of a bad message is kept with its dead letter


class SourceErrorKind(StrEnum):
    """Why a path failed. ``retryable`` kinds are worth another try after a back-off."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    BAD_DATA = "bad_data"
    POSITION_LOST = "position_lost"

    @property
    def retryable(self) -> bool:
        return self in (
            SourceErrorKind.TIMEOUT,
            SourceErrorKind.CONNECTION,
            SourceErrorKind.RATE_LIMITED,
        )


class SourceError(EventCenterError):
    """Raised by a connector when its path failed; ``kind`` classifies the failure.

    ``retry_after`` (seconds) is set when the server said how long to wait (HTTP 429/503).
    The message names the connector and what it tried, never a password.
    """

    def __init__(
        self, kind: SourceErrorKind, message: str, *, retry_after: float | None = None
    ) -> None:
        self.kind = kind
        self.retry_after = retry_after
        super().__init__(f"{kind.value}: {message}")


class PositionLost(SourceError):
    """Raised by ``PushPath.open`` when the server no longer has the position asked for (a
    trimmed stream, a recreated consumer, an emptied server): the caller must re-list and
    reconcile instead of resuming, or items in the gap would be missed silently."""

    def __init__(self, message: str) -> None:
        super().__init__(SourceErrorKind.POSITION_LOST, message)


class InvalidItem(EventCenterError, ValueError):
    """Raised by :func:`decode_item` when a message is not a usable item; says why."""


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One item of a source at one version.

    ``data`` is the item's JSON object. ``deleted`` marks a tombstone (the item is gone).
    ``occurred_at`` is the source's own timestamp (seconds since the epoch), used for lag.
    """

    key: str
    version: str
    data: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False
    occurred_at: float | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """One message from a push or poll path: an item, or the reason it is not one.

    ``position`` is the path's position of this message (Redis stream id, JetStream stream
    sequence, table row id, poll cursor), ``token`` whatever the connector needs to ack it.
    Exactly one of ``item`` and ``problem`` is set; ``raw`` keeps the message as received
    (truncated to :data:`RAW_MAX` characters) for the dead letter of a bad one.
    """

    position: str
    item: SourceItem | None
    problem: str | None = None
    raw: str = ""
    token: Any = None


class PushPath(Protocol):
    """An event (push) path. Lifecycle: ``open`` once, then ``receive``/``ack``, then ``aclose``.

    ``open(position)`` resumes after ``position`` (None: from where the server's durable state
    says, or from now); it raises :class:`PositionLost` when that position is gone.
    ``receive`` waits at most ``timeout`` seconds and returns what arrived, possibly nothing
    (silence is not an error: the engine counts it against ``event_timeout``). ``ack`` is
    called only once the messages are durably admitted; an un-acked message comes again
    (after a reconnect, or the server's redelivery), and the center's idempotent admission
    drops the repeat. Failures raise :class:`SourceError`.
    """

    @property
    def describe(self) -> str:
        """A short description for logs and ``sources show`` (no password)."""
        ...

    async def open(self, position: str | None) -> None: ...

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]: ...

    async def ack(self, received: Sequence[Received]) -> None: ...

    async def aclose(self) -> None: ...


class PollPath(Protocol):
    """A poll path: returns the items changed after ``cursor`` and the cursor to ask with next
    (None at the start). Failures raise :class:`SourceError`."""

    async def __call__(self, cursor: str | None) -> tuple[Sequence[Received], str | None]: ...


class ListPath(Protocol):
    """The authoritative listing: every item the source holds now, at its current version."""

    async def __call__(self) -> Sequence[SourceItem]: ...


def decode_item(value: Any) -> SourceItem:
    """Build an item from a decoded JSON message; raise :class:`InvalidItem` saying why not.

    Accepted shape: ``{"key": str, "version": str|int, "data": {...}?, "deleted": bool?,
    "occurred_at": number?}``. A missing version is refused rather than guessed: the version
    is half of the identity that makes delivery exactly once.
    """
    # type() first: isinstance() against the Mapping ABC costs more than the rest of a check
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidItem(f"an item must be a JSON object, got {type(value).__name__}")
    key = value.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidItem("no key: an item needs a non-empty string 'key'")
    if len(key) > KEY_MAX:
        raise InvalidItem(f"key is longer than {KEY_MAX} characters")
    version = value.get("version")
    if isinstance(version, bool) or not isinstance(version, (str, int)) or version == "":
        raise InvalidItem(f"item {key!r}: no version: 'version' must be a string or an integer")
    version_text = str(version)
    if len(version_text) > VERSION_MAX:
        raise InvalidItem(f"item {key!r}: version is longer than {VERSION_MAX} characters")
    data = value.get("data", {})
    if data is None:
        data = {}
    if type(data) is not dict and not isinstance(data, Mapping):
        raise InvalidItem(f"item {key!r}: 'data' must be a JSON object")
    deleted = value.get("deleted", False)
    if not isinstance(deleted, bool):
        raise InvalidItem(f"item {key!r}: 'deleted' must be true or false")
    occurred_at = value.get("occurred_at")
    if occurred_at is not None and (
        isinstance(occurred_at, bool) or not isinstance(occurred_at, (int, float))
    ):
        raise InvalidItem(f"item {key!r}: 'occurred_at' must be seconds since the epoch")
    return SourceItem(
        key=key,
        version=version_text,
        data=dict(data),
        deleted=deleted,
        occurred_at=float(occurred_at) if occurred_at is not None else None,
    )


def received_from(value: Any, position: str, raw: str, token: Any = None) -> Received:
    """A :class:`Received` for a decoded message: the item, or the problem and the raw text."""
    try:
        item = decode_item(value)
    except InvalidItem as problem:
        return Received(
            position=position, item=None, problem=str(problem), raw=raw[:RAW_MAX], token=token
        )
    return Received(position=position, item=item, raw="", token=token)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What the center holds for one key of a source: the version and digest last admitted."""

    version: str
    digest: str
    deleted: bool = False


class ItemSink(Protocol):
    """Where engines hand items: the center's durable, idempotent admission.

    ``admit`` returns once everything is durable: each good item became an event (identity
    ``(tenant, source, key, version)``; a repeat is dropped), each bad message a dead letter
    with its problem, and ``position`` (if given) was stored for ``path`` in the same
    transaction. Only then may the engine ack the messages. Returns per message the event id,
    or None for a repeat or a dead-lettered message.
    """

    async def admit(
        self,
        tenant: str,
        source: str,
        path: str,
        received: Sequence[Received],
        position: str | None,
        *,
        correction: str | None = None,
    ) -> list[str | None]: ...

    async def position(self, tenant: str, source: str, path: str) -> str | None:
        """The position last stored for ``path`` (None: never stored)."""
        ...

    async def delivered(self, tenant: str, source: str) -> dict[str, Delivered]:
        """Per key, what was admitted last (for reconciliation)."""
        ...


class Clock(Protocol):
    """Time for engines: ``now`` in seconds (monotonic), ``sleep`` until some later time.

    Tests pass a fake whose ``sleep`` returns when the test advances the time, so intervals,
    back-off and silence are checked in milliseconds, never by sleeping.
    """

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """A message of a source that is not an item: kept as a dead letter with the problem.

    ``envelope`` is what the dead letter shows (the raw text, its path and position).
    """

    envelope: Mapping[str, Any]
    problem: str


@dataclass(frozen=True, slots=True)
class SourceProgress:
    """What an admission of a source's items also stores, in the same transaction.

    ``position`` (if not None) becomes the stored position of ``path``; ``delivered`` maps an
    admitted event's id to the key and :class:`Delivered` entry it stands for (applied only if
    that event was newly admitted, so a late repeat of an old version does not roll the entry
    back); ``rejected`` become dead letters. A crash before the commit loses none of it: the
    messages were not acknowledged and come again.
    """

    tenant: str
    source: str
    path: str
    position: str | None
    delivered: Mapping[str, tuple[str, Delivered]] = field(default_factory=dict)
    rejected: Sequence[RejectedItem] = ()

    @property
    def letter_subscription(self) -> str:
        """The subscription name the dead letters of rejected messages carry."""
        return f"source:{self.tenant}/{self.source}"


#: What went wrong on a source, as :class:`SourceFailure` reports it: a path's own error kind
#: (``bad_data`` also for a batch that brought messages that are no items: dead-lettered, while
#: the path itself worked), ``silence`` (a connected push path quiet for longer than
#: ``event_timeout``; a path that is not connected reports its own errors instead), ``storage``
#: (the center's store refused an admission: not the path's fault) or ``rollback`` (a mode
#: could not start).
FailureKind = str


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """One failure of a source, for whoever watches them (the RCA runner): which path, what
    kind (a :class:`SourceErrorKind` value, ``silence``, ``storage`` or ``rollback``), the
    detail, when (epoch seconds), and the mode the source was in."""

    tenant: str
    source: str
    path: str
    kind: FailureKind
    detail: str
    at: float
    mode: str
