"""Access control: API tokens with scopes, per-token rate limits, and the audit log.

Tokens are bearer secrets of 256 random bits (``efh_`` and 43 URL-safe characters). The hub keeps only
their sha256. A slow password hash (bcrypt, argon2) protects *low-entropy* secrets from guessing
after a database leak; a 256-bit random token cannot be guessed whatever the hash, so one fast sha256
is enough, and a token is checked on every request without spending milliseconds of CPU on it.

Scopes: ``admin`` may do everything (tokens, audit log); ``operator`` manages devices, models,
rollouts and drift; ``read-only`` reads; ``device`` acts as the one device its token names (posting
its own escalations, reading its own record, downloading models) and nothing else.

:class:`TokenBucket` is the rate limiter's pure core: it takes the time as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from cloud_hub.store import ApiToken, AuditEntry, Page, Scope, Store, page_of, utc_now
from protocol.errors import TopicError
from protocol.topics import check_segment

TOKEN_PREFIX = "efh_"
READ_SCOPES = frozenset({Scope.ADMIN, Scope.OPERATOR, Scope.READ_ONLY})
OPERATE_SCOPES = frozenset({Scope.ADMIN, Scope.OPERATOR})
ADMIN_SCOPES = frozenset({Scope.ADMIN})


class AuthError(Exception):
    """A token could not be made (a device token without a device, say)."""


def new_secret() -> str:
    """A fresh token secret: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    token_id: int
    scope: Scope
    device_id: str | None
    label: str

    @property
    def actor(self) -> str:
        """A short name for logs and transitions: ``token:<id>`` (and the device for device tokens)."""
        return f"token:{self.token_id}" + (f"/{self.device_id}" if self.device_id else "")

    def may_act_as(self, device_id: str) -> bool:
        """A device token only for its own device; admin for any."""
        if self.scope is Scope.DEVICE:
            return self.device_id is not None and hmac.compare_digest(self.device_id, device_id)
        return self.scope is Scope.ADMIN


async def create_token(store: Store, *, scope: Scope, device_id: str | None = None, label: str = "") -> tuple[str, int]:
    """Make and store a token; return its secret (shown once, never stored) and its id."""
    if scope is Scope.DEVICE:
        if device_id is None:
            raise AuthError("a device token needs the device it acts as (--device)")
        try:
            check_segment(device_id, "device")
        except TopicError as exc:
            raise AuthError(exc.reason) from exc
    elif device_id is not None:
        raise AuthError(f"only device tokens name a device; a {scope.value} token acts for no one device")
    secret = new_secret()
    async with store.transaction("create a token") as session:
        row = ApiToken(
            token_hash=hash_token(secret), scope=scope, device_id=device_id, label=label[:128], created_at=utc_now()
        )
        session.add(row)
        await session.flush()
        token_id = row.id
    return secret, token_id


async def ensure_token(store: Store, secret: str, *, scope: Scope = Scope.ADMIN, label: str = "bootstrap") -> int:
    """Register a token whose secret comes from the settings (the bootstrap admin token) unless it exists."""
    digest = hash_token(secret)
    async with store.transaction("register the bootstrap token") as session:
        existing = await session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        if existing is not None:
            return existing.id
        row = ApiToken(token_hash=digest, scope=scope, device_id=None, label=label, created_at=utc_now())
        session.add(row)
        await session.flush()
        return row.id


async def revoke_token(store: Store, token_id: int) -> bool:
    """Revoke a token; ``False`` if there is no such live token."""
    async with store.transaction("revoke a token") as session:
        row = await session.get(ApiToken, token_id, with_for_update=True)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utc_now()
        return True


async def count_live_tokens(store: Store, scope: Scope) -> int:
    async with store.transaction("count tokens") as session:
        count = await session.scalar(
            select(func.count()).select_from(ApiToken).where(ApiToken.scope == scope, ApiToken.revoked_at.is_(None))
        )
    return count or 0


async def list_tokens(store: Store) -> list[ApiToken]:
    async with store.transaction("list tokens") as session:
        return list(await session.scalars(select(ApiToken).order_by(ApiToken.id)))


class Authenticator:
    """Finds the principal of a bearer token; remembers answers for ``cache_s`` seconds.

    The cache saves a database round trip per request; a revoked token stops working within
    ``cache_s`` on every worker.
    """

    def __init__(self, store: Store, *, cache_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, secret: str) -> Principal | None:
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 256:
            return None
        digest = hash_token(secret)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        async with self._store.transaction("check a token") as session:
            row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        principal = None
        if row is not None and row.revoked_at is None:
            principal = Principal(token_id=row.id, scope=row.scope, device_id=row.device_id, label=row.label)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, principal)
        return principal

    def forget(self) -> None:
        self._cache.clear()


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` says how long to wait when empty."""

    rate: float
    burst: float
    level: float = field(default=-1.0)
    updated: float = 0.0

    def take(self, now: float) -> float:
        """Take one token at time ``now``: 0.0 if allowed, else the seconds until one is available."""
        if self.level < 0:
            self.level, self.updated = self.burst, now
        self.level = min(self.burst, self.level + (now - self.updated) * self.rate)
        self.updated = now
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / self.rate


class RateLimiter:
    """One :class:`TokenBucket` per API token, in this worker's memory."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[int, TokenBucket] = {}

    def retry_after(self, token_id: int) -> float:
        """0.0 if the token may make a request now, else the seconds it must wait."""
        bucket = self._buckets.get(token_id)
        if bucket is None:
            bucket = self._buckets[token_id] = TokenBucket(rate=self._rate, burst=self._burst)
        return bucket.take(self._clock())


async def audit(
    store: Store,
    *,
    principal: Principal | None,
    action: str,
    target: str,
    status: int,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Record one privileged action in the audit log."""
    async with store.transaction("write the audit log") as session:
        session.add(
            AuditEntry(
                at=at or utc_now(),
                token_id=principal.token_id if principal else None,
                scope=principal.scope.value if principal else None,
                device_id=principal.device_id if principal else None,
                action=action[:128],
                target=target[:512],
                status=status,
                detail=detail or {},
            )
        )


async def list_audit(
    store: Store, *, token_id: int | None = None, since: datetime | None = None, limit: int = 100, offset: int = 0
) -> Page[AuditEntry]:
    """Audit entries, newest first."""
    conditions = []
    if token_id is not None:
        conditions.append(AuditEntry.token_id == token_id)
    if since is not None:
        conditions.append(AuditEntry.at >= since)
    async with store.transaction("read the audit log") as session:
        query = select(AuditEntry).order_by(AuditEntry.id.desc())
        return await page_of(session, query, AuditEntry, conditions, limit=limit, offset=offset)
