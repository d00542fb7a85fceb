"""API keys of the HTTP API, kept hashed: a key is shown once, when it is made, and never stored.

``center_api_keys``
    One row per key: its public ``id`` (10 hex characters, also the start of the key itself),
    the sha256 of the whole key, its scope (``tenant`` with the tenant's name, or ``admin``),
    a label, when it was created and when it was revoked (``NULL`` while it is valid). Keys
    belong to the store, not to one center name: every center on the store accepts them.

A key reads ``ek_<id>_<secret>`` where the secret comes from :func:`secrets.token_urlsafe`
(256 bits). Its id finds the row; the digest of the whole key must match (compared in constant
time). The table is created by the center's writer at start (with the other tables) and by
``eventcenter keys create``; reading a store without it finds no key.

:class:`ApiKeyStore` opens a connection per call and keeps none between calls (``NullPool``):
the CLI makes one call, and the HTTP API caches what it found (see
:mod:`eventcenter.center.api_auth`), so a lookup reaches the store only on a cache miss.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from eventcenter.domain.errors import ApiKeyRefused
from eventcenter.domain.event import NAME_PATTERN, NAME_RULE
from eventcenter.storage.tables import retry_created_concurrently

__all__ = [
    "ADMIN",
    "KEY_PREFIX",
    "TENANT",
    "ApiKey",
    "ApiKeyStore",
    "create_tables",
    "digest",
    "key_id_of",
    "valid_tenant",
]

metadata = MetaData()

api_keys = Table(
    "center_api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("scope", String(8), nullable=False),
    Column("tenant", String(200), nullable=True),
    Column("label", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

TABLES = (api_keys,)

#: The scopes of a key: one tenant's data, or everything (``admin``).
TENANT = "tenant"
ADMIN = "admin"

KEY_PREFIX = "ek_"
ID_LENGTH = 10
LABEL_MAX = 200
TENANT_MAX = 128  # the envelope's max_name_length by default
_KEY = re.compile(rf"{KEY_PREFIX}([0-9a-f]{{{ID_LENGTH}}})_[A-Za-z0-9_-]{{16,200}}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What the store says about a key (never the key itself)."""

    id: str
    scope: str
    tenant: str | None
    label: str
    created_at: float
    revoked_at: float | None

    @property
    def admin(self) -> bool:
        return self.scope == ADMIN

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "scope": self.scope,
            "tenant": self.tenant,
            "label": self.label,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def create_tables(connection: Connection) -> None:
    metadata.create_all(connection, checkfirst=True)


def digest(key: str) -> str:
    """The sha256 of a key, as stored (hex)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id inside a key, or None if the text is not shaped like a key."""
    found = _KEY.fullmatch(key)
    return found.group(1) if found else None


def valid_tenant(tenant: str) -> str:
    """``tenant`` if it is a tenant name events can carry; ApiKeyRefused saying why if not."""
    if not 0 < len(tenant) <= TENANT_MAX:
        raise ApiKeyRefused(f"a tenant name has 1 to {TENANT_MAX} characters, got {tenant!r}")
    if not NAME_PATTERN.fullmatch(tenant) or ".." in tenant:
        raise ApiKeyRefused(f"tenant {NAME_RULE}, got {tenant!r}")
    return tenant


def _valid_label(label: str) -> str:
    if len(label) > LABEL_MAX or _UNPRINTABLE.search(label):
        raise ApiKeyRefused(
            f"a label has at most {LABEL_MAX} printable characters (no control characters)"
        )
    return label


def _row(values: tuple[object, ...]) -> ApiKey:
    key_id, scope, tenant, label, created_at, revoked_at = values
    return ApiKey(
        id=str(key_id),
        scope=str(scope),
        tenant=None if tenant is None else str(tenant),
        label=str(label),
        created_at=float(created_at),  # type: ignore[arg-type]
        revoked_at=None if revoked_at is None else float(revoked_at),  # type: ignore[arg-type]
    )


_COLUMNS = (
    api_keys.c.id,
    api_keys.c.scope,
    api_keys.c.tenant,
    api_keys.c.label,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


class ApiKeyStore:
    """The keys of the store at ``url``: create, list, revoke, and check a key.

    Every call opens one connection and closes it; :meth:`close` disposes of the engine.
    Database errors are raised as SQLAlchemy raises them (the CLI names the store).
    """

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url, poolclass=NullPool)

    def close(self) -> None:
        self._engine.dispose()

    def create(self, tenant: str | None, label: str, at: float) -> tuple[ApiKey, str]:
        """A new key for ``tenant`` (None: an admin key); the row and the key, shown once."""
        scope = ADMIN if tenant is None else TENANT
        if tenant is not None:
            valid_tenant(tenant)
        _valid_label(label)

        def attempt() -> tuple[ApiKey, str]:
            with self._engine.begin() as connection:
                create_tables(connection)
                while True:
                    key_id = secrets.token_hex(ID_LENGTH // 2)
                    taken = connection.execute(
                        select(api_keys.c.id).where(api_keys.c.id == key_id)
                    ).first()
                    if taken is None:
                        break
                key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
                row = ApiKey(key_id, scope, tenant, label, at, None)
                connection.execute(
                    insert(api_keys).values(
                        id=key_id,
                        digest=digest(key),
                        scope=scope,
                        tenant=tenant,
                        label=label,
                        created_at=at,
                        revoked_at=None,
                    )
                )
            return row, key

        return retry_created_concurrently(attempt)

    def all_keys(self) -> list[ApiKey]:
        """Every key, oldest first (none when no key was ever made on this store)."""
        with self._engine.connect() as connection:
            if not inspect(connection).has_table(api_keys.name):
                return []
            query = select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
            return [_row(tuple(values)) for values in connection.execute(query).all()]

    def revoke(self, key_id: str, at: float) -> tuple[ApiKey, bool]:
        """Revoke a key; the row and whether this call revoked it (False: it was already).

        Raises ApiKeyRefused when no key has that id."""
        with self._engine.begin() as connection:
            found = self._find(connection, key_id)
            if found is None:
                raise ApiKeyRefused(f"no API key {key_id!r} (eventcenter keys list shows them)")
            row, _ = found
            if row.revoked:
                return row, False
            connection.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=at)
            )
        return ApiKey(row.id, row.scope, row.tenant, row.label, row.created_at, at), True

    def check(self, key: str) -> ApiKey | None:
        """The key's row if ``key`` is one of this store's keys (revoked or not), else None."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        with self._engine.connect() as connection:
            found = self._find(connection, key_id)
        if found is None:
            return None
        row, stored = found
        return row if hmac.compare_digest(stored, digest(key)) else None

    @staticmethod
    def _find(connection: Connection, key_id: str) -> tuple[ApiKey, str] | None:
        if not inspect(connection).has_table(api_keys.name):
            return None
        values = connection.execute(
            select(*_COLUMNS, api_keys.c.digest).where(api_keys.c.id == key_id)
        ).first()
        if values is None:
            return None
        return _row(tuple(values)[:-1]), str(values[-1])
