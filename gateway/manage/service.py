"""Managing users and keys: the one place the rules live, for the CLI and the admin API alike.

Every change goes through the store, whose change counter makes it count on the very next
request in every gateway process on this host (``auth/verify.py``); with Redis, each write is
also announced there (the change epoch, ``ratelimit/redis_state.py``) for every other host. A
full key exists only in the value that ``create_key`` and ``rotate_key`` return; the store keeps
its SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.auth.keys import display_prefix, generate_key, hash_key, new_key_id
from gateway.config import GatewayConfig
from gateway.manage.audit import key_fields, new_event, user_fields
from gateway.manage.rules import (
    MAX_DURATION,
    InvalidField,
    ServiceError,
    check_day,
    check_limits,
    check_metadata,
    check_name,
    check_subscription,
    check_user_id,
    holds_a_key,
)
from gateway.manage.transfer import ImportReport, run_import
from gateway.store import ApiKey, AuditEvent, AuditFilter, DailyUsage, KeyStore, StoreError, User, UserUsage, open_store
from gateway.units import utc_day

T = TypeVar("T")

__all__ = [
    "AlreadyExists",
    "AlreadyReplaced",
    "ChangeNotAnnounced",
    "CreatedKey",
    "LimitReached",
    "ManagementService",
    "NotFound",
    "UserInactive",
    "open_service",
]


# Credits added or set at a time: far below what a 64-bit balance holds, so no sum overflows.
MAX_CREDITS = 10**15
# Old audit events are dropped at most this often per process (audit.retention_days).
AUDIT_SWEEP_SECONDS = 3600.0
# What "leave it as it is" is for update_key's fields, where None means "clear it".
UNCHANGED: Any = object()

log = logging.getLogger("gateway")


class ChangeNotAnnounced(StoreError):
    """The store took the write, but Redis could not tell the running gateways of it."""


class NotFound(ServiceError):
    """No user or key with that id."""


class AlreadyExists(ServiceError):
    """A user with that id exists already."""


class AlreadyReplaced(AlreadyExists):
    """The key was rotated already: rotating it again would make a second replacement."""

    def __init__(self, key_id: str, replaced_by: str) -> None:
        super().__init__(f"key {key_id} was rotated already: its replacement is {replaced_by}")
        self.replaced_by = replaced_by


class LimitReached(ServiceError):
    """A limit on keys is reached: 409 for the user's active keys (``portal.max_active_keys_per_user``),
    429 for what one portal session may do (``portal.max_keys_per_session``)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class UserInactive(ServiceError):
    """A key asked for a user whose subscription is not active, where only an active one's may be
    made (the portal: a user deleted, all of whose keys were revoked, must get no new one)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"{user_id} is inactive: no key is made for it here")


class CreditsChanged(Protocol):
    """Tells the running gateways of an operator's change to a balance (RedisState.change_credits)."""

    async def __call__(self, user_id: str, *, add: int | None, set_to: int | None, set_at: float) -> None: ...


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: the only object that ever holds the full key."""

    key: str
    record: ApiKey

    def __repr__(self) -> str:
        return f"CreatedKey(record={self.record!r}, key='{self.record.prefix}...')"


def portal_link_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class ManagementService:
    """What operators do to users and keys, the same for the CLI and the admin API: each change
    checked by the field rules, written to the store, and announced to every gateway."""

    def __init__(
        self,
        store: KeyStore,
        *,
        key_prefix: str,
        clock: Callable[[], float] = time.time,
        announce: Callable[[], Awaitable[object]] | None = None,
        change_credits: CreditsChanged | None = None,
        other_prefixes: Sequence[str] = (),
        audit_retention_days: int = 365,
    ) -> None:
        """``announce`` tells every gateway process of a change (RedisState.announce_change);
        ``change_credits`` makes the same change to a user's credit balance held in Redis (RedisState)."""
        self.store = store
        self._prefix = key_prefix
        self._key_prefixes = (key_prefix, *other_prefixes)
        self._clock = clock
        self._announce = announce
        self._change_credits = change_credits
        self._audit_retention = audit_retention_days * 86400.0
        self._audit_swept_at = float("-inf")

    async def _write(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a store write, announced before (an unreachable Redis stops it before anything is
        written) and after (a process that looked the key up in between drops what it read)."""
        announce = self._announce
        if announce is None:
            return await write()
        try:
            await announce()
        except Exception as exc:
            raise StoreError(
                f"Redis (redis.url) cannot be reached to tell the running gateways ({type(exc).__name__}: {exc});"
                " nothing was changed: run it again once Redis answers"
            ) from None
        result = await write()
        try:
            await announce()
        except Exception as exc:
            raise ChangeNotAnnounced(
                f"the change was written, but Redis stopped answering before the running gateways were told"
                f" ({type(exc).__name__}: {exc}): they may act on their cached copy for up to cache.ttl_seconds;"
                " run it again once Redis answers"
            ) from None
        return result

    def now(self) -> float:
        return self._clock()

    # ------------------------------------------------------------------------------ audit

    async def _audit(
        self,
        action: str,
        target_type: str,
        target: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        """Record a change made, by whoever ``audit.acting`` names. The change stands whether or
        not its record can be written: a store that took the change and then fails is logged."""
        at = self._clock()
        try:
            await self.store.record_audit(new_event(at, action, target_type, target, before, after))
            if at - self._audit_swept_at >= AUDIT_SWEEP_SECONDS:
                self._audit_swept_at = at
                await self.store.drop_audit_before(at - self._audit_retention)
        except Exception as exc:
            log.error(
                "audit_not_recorded action=%s target=%s: the change was made, its audit event was not written (%s)",
                action,
                target,
                type(exc).__name__,
            )

    async def audit_events(
        self,
        *,
        target: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[Sequence[AuditEvent], str | None]:
        """Audit events matching every filter given, newest first, a page of ``limit`` after
        ``cursor`` (the id of the last event of the page before); and the next page's cursor."""
        if cursor is not None and not _EVENT_ID.fullmatch(cursor):
            raise InvalidField("cursor: not one this API gave", "cursor")
        if not all(value is None or value.isprintable() for value in (target, actor, action)):
            return [], None  # no event has a NUL or a control character (PostgreSQL would refuse one)
        if not 1 <= limit <= 1000:
            raise InvalidField("limit: from 1 to 1000", "limit")
        matching = AuditFilter(target=target, actor=actor, action=action, since=since)
        found = await self.store.audit_events(matching, cursor, limit + 1)
        shown = found[:limit]
        return shown, shown[-1].id if len(found) > limit else None

    # ------------------------------------------------------------------------------ users

    def _looks_like_a_key(self, text: str) -> bool:
        """Whether ``text`` holds what may be a full key, of any prefix this gateway takes (its
        own, an earlier one, an imported one), anywhere in it ("Bearer mk_live_...")."""
        return holds_a_key(text, self._key_prefixes)

    def _no_user(self, user_id: str) -> NotFound:
        """No such user, said without echoing a full key given for its id."""
        if self._looks_like_a_key(user_id):
            return NotFound(f"no such user id: that looks like a full key ({self._prefix}...), not a user id")
        return NotFound(f"no user {user_id!r}")

    def _known_shape(self, user_id: str) -> str:
        """``user_id``, or NotFound if no user can have it (a NUL byte, say): never sent to a store
        that would fail on it."""
        try:
            return check_user_id(user_id)
        except InvalidField:
            raise self._no_user(user_id) from None

    async def add_user(self, user_id: str, subscription: str = "active") -> User:
        now = self._clock()
        if self._looks_like_a_key(user_id):
            # It would be sent upstream as X-User-Id and written to every access-log line.
            raise InvalidField(
                f"that looks like a full key ({self._prefix}...), not a user id: choose the user's own id", "user_id"
            )
        user = User(check_user_id(user_id), check_subscription(subscription), now, now)
        if not await self._write(lambda: self.store.add_user(user)):
            raise AlreadyExists(f"user {user_id!r} exists already")
        await self._audit("user.add", "user", user.id, None, user_fields(user))
        return user

    async def get_user(self, user_id: str) -> User:
        user = await self.store.get_user(self._known_shape(user_id))
        if user is None:
            raise self._no_user(user_id)
        return user

    async def set_subscription(self, user_id: str, subscription: str) -> User:
        before = await self.get_user(user_id)
        checked = check_subscription(subscription)
        user = await self._write(lambda: self.store.set_subscription(user_id, checked, self._clock()))
        if user is None:
            raise self._no_user(user_id)
        if user.subscription != before.subscription:
            await self._audit("user.subscription", "user", user_id, user_fields(before), user_fields(user))
        return user

    async def set_user_rate_limits(self, user_id: str, rate_limits: str | Sequence[str] | None) -> User:
        """Give the user its own limits over all its keys, or None for rate_limits.per_user;
        counts on its keys' next requests."""
        before = await self.get_user(user_id)
        checked = check_limits(rate_limits)
        user = await self._write(lambda: self.store.set_user_rate_limits(user_id, checked))
        assert user is not None
        if user.rate_limits != before.rate_limits:
            await self._audit("user.rate_limits", "user", user_id, user_fields(before), user_fields(user))
        return user

    async def credits(self, user_id: str, *, add: int | None = None, set_to: int | None = None) -> int:
        """The user's credit balance, after adding ``add`` or setting it to ``set_to`` (recorded)."""
        if add is not None and set_to is not None:
            raise InvalidField("add credits or set them, not both", "add")
        self._known_shape(user_id)
        for name, value in (("add", add), ("set", set_to)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidField(f"{name}: a whole number of credits", name)
            if value is not None and abs(value) > MAX_CREDITS:
                raise InvalidField(f"{name}: at most {MAX_CREDITS:,} credits at a time", name)
        if set_to is not None and set_to < 0:
            raise InvalidField("set: a balance cannot be below zero", "set")
        if add is None and set_to is None:
            found = await self.store.credit_balance(user_id)
            if found is None:
                raise self._no_user(user_id)
            return found[0]
        reason = f"set to {set_to}" if set_to is not None else f"added {add}"
        at = self._clock()
        balance = await self._write(
            lambda: self.store.change_credits(user_id, add=add or 0, set_to=set_to, reason=reason, at=at)
        )
        if balance is None:
            raise self._no_user(user_id)
        # What the operator asked for, and the balance it gave (others spend meanwhile: a balance
        # read before would not be this change's).
        await self._audit("user.credits", "user", user_id, None, {"add": add, "set": set_to, "credits": balance})
        if self._change_credits is not None:
            try:
                await self._change_credits(user_id, add=add, set_to=set_to, set_at=at)
            except Exception as exc:
                raise ChangeNotAnnounced(
                    f"the balance was written, but Redis stopped answering before the running gateways were told"
                    f" ({type(exc).__name__}: {exc}): they keep spending the old one until Redis answers; then run"
                    f" `gateway users credits {user_id} --add 0` to make them read it"
                ) from None
        return balance

    async def retire_user(self, user_id: str) -> tuple[User, int]:
        """Revoke all the user's keys at once and make it inactive, so that no key of it, old or
        new, works; the user and how many keys were revoked now. Its record and usage stay: an id
        is the operator's own, and the usage history still answers for it."""
        before = await self.get_user(user_id)
        retired = await self._write(lambda: self.store.retire_user(user_id, self._clock()))
        if retired is None:
            raise self._no_user(user_id)
        user, revoked = retired
        await self._audit(
            "user.delete", "user", user_id, user_fields(before), user_fields(user) | {"keys_revoked": revoked}
        )
        return retired

    async def list_users(self) -> Sequence[User]:
        return await self.store.list_users()

    async def usage(self, user_id: str | None = None) -> Sequence[UserUsage]:
        """Usage summed per user (as last written by the gateways: see usage.flush_seconds)."""
        if user_id is not None:
            await self.get_user(user_id)
        return await self.store.usage_by_user(user_id)

    async def daily_usage(
        self,
        *,
        key_id: str | None = None,
        user_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> tuple[str, str, Sequence[DailyUsage]]:
        """Usage per UTC day of one key or one user (all its keys), from ``since`` to ``until``
        (default: the 30 days up to today); days without usage are left out."""
        if (key_id is None) == (user_id is None):
            raise InvalidField("give a key or a user", "key_id")
        if key_id is not None:
            await self.get_key(key_id)
        else:
            assert user_id is not None
            await self.get_user(user_id)
        last = check_day(until, "to") if until is not None else utc_day(self._clock())[0]
        first = check_day(since, "from") if since is not None else utc_day(self._clock() - 29 * 86400)[0]
        if first > last:
            raise InvalidField("the first day comes after the last", "from")
        return first, last, await self.store.daily_usage(key_id=key_id, user_id=user_id, since=first, until=last)

    async def busiest_keys(self, limit: int = 10) -> Sequence[tuple[ApiKey, DailyUsage]]:
        """Today's (UTC) ``limit`` keys with the most requests, with their usage today (as last
        written by the gateways); each key carries its identity only."""
        return await self.store.busiest_keys(utc_day(self._clock())[0], limit)

    # ------------------------------------------------------------------------------- keys

    async def create_key(
        self,
        user_id: str,
        *,
        name: str | None = None,
        expires_in: float | None = None,
        rate_limits: str | Sequence[str] | None = None,
        max_active: int | None = None,
        active_only: bool = False,
        unchanged_since: float = math.inf,
    ) -> CreatedKey:
        """A new key for the user; with ``max_active``, LimitReached once it has that many active;
        with ``active_only``, UserInactive unless its subscription is active and unchanged since
        ``unchanged_since`` (checked as the key is written: a retirement at the same moment either
        revokes it or refuses it)."""
        await self.get_user(user_id)
        if expires_in is not None and not 0 < expires_in <= MAX_DURATION:
            raise InvalidField("a key's lifetime must be above zero and at most 100 years", "expires_in")
        expires_at = None if expires_in is None else self._clock() + expires_in
        created = self._new_key(user_id, self._check_name(name), expires_at, check_limits(rate_limits))
        now = self._clock()
        if not await self._write(
            lambda: self.store.add_key(
                created.record,
                max_active=max_active,
                now=now,
                active_user=active_only,
                unchanged_since=unchanged_since,
            )
        ):
            # Which check refused it: read again (the user could not have been active, if no limit).
            user = await self.get_user(user_id)
            if max_active is None or user.subscription != "active" or user.updated_at > unchanged_since:
                raise UserInactive(user_id)
            raise LimitReached(
                f"{user_id} has {max_active} active keys, the most allowed: revoke one to create another"
            )
        await self._audit("key.create", "key", created.record.id, None, key_fields(created.record))
        return created

    async def set_rate_limits(self, key_id: str, rate_limits: str | Sequence[str] | None) -> ApiKey:
        """Give the key its own limits, or None for rate_limits.default; counts on its next request."""
        before = await self.get_key(key_id)
        checked = check_limits(rate_limits)
        key = await self._write(lambda: self.store.set_rate_limits(key_id, checked))
        assert key is not None
        if key.rate_limits != before.rate_limits:
            await self._audit("key.rate_limits", "key", key_id, key_fields(before), key_fields(key))
        return key

    async def update_key(
        self, key_id: str, *, name: Any = UNCHANGED, expires_at: Any = UNCHANGED, metadata: Any = UNCHANGED
    ) -> ApiKey:
        """Set a key's name, expiry (Unix seconds) or metadata (a JSON object); None clears one.
        An expiry in the past stops the key now; a key that was rotated or revoked keeps its end."""
        before = await self.get_key(key_id)
        changes: dict[str, Any] = {}
        if name is not UNCHANGED:
            changes["name"] = self._check_name(name)
        if expires_at is not UNCHANGED:
            if before.revoked_at is not None or before.replaced_by is not None:
                raise self._end_stands(before)
            if expires_at is not None and (
                isinstance(expires_at, bool)
                or not isinstance(expires_at, int | float)
                or not 0 <= expires_at <= self._clock() + MAX_DURATION
            ):
                raise InvalidField("expires_at: a time from now to 100 years ahead", "expires_at")
            changes["expires_at"] = None if expires_at is None else float(expires_at)
        if metadata is not UNCHANGED:
            checked = check_metadata(metadata)
            if checked is not None and self._looks_like_a_key(checked):
                raise InvalidField(f"metadata must not hold a key ({self._prefix}...)", "metadata")
            changes["metadata"] = checked
        if not changes:
            raise InvalidField("nothing to change: give name, expires_at or metadata", "name")
        key = await self._write(lambda: self.store.update_key(key_id, changes))
        if key is None:  # revoked or rotated since it was read (the store checks it as it writes)
            raise self._end_stands(await self.get_key(key_id))
        await self._audit("key.update", "key", key_id, key_fields(before), key_fields(key))
        return key

    def _check_name(self, name: str | None) -> str | None:
        """A key's name: shown everywhere and kept in the audit trail, so never a key."""
        if name is not None and self._looks_like_a_key(name):
            raise InvalidField(f"a key's name must not hold a key ({self._prefix}...)", "name")
        return check_name(name)

    def _end_stands(self, key: ApiKey) -> InvalidField:
        how = "revoked" if key.revoked_at is not None else "rotated"
        return InvalidField(f"key {key.id} was {how}: its end stands", "expires_at")

    async def get_key(self, key_id: str) -> ApiKey:
        # An id no key can have (a NUL byte, say) is never sent to a store that would fail on it.
        key = await self.store.get_key(key_id) if key_id.isprintable() and len(key_id) <= 255 else None
        if key is None:
            if self._looks_like_a_key(key_id):
                # A full key given for its id: never echoed (it would land in a terminal's
                # scrollback, a shell history's neighbour, an admin API log).
                raise NotFound(f"no such key id: that looks like a full key ({self._prefix}...), not its id")
            raise NotFound(f"no key {key_id!r}")
        return key

    async def get_own_key(self, user_id: str, key_id: str) -> ApiKey:
        """``user_id``'s key ``key_id``: another user's key is not found, as an unknown one."""
        key = await self.get_key(key_id)
        if key.user_id != user_id:
            raise NotFound(f"no key {key_id!r}")
        return key

    async def add_portal_link(self, user_id: str, *, return_url: str | None, ttl: float) -> tuple[str, float]:
        """A one-time token that opens ``user_id``'s portal session within ``ttl`` seconds, and
        when it expires. The store keeps only its SHA-256."""
        await self.get_user(user_id)
        token = secrets.token_urlsafe(32)
        now = self.now()
        await self.store.add_portal_link(portal_link_digest(token), user_id, return_url, now + ttl, now)
        return token, now + ttl

    async def take_portal_link(self, token: str) -> tuple[str, str | None] | None:
        """The (user id, return url) of a portal link, which opens nothing after: None for an
        unknown, used or expired token."""
        found = await self.store.take_portal_link(portal_link_digest(token))
        if found is None or found[2] <= self.now():
            return None
        return found[0], found[1]

    async def find_key(self, key: str) -> ApiKey:
        """The stored key whose full key is ``key`` (a leaked key's owner); NotFound otherwise. The
        key is never echoed: it is hashed, looked up by its hash, and forgotten."""
        # The key exactly as given (a key is printable ASCII: anything else finds nothing).
        found = await self.store.find_key(hash_key(key.encode("utf-8", "replace")))
        if found is None:
            raise NotFound("no stored key is that key")
        return found[0]

    async def list_keys(self, user_id: str | None = None) -> Sequence[ApiKey]:
        if user_id is not None:
            await self.get_user(user_id)
        return await self.store.list_keys(user_id)

    async def revoke_key(self, key_id: str) -> tuple[ApiKey, bool]:
        """The key, revoked now, and whether it had been revoked before."""
        before = await self.get_key(key_id)
        key = await self._write(lambda: self.store.revoke_key(key_id, self._clock()))
        assert key is not None
        if before.revoked_at is None:
            await self._audit("key.revoke", "key", key_id, key_fields(before), key_fields(key))
        return key, before.revoked_at is not None

    async def rotate_key(
        self,
        key_id: str,
        *,
        grace: float | None = None,
        max_active: int | None = None,
        active_only: bool = False,
        unchanged_since: float = math.inf,
    ) -> tuple[CreatedKey, ApiKey]:
        """A new key for the same user and name, and the old key, which stops now or after ``grace``;
        with ``max_active``, a grace only while the user has at most that many active keys (the old
        and the new key overlap by one, and no more): LimitReached otherwise."""
        now = self._clock()
        old = await self.get_key(key_id)
        # A key in its grace period is still active, but rotating it again would make a second
        # replacement that copies the grace period's end as its expiry (a retried POST …/rotate).
        if old.replaced_by is not None:
            raise AlreadyReplaced(old.id, old.replaced_by)
        if old.status(now) != "active":
            raise InvalidField(f"key {key_id} is {old.status(now)}: create a new key instead", "key_id")
        if grace is not None and not 0 <= grace <= MAX_DURATION:
            raise InvalidField("a grace period is from zero to 100 years", "grace")
        # The new key expires when the old one would have: a rotation never extends a key's life.
        created = self._new_key(old.user_id, old.name, old.expires_at, old.rate_limits)
        grace_until = now + grace if grace else None
        rotated = await self._write(
            lambda: self.store.rotate_key(
                old.id,
                created.record,
                now=now,
                grace_until=grace_until,
                max_active=max_active,
                active_user=active_only,
                unchanged_since=unchanged_since,
            )
        )
        if not rotated:
            found = await self.get_key(old.id)
            if found.replaced_by is None and found.revoked_at is not None:  # revoked since it was read
                raise InvalidField(f"key {key_id} is revoked: create a new key instead", "key_id")
            if found.replaced_by is None and active_only:
                user = await self.get_user(old.user_id)
                if (
                    max_active is None
                    or grace_until is None
                    or user.subscription != "active"
                    or user.updated_at > unchanged_since
                ):
                    raise UserInactive(old.user_id)
            if found.replaced_by is None:  # not replaced: the limit refused the grace
                raise LimitReached(
                    f"{old.user_id} has more than {max_active} active keys, the most allowed:"
                    " rotate this key with the old one stopping now, or revoke a key first"
                )
            raise AlreadyReplaced(old.id, found.replaced_by)  # another rotation landed since it was read
        after = await self.get_key(old.id)
        await self._audit("key.rotate", "key", old.id, key_fields(old), key_fields(after))
        await self._audit(
            "key.create", "key", created.record.id, None, key_fields(created.record) | {"rotated_from": old.id}
        )
        return created, after

    # ---------------------------------------------------------------------------- import

    async def import_lines(self, lines: AsyncIterable[str], *, dry_run: bool, prefixes: Sequence[str]) -> ImportReport:
        """gateway import (transfer.py): all of ``lines`` or nothing; announced like any write."""

        async def write() -> ImportReport:
            async with self.store.import_session() as session:
                return await run_import(session, lines, now=self._clock(), dry_run=dry_run, prefixes=prefixes)

        report = await (write() if dry_run else self._write(write))
        if report.written:
            counts = report.document()
            await self._audit("import", "store", "import", None, {"users": counts["users"], "keys": counts["keys"]})
        return report

    def _new_key(self, user_id: str, name: str | None, expires_at: float | None, rate_limits: str | None) -> CreatedKey:
        now = self._clock()
        key = generate_key(self._prefix)
        record = ApiKey(
            id=new_key_id(),
            user_id=user_id,
            name=name,
            prefix=display_prefix(key, self._prefix),
            key_hash=hash_key(key.encode()),
            created_at=now,
            expires_at=expires_at,
            rate_limits=rate_limits,
        )
        return CreatedKey(key=key, record=record)


# An audit event's id (audit.new_event): what a cursor must look like.
_EVENT_ID = re.compile(r"[0-9a-f]{24}")


@contextlib.asynccontextmanager
async def open_service(
    config: GatewayConfig, *, redis_timeout: float | None = None
) -> AsyncIterator[ManagementService]:
    """A ManagementService on the configured store, announcing its writes through Redis if redis.url is set."""
    store = await open_store(config.store.url)
    try:
        if config.redis.url is None:
            yield ManagementService(
                store,
                key_prefix=config.keys.prefix,
                other_prefixes=_other_prefixes(config),
                audit_retention_days=config.audit.retention_days,
            )
            return
        from gateway.ratelimit.redis_state import RedisState

        state = RedisState(config.redis.url, timeout=redis_timeout or config.redis.timeout)
        try:
            yield ManagementService(
                store,
                key_prefix=config.keys.prefix,
                other_prefixes=_other_prefixes(config),
                audit_retention_days=config.audit.retention_days,
                announce=state.announce_change,
                change_credits=state.change_credits,
            )
        finally:
            await state.aclose()
    finally:
        await store.close()


def _other_prefixes(config: GatewayConfig) -> tuple[str, ...]:
    """The prefixes of keys this gateway takes besides its own: never to be echoed or taken for an id."""
    return (*config.keys.earlier_prefixes, *config.keys.legacy_prefixes)
