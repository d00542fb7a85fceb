"""The item sink: where every path of every data source hands its items to the center.

It turns each :class:`~eventcenter.domain.sources.Received` into an event and admits them all
through the processor's durable, idempotent admission, with the path's position and the
delivered-item record in the same commit:

- an item becomes ``source.item.changed`` (``source.item.deleted`` for a tombstone) with the
  source's tenant and name; the payload carries ``key``, ``version``, ``deleted`` and
  ``data``; the metadata the ``path`` it came by, its ``position``, the source's own
  ``occurred_at`` and, for a reconciliation's correction, ``correction`` (missing, changed,
  deleted);
- its idempotency key is ``<key>@<version>`` (a sha256 of it when longer than the center's
  ``max_key_length``), scoped to tenant and source: whichever path brings an item version,
  push, poll or reconciliation, and however often, it is admitted once;
- a message that is no item (unparseable, no key, no version, a payload over the envelope's
  limits) becomes a dead letter of subscription ``source:<tenant>/<source>`` with the
  problem, committed with the rest; the flow goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from eventcenter.domain.errors import InvalidEvent
from eventcenter.domain.event import Event
from eventcenter.domain.reconcile import item_digest
from eventcenter.domain.sources import (
    RAW_MAX,
    Delivered,
    InvalidItem,
    Received,
    RejectedItem,
    SourceItem,
    SourceProgress,
)
from eventcenter.handlers.processor import EventProcessor

CHANGED = "source.item.changed"
DELETED = "source.item.deleted"
REJECTED = "source.item.rejected"


class CenterItemSink:
    """Implements :class:`~eventcenter.domain.sources.ItemSink` on a processor with a store."""

    def __init__(self, processor: EventProcessor) -> None:
        store = processor.store
        if store is None:
            raise ValueError("data sources need a durable store: use an EventCenter")
        self._processor = processor
        self._store = store

    async def admit(
        self,
        tenant: str,
        source: str,
        path: str,
        received: Sequence[Received],
        position: str | None,
        *,
        correction: str | None = None,
    ) -> list[str | None]:
        events: list[Event] = []
        keys: list[str | None] = []
        delivered: dict[str, tuple[str, Delivered]] = {}
        rejected: list[RejectedItem] = []
        slots: list[int | None] = []  # per message: its index in events, or None if rejected
        # The batch's first event of each type is validated in full; the others share its
        # type, tenant and source, and only their content is checked (Event.sibling).
        first: dict[str, Event] = {}
        for message in received:
            item = message.item
            try:
                if item is None:
                    raise InvalidItem(message.problem or "not an item")
                event = self._event(tenant, source, path, message, item, correction, first)
                digest = item_digest(item)
            except (InvalidItem, InvalidEvent) as problem:
                rejected.append(self._rejected(tenant, source, path, message, str(problem)))
                slots.append(None)
                continue
            slots.append(len(events))
            events.append(event)
            keys.append(self._key(item))
            delivered[event.id_text] = (item.key, Delivered(item.version, digest, item.deleted))
        progress = SourceProgress(tenant, source, path, position, delivered, tuple(rejected))
        ids = await self._processor.publish_events(events, keys, progress=progress)
        results: list[str | None] = []
        for slot in slots:
            if slot is None:
                results.append(None)
                continue
            admitted = ids[slot]
            results.append(admitted if admitted == events[slot].id_text else None)
        return results

    async def position(self, tenant: str, source: str, path: str) -> str | None:
        return await self._store.source_position(tenant, source, path)

    async def delivered(self, tenant: str, source: str) -> dict[str, Delivered]:
        return await self._store.source_delivered(tenant, source)

    # building events ---------------------------------------------------------------------------

    def _event(
        self,
        tenant: str,
        source: str,
        path: str,
        message: Received,
        item: SourceItem,
        correction: str | None,
        first: dict[str, Event],
    ) -> Event:
        metadata: dict[str, Any] = {"path": path, "position": message.position}
        if item.occurred_at is not None:
            metadata["occurred_at"] = item.occurred_at
        if correction is not None:
            metadata["correction"] = correction
        payload = {
            "key": item.key,
            "version": item.version,
            "deleted": item.deleted,
            "data": dict(item.data),
        }
        kind = DELETED if item.deleted else CHANGED
        limits = self._processor.settings.limits
        like = first.get(kind)
        if like is not None:
            return like.sibling(payload, metadata, limits)
        event = Event.create(
            kind, payload, tenant=tenant, source=source, metadata=metadata, limits=limits
        )
        first[kind] = event
        return event

    def _key(self, item: SourceItem) -> str:
        key = f"{item.key}@{item.version}"
        if len(key) <= self._processor.settings.max_key_length and "\n" not in key:
            return key
        return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()

    def _rejected(
        self, tenant: str, source: str, path: str, message: Received, problem: str
    ) -> RejectedItem:
        payload: dict[str, Any] = {"raw": message.raw[:RAW_MAX], "problem": problem}
        if message.item is not None:  # an item the envelope's limits refused
            payload["key"] = message.item.key[:RAW_MAX]
            payload["version"] = message.item.version
        envelope = Event.create(
            REJECTED,
            payload,
            tenant=tenant,
            source=source,
            metadata={"path": path, "position": message.position},
        ).to_dict()
        return RejectedItem(envelope=envelope, problem=problem)
