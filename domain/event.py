"""The event envelope: what every published event looks like once it is accepted.

Validation happens once, here, at the boundary. An envelope that exists is valid: downstream
code never re-checks it. Bounds on sizes come from :class:`EnvelopeLimits`, passed in by the
caller (the processor's settings), so they are documented in one place and configurable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from pydantic import (
    UUID4,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from eventcenter.domain.errors import InvalidEvent
from eventcenter.domain.priority import Priority

#: One segment of a dot-notation type: letters, digits, ``_`` and ``-``.
SEGMENT = r"[A-Za-z0-9_-]+"
TYPE_PATTERN = re.compile(rf"^{SEGMENT}(\.{SEGMENT})*$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:@/-]+$")


class EnvelopeLimits(BaseModel):
    """Bounds every envelope must respect. Defaults suit control-plane events, not bulk data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_type_length: int = Field(128, ge=1, description="characters in `type`")
    max_name_length: int = Field(128, ge=1, description="characters in `source`, `tenant`")
    max_payload_bytes: int = Field(64 * 1024, ge=2, description="bytes of the payload as JSON")
    max_metadata_bytes: int = Field(8 * 1024, ge=2, description="bytes of metadata as JSON")
    max_depth: int = Field(16, ge=1, description="nesting depth of payload and metadata")


DEFAULT_LIMITS = EnvelopeLimits()


def _limits(info: ValidationInfo) -> EnvelopeLimits:
    context = info.context
    if isinstance(context, EnvelopeLimits):
        return context
    return DEFAULT_LIMITS


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, giving up as soon as ``limit`` is exceeded."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _check_json(value: dict[str, Any], what: str, max_bytes: int, max_depth: int) -> None:
    # Depth first: json.dumps recurses, so a small but very deep value must be refused before.
    if _depth(value, max_depth) > max_depth:
        raise ValueError(f"{what} nests deeper than {max_depth} levels")
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-serialisable: {error}") from None
    if size > max_bytes:
        raise ValueError(f"{what} is {size} bytes as JSON; the limit is {max_bytes}")


class Event(BaseModel):
    """An accepted event. Immutable; build one with :meth:`create` or :meth:`parse`.

    ``type`` is dot notation (``deployment.changed``), ``tenant`` scopes fairness and audit,
    ``correlation_id`` ties together everything one cause set off (defaults to the event's id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID4 = Field(default_factory=uuid4)
    type: str
    source: str = "app"
    tenant: str = "default"
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    priority: Priority = Priority.NORMAL
    correlation_id: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)
    version: str = "1"

    @field_validator("type")
    @classmethod
    def _valid_type(cls, value: str, info: ValidationInfo) -> str:
        limit = _limits(info).max_type_length
        if len(value) > limit:
            raise ValueError(f"is {len(value)} characters long; the limit is {limit}")
        if not TYPE_PATTERN.match(value):
            raise ValueError(
                "must be dot notation: segments of letters, digits, '_' or '-' joined by '.'"
                f" (e.g. 'deployment.changed'), got {value!r}"
            )
        return value

    @field_validator("source", "tenant")
    @classmethod
    def _valid_name(cls, value: str, info: ValidationInfo) -> str:
        limit = _limits(info).max_name_length
        if not 0 < len(value) <= limit:
            raise ValueError(f"must be 1 to {limit} characters long")
        if not NAME_PATTERN.match(value):
            raise ValueError(f"may hold letters, digits and _ . : @ / - only, got {value!r}")
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Priority:
        return Priority.parse(value)

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limits = _limits(info)
        _check_json(value, "payload", limits.max_payload_bytes, limits.max_depth)
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limits = _limits(info)
        _check_json(value, "metadata", limits.max_metadata_bytes, limits.max_depth)
        return value

    @model_validator(mode="after")
    def _default_correlation(self) -> Event:
        if not self.correlation_id:
            object.__setattr__(self, "correlation_id", str(self.id))
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any], limits: EnvelopeLimits = DEFAULT_LIMITS) -> Event:
        """Validate a mapping (e.g. decoded JSON) into an Event or raise :class:`InvalidEvent`."""
        try:
            return cls.model_validate(data, context=limits)
        except ValidationError as error:
            raise invalid_event(error) from None

    @classmethod
    def create(
        cls,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        limits: EnvelopeLimits = DEFAULT_LIMITS,
        **fields: Any,
    ) -> Event:
        """Build and validate an event; unset fields get their defaults (new id, now, NORMAL)."""
        data: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        data["type"] = type
        if payload is not None:
            data["payload"] = payload
        return cls.parse(data, limits)

    def to_dict(self) -> dict[str, Any]:
        """The envelope as plain JSON values (ids and times as strings)."""
        return self.model_dump(mode="json")


def invalid_event(error: ValidationError) -> InvalidEvent:
    """Translate pydantic's error into ours, naming the first offending field."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "event"
    reason = first["msg"].removeprefix("Value error, ")
    return InvalidEvent(field, reason)
