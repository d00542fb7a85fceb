"""Who is calling the HTTP API: an API key scoped to one tenant, or an admin key.

A request names its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (keys are
made by ``eventcenter keys create``, see :mod:`eventcenter.storage.api_keys`). A route asks for
its caller with a dependency, ``caller: CurrentCaller`` (any valid key) or
``caller: AdminCaller`` (admin keys only), and scopes what it reads or changes with
:class:`Caller`'s methods: a tenant key sees its tenant's data only, an admin key everything.

- no key, a key that is not one of the store's, or a revoked key: ``401`` (``unauthorized``)
  with ``WWW-Authenticate: Bearer``;
- a valid key that may not do this: ``403`` (``forbidden``), naming the field at fault;
- the store cannot be reached to check the key: ``503`` with ``Retry-After``.

What a lookup found (the key's scope, or that it is unknown or revoked) is trusted for
``[http] key_cache`` seconds (5 by default), per key digest, at most ``MAX_CACHED`` keys: a
key revoked from the CLI is refused by a running server within that time, and a burst of
requests costs one read of the store per key and period. ``[http] auth = "none"`` (loopback
hosts only, see :class:`~eventcenter.center.settings.HttpSettings`) makes every caller an
admin and reads no key.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from eventcenter.center.api_errors import Refusal
from eventcenter.storage.api_keys import ApiKey, ApiKeyStore, digest
from eventcenter.storage.writer import is_transient, short_error

__all__ = [
    "MAX_CACHED",
    "AdminCaller",
    "ApiAuth",
    "Caller",
    "CurrentCaller",
    "admin_only",
    "authenticated",
]

MAX_CACHED = 10_000
"""Key lookups remembered at most (the oldest are forgotten first)."""

KEY_HEADER = "X-API-Key"


@dataclass(frozen=True, slots=True)
class Caller:
    """The key a request came with: ``tenant`` is None for an admin key (or ``auth = none``)."""

    key_id: str | None
    tenant: str | None
    label: str = ""

    @property
    def admin(self) -> bool:
        return self.tenant is None

    @property
    def name(self) -> str:
        """How a decision names who made it: ``api key <id> (<label>)``."""
        if self.key_id is None:
            return "api (auth none)"
        return f"api key {self.key_id}" + (f" ({self.label})" if self.label else "")

    def sees(self, tenant: str | None) -> bool:
        """Whether this caller may see data of ``tenant``."""
        return self.tenant is None or self.tenant == tenant

    def tenant_filter(self, asked: str | None) -> str | None:
        """The tenant a list is filtered by: an admin's ``?tenant=`` (None: every tenant), a
        tenant key's own tenant (asking for another one is 403)."""
        if self.tenant is None:
            return asked
        if asked is not None and asked != self.tenant:
            raise self.forbidden("tenant", "this key reads its own tenant's data only")
        return self.tenant

    def may_write(self, tenant: str, *, field: str = "tenant", index: int | None = None) -> None:
        """Refuse (403) to act for ``tenant`` unless this caller is that tenant's or admin."""
        if not self.sees(tenant):
            raise self.forbidden(
                field,
                f"is {tenant!r}, but this key is tenant {self.tenant!r}'s: it may only send"
                f" and change that tenant's data",
                index=index,
            )

    def forbidden(self, field: str, reason: str, *, index: int | None = None) -> Refusal:
        return Refusal(403, "forbidden", reason, field=field, index=index)


OPEN = Caller(key_id=None, tenant=None)
"""The caller of every request under ``auth = "none"``: an admin."""

_MISSING = (
    f"no API key: send 'Authorization: Bearer <key>' or '{KEY_HEADER}: <key>'"
    " (eventcenter keys create makes one)"
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}

#: A lookup's verdict: the caller, or why the key is refused.
_Verdict = Caller | str


class ApiAuth:
    """Checks the key of each request against the store's keys, with a short cache.

    ``keys`` is None under ``auth = "none"``. ``clock`` (monotonic seconds) times the cache;
    tests pass a fake one to expire it.
    """

    def __init__(
        self,
        keys: ApiKeyStore | None,
        *,
        cache_seconds: float,
        retry_after: float,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._keys = keys
        self._ttl = cache_seconds
        self._retry_after = retry_after
        self._clock = clock
        self._max = max_cached
        self._cache: OrderedDict[str, tuple[float, _Verdict]] = OrderedDict()
        self.lookups = 0  # reads of the store (cache misses)

    @property
    def enabled(self) -> bool:
        return self._keys is not None

    def close(self) -> None:
        if self._keys is not None:
            self._keys.close()

    async def caller(self, request: Request) -> Caller:
        """The caller of ``request``, or a Refusal (401, or 503 when the store is down)."""
        if self._keys is None:
            return OPEN
        key = _presented_key(request)
        verdict = await self._verdict(key)
        if isinstance(verdict, str):
            raise Refusal(401, "unauthorized", verdict, headers=_CHALLENGE)
        return verdict

    async def _verdict(self, key: str) -> _Verdict:
        assert self._keys is not None
        hashed = digest(key)
        now = self._clock()
        cached = self._cache.get(hashed)
        if cached is not None and cached[0] > now:
            return cached[1]
        self.lookups += 1
        try:
            row = await asyncio.to_thread(self._keys.check, key)
        except Exception as error:
            if not is_transient(error):
                raise
            raise Refusal(
                503,
                "store_unavailable",
                f"cannot check the API key: the store cannot be reached ({short_error(error)})",
                retry_after=self._retry_after,
            ) from None
        verdict = _judge(row)
        self._cache[hashed] = (now + self._ttl, verdict)
        self._cache.move_to_end(hashed)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return verdict


def _judge(row: ApiKey | None) -> _Verdict:
    if row is None:
        return "unknown API key (eventcenter keys list shows the valid ones)"
    if row.revoked:
        return f"API key {row.id} was revoked"
    return Caller(key_id=row.id, tenant=None if row.admin else row.tenant, label=row.label)


def _presented_key(request: Request) -> str:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refusal(
                401,
                "unauthorized",
                "must be 'Bearer <key>'",
                field="Authorization",
                headers=_CHALLENGE,
            )
        return value.strip()
    header = request.headers.get(KEY_HEADER)
    if header is not None and header.strip():
        return header.strip()
    raise Refusal(401, "unauthorized", _MISSING, headers=_CHALLENGE)


# FastAPI dependencies: the security schemes make the OpenAPI document say how to send a key;
# the key itself is read from the request by ApiAuth, so a malformed header gets a clear 401.
_bearer = HTTPBearer(
    auto_error=False, description="an API key: Authorization: Bearer ek_<id>_<secret>"
)
_header = APIKeyHeader(
    name=KEY_HEADER, auto_error=False, description="an API key, instead of Authorization"
)


async def authenticated(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Caller:
    """The caller of a request to an app built by ``create_app`` (its ``state.auth``)."""
    auth: ApiAuth = request.app.state.auth
    return await auth.caller(request)


CurrentCaller = Annotated[Caller, Depends(authenticated)]


async def admin_only(caller: CurrentCaller) -> Caller:
    """The caller, if it holds an admin key (403 otherwise)."""
    if not caller.admin:
        raise caller.forbidden(
            "Authorization", "needs an admin key (eventcenter keys create --admin)"
        )
    return caller


AdminCaller = Annotated[Caller, Depends(admin_only)]
