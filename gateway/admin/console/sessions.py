"""The console's sessions: who signed in (the admin token's name) and their CSRF token, behind a
random session id that only the browser's cookie holds.

A session ends after ``console.session_idle_timeout`` without a request, ``console.session_lifetime``
after signing in, or when its operator signs out, whichever comes first; expiry is checked on
every request against the injected clock. The id is 256 bits from ``secrets`` and is kept only
as its SHA-256 (a copy of the records, or a log of them, opens no session); a new one is made at
every sign-in, so an id planted before it is worth nothing.

The records live in this process's memory (a restart signs every operator out), or in Redis when
``redis.url`` is set: ``serve --workers N`` has every worker answer the admin listener, and each
must know every session.

Each record carries a mark: an HMAC of everything in it and of where it is kept (its id's digest),
keyed by the token it was signed in with (the portal's: by a key derived from every admin token),
checked whenever the session is used and made again each time it is seen. A token removed from
the config, or given another value, ends its sessions at their next request; a record written
into Redis by someone without the token, or by another deployment with other tokens, a live
record with a field changed (another actor, a start in the future, a later last use, another
return URL), or a live record copied whole under another id, opens nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

__all__ = [
    "MemorySessionRecords",
    "RedisSessionRecords",
    "Session",
    "SessionRecords",
    "Sessions",
    "token_keys",
    "user_keys",
]

# Sessions kept at most in memory: a flood of sign-ins (each needs a token) cannot grow it past this.
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    actor: str  # the name of the admin token signed in with ("admin" for the unnamed one); the portal's user id
    csrf: str  # the token every form of this session posts back
    started_at: float
    seen_at: float
    token_mark: str = ""  # _mark(its key, its id's digest, the session)
    back: str = ""  # a portal session's return_url: where its "Back to" link goes
    replaced: str = ""  # a portal session opened in a browser that showed another account: that one

    def __repr__(self) -> str:
        return f"Session(actor={self.actor!r})"


class SessionRecords(Protocol):
    """Where sessions are kept, by the SHA-256 of their id; a record past ``ttl`` seconds may go."""

    async def put(self, digest: str, session: Session, ttl: float, *, only_if_kept: bool = False) -> bool:
        """Keep ``session``; with ``only_if_kept``, only if a record of ``digest`` is still kept (a
        session being seen again, not brought back after it ended in between). Whether it was."""
        ...

    async def get(self, digest: str) -> Session | None: ...

    async def delete(self, digest: str) -> None: ...

    async def count(self, digest: str, ttl: float, by: int = 1) -> int:
        """Add ``by`` to the session's counter (kept ``ttl`` seconds) and return it: atomically, so
        concurrent requests of one session each get their own number."""
        ...


class MemorySessionRecords:
    """In this process's memory: the oldest seen goes first when MAX_SESSIONS are kept."""

    def __init__(self, clock: Callable[[], float] = time.time, max_sessions: int = MAX_SESSIONS) -> None:
        self._records: dict[str, tuple[Session, float]] = {}  # digest -> (session, kept until)
        self._counts: dict[str, int] = {}  # digest -> counter, gone with its session
        self._clock = clock
        self._max = max_sessions

    async def put(self, digest: str, session: Session, ttl: float, *, only_if_kept: bool = False) -> bool:
        if only_if_kept and digest not in self._records:
            return False
        self._records.pop(digest, None)
        if len(self._records) >= self._max:
            now = self._clock()
            self._records = {d: kept for d, kept in self._records.items() if kept[1] > now}
            while len(self._records) >= self._max:  # dicts keep insertion order: the least recently put first
                del self._records[next(iter(self._records))]
            self._counts = {d: n for d, n in self._counts.items() if d in self._records}
        self._records[digest] = (session, self._clock() + ttl)
        return True

    async def get(self, digest: str) -> Session | None:
        kept = self._records.get(digest)
        return kept[0] if kept is not None and kept[1] > self._clock() else None

    async def delete(self, digest: str) -> None:
        self._records.pop(digest, None)
        self._counts.pop(digest, None)

    async def count(self, digest: str, ttl: float, by: int = 1) -> int:
        # No await in between: one event loop, so no other request runs inside.
        self._counts[digest] = counted = self._counts.get(digest, 0) + by
        return counted


class RedisSessionRecords:
    """In Redis, each record a JSON string that Redis drops when its ttl has passed."""

    PREFIX = "gateway:console:session:"

    def __init__(self, url: str, *, timeout: float, prefix: str = PREFIX) -> None:
        """``prefix`` keeps one kind of session apart from another (the portal's)."""
        import redis.asyncio as redis

        self.PREFIX = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    async def put(self, digest: str, session: Session, ttl: float, *, only_if_kept: bool = False) -> bool:
        # XX: set only if the key exists, in one step (an end() between a find's read and this
        # write would otherwise be undone).
        kept = await self._client.set(
            self.PREFIX + digest, json.dumps(asdict(session)), px=max(1, int(ttl * 1000)), xx=only_if_kept
        )
        return bool(kept)

    async def get(self, digest: str) -> Session | None:
        found = await self._client.get(self.PREFIX + digest)
        if found is None:
            return None
        try:
            session = Session(**json.loads(found))
        except (ValueError, TypeError):  # not a record of ours: no session
            return None
        return session if _well_formed(session) else None

    async def delete(self, digest: str) -> None:
        await self._client.delete(self.PREFIX + digest, self.PREFIX + digest + ":count")

    async def count(self, digest: str, ttl: float, by: int = 1) -> int:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrby(self.PREFIX + digest + ":count", by)
            pipe.pexpire(self.PREFIX + digest + ":count", max(1, int(ttl * 1000)))
            counted, _ = await pipe.execute()
        return int(counted)

    async def aclose(self) -> None:
        await self._client.aclose()


def _well_formed(session: Session) -> bool:
    """Each field of the type it has (a record written by someone else may hold anything)."""
    texts = (session.actor, session.csrf, session.token_mark, session.back, session.replaced)
    times = (session.started_at, session.seen_at)
    return all(isinstance(text, str) for text in texts) and all(
        isinstance(moment, int | float) and not isinstance(moment, bool) and math.isfinite(moment) for moment in times
    )


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def _mark(key: bytes, digest: str, session: Session) -> str:
    """The HMAC of a session's record, keyed by ``key``: all it holds, and the digest of its id
    (where it is kept), so that no field can be changed and no record copied under another id."""
    fields = [digest, session.actor, session.csrf, session.started_at, session.seen_at, session.back, session.replaced]
    return hmac.new(key, json.dumps(fields).encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def token_keys(tokens: Sequence[tuple[str, str]]) -> Callable[[str], bytes | None]:
    """The console's keys: each session's, the token it was signed in with (by its name)."""
    by_name = {name: token.encode() for name, token in tokens}
    return by_name.get


def user_keys(tokens: Sequence[tuple[str, str]]) -> Callable[[str], bytes | None] | None:
    """The portal's key, for every user's session: derived from every configured admin token,
    which only this deployment's gateways hold (a change of the tokens ends every portal
    session). None when no token is configured: no marks (``serve`` refuses that with Redis)."""
    if not tokens:
        return None
    key = hashlib.sha256(b"gateway portal session\0" + b"\0".join(t.encode() for _, t in sorted(tokens))).digest()
    return lambda _user_id: key


class Sessions:
    """Starts, finds (and keeps alive) and ends sessions, with their expiry rules."""

    def __init__(
        self,
        records: SessionRecords,
        *,
        keys: Callable[[str], bytes | None] | None,
        idle_timeout: float,
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``keys``: what an actor's sessions are marked with (``token_keys``, ``user_keys``; None
        for an actor that may have none); None: no marks to check."""
        self._records = records
        self._keys = keys
        self._idle = idle_timeout
        self._lifetime = lifetime
        self._clock = clock

    def remaining(self, session: Session) -> float:
        """Seconds until the session ends unless seen again: it goes idle, or its lifetime ends."""
        return min(session.seen_at + self._idle, session.started_at + self._lifetime) - self._clock()

    _ttl = remaining  # how long its record must be kept

    async def start(self, actor: str, *, back: str = "", replaced: str = "") -> tuple[str, Session]:
        """A new session for ``actor``, and its id (for the cookie, and nowhere else)."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(
            actor=actor,
            csrf=secrets.token_urlsafe(32),
            started_at=now,
            seen_at=now,
            back=back,
            replaced=replaced,
        )
        digest = _digest(session_id)
        session = self._marked(digest, session)
        await self._records.put(digest, session, self._ttl(session))
        return session_id, session

    def _marked(self, digest: str, session: Session) -> Session:
        if self._keys is None:
            return session
        key = self._keys(session.actor)
        assert key is not None, "a session for an actor without a key"
        return replace(session, token_mark=_mark(key, digest, session))

    async def find(self, session_id: str) -> Session | None:
        """The live session of this id, now seen again; None for an unknown, ended or expired one."""
        digest = _digest(session_id)
        session = await self._records.get(digest)
        if session is None:
            return None
        now = self._clock()
        key = None if self._keys is None else self._keys(session.actor)
        marked = self._keys is None or (
            key is not None and hmac.compare_digest(session.token_mark.encode(), _mark(key, digest, session).encode())
        )
        if (
            not marked
            or now - session.seen_at >= self._idle
            or not session.started_at <= now < session.started_at + self._lifetime
        ):
            await self._records.delete(digest)
            return None
        seen = self._marked(digest, replace(session, seen_at=now))
        if not await self._records.put(digest, seen, self._ttl(seen), only_if_kept=True):
            return None  # ended while it was being read
        return seen

    async def end(self, session_id: str) -> None:
        await self._records.delete(_digest(session_id))

    async def count(self, session_id: str, session: Session, by: int = 1) -> int:
        """One more (``by``) of what the session may do only so many times (the portal's keys): how
        many now. Kept until the session's lifetime ends, the latest it can be used."""
        ends_in = session.started_at + self._lifetime - self._clock()
        return await self._records.count(_digest(session_id), max(ends_in, 1.0), by)
