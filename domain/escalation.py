"""Escalation: what reaches a person when a failure cannot be healed, and how they answer.

An RCA case that runs out of healing strategies escalates: an :class:`EscalationNotice` goes to
the tenant's sinks (a webhook, the log, a callback). Like a StackStorm inquiry, the case then
waits for a person; unlike one it does not expire unanswered: it keeps reminding them, at a
pace the :class:`RenotifyPolicy` sets (a wait after each sending, optionally growing, a bounded
number of times), until someone answers. An :class:`Answer` is validated like an inquiry's
response against its schema: an acknowledgement names who took the case, a resolution also
says what was done; anything else is refused with the field and the reason.

Everything here is plain values and pure functions with ``now`` passed in (epoch seconds: the
times are stored with the case and must mean the same after a restart). Sending is
:mod:`eventcenter.healing.escalation`'s job; recording is the case's.

The notice's body is canonical JSON (sorted keys, no spaces): the same notice gives the same
bytes, which is what a signature is computed over. Each sending of a case has its own
:attr:`~EscalationNotice.notice_id`, derived from the case id and the sending's number, so a
retried or repeated sending carries the same id (a receiver drops the repeat) while a
re-notification is a new notice.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Self
from uuid import NAMESPACE_URL, uuid5

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from eventcenter.domain.errors import ConfigurationError, InvalidAnswer, InvalidNotice
from eventcenter.domain.event import NAME_PATTERN, NAME_RULE

__all__ = [
    "NOTICE_TYPE",
    "NOTICE_VERSION",
    "Answer",
    "AnswerAction",
    "Attempt",
    "EscalationNotice",
    "OpenEscalation",
    "RenotifyPolicy",
    "next_renotify_at",
    "renotification_due",
]

NOTICE_TYPE = "eventcenter.escalation"
"""The body's ``type``: lets a receiver that gets several kinds of webhook tell this one."""

NOTICE_VERSION = 1
"""The body's ``version``: raised when a field changes meaning, never for an added field."""

TEXT_MAX = 4_000  # characters in a summary, a note, one piece of evidence
ID_MAX = 200  # characters in a case id, a correlation id, a category, a severity, a name

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/escalation")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One healing strategy tried before the case escalated, and how it ended."""

    strategy: str
    outcome: str


@dataclass(frozen=True, slots=True)
class EscalationNotice:
    """What a person is told about one escalated case, at one sending.

    ``opened_at``/``escalated_at``/``notified_at`` are epoch seconds; ``notification`` numbers
    the sendings of the case (1: the escalation, 2 and up: re-notifications) and
    ``notified_at`` is when this one was sent (left out: ``escalated_at``, see
    :attr:`sent_at`). ``source`` is None
    for a failure that belongs to no data source (a handler, a health check). ``links`` are
    extra places to look or answer (a dashboard, the API), by name.
    """

    case_id: str
    tenant: str
    source: str | None
    category: str
    severity: str
    summary: str
    evidence: Sequence[str]
    attempts: Sequence[Attempt]
    opened_at: float
    escalated_at: float
    correlation_id: str = ""
    notification: int = 1
    notified_at: float | None = None
    links: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", tuple(self.evidence))
        object.__setattr__(self, "attempts", tuple(self.attempts))
        object.__setattr__(self, "links", dict(self.links))
        if self.notified_at is None:  # the first sending goes out when the case escalates
            object.__setattr__(self, "notified_at", self.escalated_at)
        _check_text("case_id", self.case_id, ID_MAX)
        _check_name("tenant", self.tenant)
        if self.source is not None:
            _check_name("source", self.source)
        _check_text("category", self.category, ID_MAX)
        _check_text("severity", self.severity, ID_MAX)
        _check_text("summary", self.summary, TEXT_MAX)
        _check_text("correlation_id", self.correlation_id, ID_MAX, empty=True)
        for index, item in enumerate(self.evidence):
            _check_text(f"evidence.{index}", item, TEXT_MAX)
        for index, attempt in enumerate(self.attempts):
            if not isinstance(attempt, Attempt):
                raise InvalidNotice(f"attempts.{index}", "must be an Attempt(strategy, outcome)")
            _check_text(f"attempts.{index}.strategy", attempt.strategy, ID_MAX)
            _check_text(f"attempts.{index}.outcome", attempt.outcome, TEXT_MAX)
        for name, url in self.links.items():
            _check_text("links", name, ID_MAX)
            _check_text(f"links.{name}", url, TEXT_MAX)
        self._check_times()

    def _check_times(self) -> None:
        for name in ("opened_at", "escalated_at", "notified_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidNotice(name, f"must be epoch seconds, got {value!r}")
            if not math.isfinite(value):
                raise InvalidNotice(name, f"must be a finite number of seconds, got {value}")
        if self.escalated_at < self.opened_at:
            raise InvalidNotice(
                "escalated_at",
                f"the case escalated ({self.escalated_at}) before it was opened ({self.opened_at})",
            )
        if self.notified_at is not None and self.notified_at < self.escalated_at:
            raise InvalidNotice(
                "notified_at",
                f"notified ({self.notified_at}) before the case escalated ({self.escalated_at})",
            )
        if isinstance(self.notification, bool) or not isinstance(self.notification, int):
            raise InvalidNotice(
                "notification", f"must be a whole number, got {self.notification!r}"
            )
        if self.notification < 1:
            raise InvalidNotice("notification", f"must be 1 or more, got {self.notification}")

    @property
    def notice_id(self) -> str:
        """This sending's id: the same for every retry of it, new for each re-notification."""
        return str(uuid5(_NAMESPACE, f"{self.case_id}/{self.notification}"))

    @property
    def sent_at(self) -> float:
        """When this notice was sent (``notified_at``, filled in when it was left out)."""
        return self.escalated_at if self.notified_at is None else self.notified_at

    @property
    def answer_hints(self) -> dict[str, str]:
        """The commands that answer the case, ready to paste into a shell."""
        case = shlex.quote(self.case_id)
        return {
            "acknowledge": f"eventcenter rca ack {case}",
            "resolve": f"eventcenter rca resolve {case} --note '<what was done>'",
        }

    def renotified(self, now: float) -> EscalationNotice:
        """The next sending of this case, at ``now``: the same facts, a new number and id."""
        return replace(self, notification=self.notification + 1, notified_at=now)

    def as_dict(self) -> dict[str, Any]:
        """The body as plain JSON values (see :meth:`body`)."""
        return {
            "type": NOTICE_TYPE,
            "version": NOTICE_VERSION,
            "notice_id": self.notice_id,
            "notification": self.notification,
            "case_id": self.case_id,
            "tenant": self.tenant,
            "source": self.source,
            "category": self.category,
            "severity": self.severity,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "attempts": [{"strategy": a.strategy, "outcome": a.outcome} for a in self.attempts],
            "opened_at": self.opened_at,
            "escalated_at": self.escalated_at,
            "notified_at": self.sent_at,
            "correlation_id": self.correlation_id,
            "links": dict(self.links),
            "answer": self.answer_hints,
        }

    def body(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, UTF-8. Equal notices give equal bytes."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_body(cls, body: bytes | str) -> EscalationNotice:
        """Read a body made by :meth:`body` back (a receiver's side, and the tests').

        Raises :class:`InvalidNotice` naming the field: not JSON, another ``type`` or
        ``version``, an unknown or missing field, a ``notice_id`` that does not belong to the
        case and sending it names.
        """
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidNotice("body", f"is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise InvalidNotice("body", f"must be a JSON object, got {type(data).__name__}")
        if data.get("type") != NOTICE_TYPE:
            raise InvalidNotice("type", f"must be {NOTICE_TYPE!r}, got {data.get('type')!r}")
        if data.get("version") != NOTICE_VERSION:
            raise InvalidNotice(
                "version",
                f"this reader knows version {NOTICE_VERSION}, got {data.get('version')!r}",
            )
        given_id = data.get("notice_id")
        fields = {k: v for k, v in data.items() if k not in _DERIVED}
        try:
            checked = _BodyFields.model_validate(fields).model_dump()
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise InvalidNotice(where, first["msg"].removeprefix("Value error, ")) from None
        attempts = [Attempt(**attempt) for attempt in checked.pop("attempts")]
        notice = cls(attempts=attempts, **checked)
        if given_id != notice.notice_id:
            raise InvalidNotice(
                "notice_id",
                f"{given_id!r} is not the id of sending {notice.notification} of case"
                f" {notice.case_id!r} ({notice.notice_id})",
            )
        return notice


_DERIVED = frozenset({"type", "version", "notice_id", "answer"})


class _AttemptFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: str
    outcome: str


class _BodyFields(BaseModel):
    """The fields of a body that are the notice's own (the rest is derived from them)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    notification: int
    case_id: str
    tenant: str
    source: str | None
    category: str
    severity: str
    summary: str
    evidence: list[str]
    attempts: list[_AttemptFields]
    opened_at: float
    escalated_at: float
    notified_at: float
    correlation_id: str
    links: dict[str, str]


def _check_text(name: str, value: object, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidNotice(name, f"must be text, got {type(value).__name__}")
    if not empty and not value.strip():
        raise InvalidNotice(name, "must not be empty")
    if len(value) > limit:
        raise InvalidNotice(name, f"is {len(value)} characters long; the limit is {limit}")
    return value


def _check_name(name: str, value: object) -> None:
    text = _check_text(name, value, ID_MAX)
    if not NAME_PATTERN.fullmatch(text) or ".." in text:
        raise InvalidNotice(name, f"{NAME_RULE}, got {text!r}")


# --- re-notification -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenotifyPolicy:
    """When an unanswered case reminds its people again.

    The first re-notification comes ``after`` seconds after the escalation; each following
    wait is ``factor`` times the one before (1: a steady rhythm), at most ``max_wait``; after
    ``max_renotifications`` of them the case stays escalated, silently, until answered (0:
    never remind). Waits count from the last sending, whether it reached anyone or not, so a
    receiver that is down is not hammered.
    """

    after: float = 1800.0
    factor: float = 2.0
    max_wait: float = 4 * 3600.0
    max_renotifications: int = 5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.after) and self.after > 0):
            raise ConfigurationError(f"renotify after must be > 0 seconds, got {self.after}")
        if not (math.isfinite(self.factor) and self.factor >= 1.0):
            raise ConfigurationError(
                f"renotify factor must be >= 1 (1: the same wait each time), got {self.factor}"
            )
        if not (math.isfinite(self.max_wait) and self.max_wait >= self.after):
            raise ConfigurationError(
                f"renotify max_wait ({self.max_wait} s) must be at least after ({self.after} s)"
            )
        count = self.max_renotifications
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigurationError(
                f"max_renotifications must be a whole number >= 0, got {count!r}"
            )

    def due_at(self, sendings: int, last_sent_at: float) -> float | None:
        """When the next reminder is due for a case sent ``sendings`` times so far (the
        escalation included), the last at ``last_sent_at``; None once the reminders are spent."""
        if sendings > self.max_renotifications:
            return None
        return last_sent_at + self.wait_before(sendings)

    def wait_before(self, renotification: int) -> float:
        """Seconds from the previous sending to re-notification number ``renotification``."""
        if renotification < 1:
            raise ValueError(f"re-notifications are numbered from 1, got {renotification}")
        try:
            return min(self.max_wait, self.after * self.factor ** (renotification - 1))
        except OverflowError:  # a very late one: the power exceeds a float, the cap applies
            return self.max_wait


@dataclass(frozen=True, slots=True)
class OpenEscalation:
    """An escalated case as its owner knows it: the last notice sent, when it was sent (epoch
    seconds, as recorded), and whether a person answered (acknowledged or resolved)."""

    notice: EscalationNotice
    last_sent_at: float
    answered: bool = False


def next_renotify_at(policy: RenotifyPolicy, escalation: OpenEscalation) -> float | None:
    """When the case is due to re-notify, or None: answered, or its reminders are spent."""
    if escalation.answered:
        return None
    # the notice's number is the sendings so far
    return policy.due_at(escalation.notice.notification, escalation.last_sent_at)


def renotification_due(
    policy: RenotifyPolicy, escalation: OpenEscalation, now: float
) -> EscalationNotice | None:
    """The notice to send at ``now``, or None when nothing is due yet (or ever again)."""
    due = next_renotify_at(policy, escalation)
    if due is None or now < due:
        return None
    return escalation.notice.renotified(max(now, escalation.notice.sent_at))


# --- answers -------------------------------------------------------------------------------------


class AnswerAction(StrEnum):
    """What a person does with an escalated case."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class Answer(BaseModel):
    """A person's answer to an escalated case, checked like an inquiry response: ``action``,
    who answers (``by``), and a ``note``; a resolve must say what was done. Unknown fields are
    refused, so a typo (``notes``) is an error rather than an answer without its note.

    Build one with :meth:`acknowledge`, :meth:`resolve` or :meth:`parse` (an API body); each
    raises :class:`InvalidAnswer` naming the field. :meth:`json_schema` is the JSON schema to
    publish for answering clients.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    action: AnswerAction
    by: str = Field(min_length=1, max_length=ID_MAX, description="who answers")
    note: str | None = Field(
        None,
        max_length=TEXT_MAX,
        validate_default=True,
        description="what was found or done; required to resolve",
    )

    @field_validator("note")
    @classmethod
    def _resolve_says_what(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            if info.data.get("action") == AnswerAction.RESOLVE:
                raise ValueError("a resolve needs a non-empty note saying what was done")
            return None
        return value

    @classmethod
    def acknowledge(cls, by: str, note: str | None = None) -> Self:
        """``by`` takes the case: re-notifications stop, the case stays open."""
        return cls.parse({"action": AnswerAction.ACKNOWLEDGE.value, "by": by, "note": note})

    @classmethod
    def resolve(cls, by: str, note: str) -> Self:
        """``by`` closes the case, saying in ``note`` what was done."""
        return cls.parse({"action": AnswerAction.RESOLVE.value, "by": by, "note": note})

    @classmethod
    def parse(cls, data: Mapping[str, Any] | bytes | str) -> Self:
        """Validate an answer given as a mapping or as JSON text; raise :class:`InvalidAnswer`."""
        try:
            if isinstance(data, bytes | str):
                return cls.model_validate_json(data)
            return cls.model_validate(dict(data))
        except ValidationError as error:
            raise _invalid_answer(error) from None

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON schema of an answer (what an API or a chat bridge shows and checks)."""
        return cls.model_json_schema()


_ANSWER_FIELDS = ", ".join(Answer.model_fields)


def _invalid_answer(error: ValidationError) -> InvalidAnswer:
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "answer"
        if item["type"] == "extra_forbidden":
            reason = f"unknown field (an answer has: {_ANSWER_FIELDS})"
        elif item["type"] == "missing":
            reason = "is required"
        else:
            reason = item["msg"].removeprefix("Value error, ")
        problems.append((where, reason))
    return InvalidAnswer(problems)
