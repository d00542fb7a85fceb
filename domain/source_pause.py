"""Pausing a data source: an operator's request, the pause in effect, what came of a request.

A paused source runs no engine: no push subscription, no polling, no reconciliation, so it
admits nothing. Its positions stay where the last admission left them (they are committed with
the items, and messages are acknowledged only after that), so resuming reads on from there:
nothing is lost and nothing is admitted twice. The pause is a decision in the source's log
(``Paused`` and ``Resumed``, each with when, why and by whom), so it outlives the process: a
center that starts finds the source paused and leaves its engines stopped until it is resumed.

Both commands are idempotent: pausing a paused source, or resuming one that is not paused,
records nothing and says so (:attr:`PauseResult.changed` is False, :attr:`PauseResult.outcome`
names what is in effect). A request retried after a lost answer, or given twice by two
operators, changes nothing the second time; neither is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from eventcenter.domain.errors import InvalidPauseRequest

__all__ = ["BY_MAX", "REASON_MAX", "PauseAction", "PauseRequest", "PauseResult", "PauseState"]

BY_MAX = 200  # characters naming who asked
REASON_MAX = 2_000  # characters of a reason


class PauseAction(StrEnum):
    """What an operator asks of a source."""

    PAUSE = "pause"
    RESUME = "resume"


class PauseRequest(BaseModel):
    """A request to pause or resume a source, checked before anything is recorded: who asks
    (``by``) and why (``reason``: required to pause, optional to resume). Unknown fields are
    refused, so a typo (``reasons``) is an error rather than a pause without its reason.

    Build one with :meth:`pause`, :meth:`resume` or :meth:`parse` (an API body); each raises
    :class:`InvalidPauseRequest` naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    action: PauseAction
    by: str = Field(min_length=1, max_length=BY_MAX, description="who asks")
    reason: str = Field(
        "",
        max_length=REASON_MAX,
        validate_default=True,
        description="why; required to pause",
    )

    @field_validator("reason")
    @classmethod
    def _pause_says_why(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.data.get("action") == PauseAction.PAUSE:
            raise ValueError("a pause needs a non-empty reason saying why")
        return value

    @classmethod
    def pause(cls, by: str, reason: str) -> Self:
        return cls.parse({"action": PauseAction.PAUSE.value, "by": by, "reason": reason})

    @classmethod
    def resume(cls, by: str, reason: str = "") -> Self:
        return cls.parse({"action": PauseAction.RESUME.value, "by": by, "reason": reason})

    @classmethod
    def parse(cls, data: Mapping[str, Any] | bytes | str) -> Self:
        """Validate a request given as a mapping or as JSON text; raise
        :class:`InvalidPauseRequest` naming every problem."""
        try:
            if isinstance(data, bytes | str):
                return cls.model_validate_json(data)
            return cls.model_validate(dict(data))
        except ValidationError as error:
            raise _invalid(error) from None


_FIELDS = ", ".join(PauseRequest.model_fields)


def _invalid(error: ValidationError) -> InvalidPauseRequest:
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "request"
        if item["type"] == "extra_forbidden":
            reason = f"unknown field (a pause request has: {_FIELDS})"
        elif item["type"] == "missing":
            reason = "is required"
        else:
            reason = item["msg"].removeprefix("Value error, ")
        problems.append((where, reason))
    return InvalidPauseRequest(problems)


@dataclass(frozen=True, slots=True)
class PauseState:
    """A pause in effect: since when (epoch seconds), why, and who asked."""

    at: float
    reason: str
    by: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "reason": self.reason, "by": self.by}


@dataclass(frozen=True, slots=True)
class PauseResult:
    """What a pause or resume request did to a source.

    ``changed`` is False when the source was already as asked (nothing recorded); ``paused`` is
    the pause in effect afterwards (None: the source runs, or will when its center runs);
    ``mode`` the recorded mode, the one a paused source resumes in.
    """

    tenant: str
    source: str
    action: PauseAction
    changed: bool
    paused: PauseState | None
    mode: str

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.source}"

    @property
    def outcome(self) -> str:
        """One line: ``paused``, ``paused already (by ...: ...)``, ``resumed``, ``not
        paused: nothing to resume``."""
        if self.action is PauseAction.PAUSE:
            if self.changed:
                return "paused"
            held = self.paused
            return "paused already" + (f" (by {held.by}: {held.reason})" if held else "")
        return "resumed" if self.changed else "not paused: nothing to resume"

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON values (an API's answer)."""
        return {
            "tenant": self.tenant,
            "source": self.source,
            "action": self.action.value,
            "changed": self.changed,
            "paused": self.paused is not None,
            "pause": None if self.paused is None else self.paused.as_dict(),
            "mode": self.mode,
            "outcome": self.outcome,
        }
