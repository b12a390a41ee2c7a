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

Each record carries a mark of the token it was signed in with (an HMAC keyed by the token), checked
against the configured tokens whenever the session is used: a token removed from the config, or
given another value, ends its sessions at their next request; a record written into Redis by
someone without the token, or by another deployment with other tokens, opens nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

__all__ = ["MemorySessionRecords", "RedisSessionRecords", "Session", "SessionRecords", "Sessions", "user_marks"]

# Sessions kept at most in memory: a flood of sign-ins (each needs a token) cannot grow it past this.
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    actor: str  # the name of the admin token signed in with ("admin" for the unnamed one); the portal's user id
    csrf: str  # the token every form of this session posts back
    started_at: float
    seen_at: float
    token_mark: str = ""  # token_mark(the token signed in with)
    back: str = ""  # a portal session's return_url: where its "Back to" link goes

    def __repr__(self) -> str:
        return f"Session(actor={self.actor!r})"


class SessionRecords(Protocol):
    """Where sessions are kept, by the SHA-256 of their id; a record past ``ttl`` seconds may go."""

    async def put(self, digest: str, session: Session, ttl: float) -> None: ...

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

    async def put(self, digest: str, session: Session, ttl: float) -> None:
        self._records.pop(digest, None)
        if len(self._records) >= self._max:
            now = self._clock()
            self._records = {d: kept for d, kept in self._records.items() if kept[1] > now}
            while len(self._records) >= self._max:  # dicts keep insertion order: the least recently put first
                del self._records[next(iter(self._records))]
            self._counts = {d: n for d, n in self._counts.items() if d in self._records}
        self._records[digest] = (session, self._clock() + ttl)

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

    async def put(self, digest: str, session: Session, ttl: float) -> None:
        await self._client.set(self.PREFIX + digest, json.dumps(asdict(session)), px=max(1, int(ttl * 1000)))

    async def get(self, digest: str) -> Session | None:
        found = await self._client.get(self.PREFIX + digest)
        if found is None:
            return None
        try:
            return Session(**json.loads(found))
        except (ValueError, TypeError):  # not a record of ours: no session
            return None

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


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def token_mark(token: str) -> str:
    """What a session keeps of its token: nothing that opens anything, and different for every token."""
    return hmac.new(token.encode(), b"gateway console session", hashlib.sha256).hexdigest()


def user_marks(tokens: Sequence[tuple[str, str]]) -> Callable[[str], str] | None:
    """The marks of portal sessions (opened by a link, for a user): an HMAC of the user's id keyed
    by every configured admin token, which only this deployment's gateways hold, so that a record
    written into Redis without them opens nothing. None (no marks) when no token is configured;
    a change of the tokens ends every portal session."""
    if not tokens:
        return None
    key = hashlib.sha256(b"gateway portal session\0" + b"\0".join(t.encode() for _, t in sorted(tokens))).digest()
    return lambda user_id: hmac.new(key, user_id.encode("utf-8", "replace"), hashlib.sha256).hexdigest()


class Sessions:
    """Starts, finds (and keeps alive) and ends sessions, with their expiry rules."""

    def __init__(
        self,
        records: SessionRecords,
        *,
        tokens: Sequence[tuple[str, str]] | None = None,
        marks: Callable[[str], str] | None = None,
        idle_timeout: float,
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``tokens``: the console's, each session marked by the token signed in with; ``marks``:
        an actor's mark otherwise (``user_marks``); neither: no marks to check."""
        self._records = records
        if tokens is not None:
            by_name = {name: token_mark(token) for name, token in tokens}
            marks = lambda actor: by_name.get(actor, "")  # noqa: E731
        self._marks = marks
        self._idle = idle_timeout
        self._lifetime = lifetime
        self._clock = clock

    def remaining(self, session: Session) -> float:
        """Seconds until the session ends unless seen again: it goes idle, or its lifetime ends."""
        return min(session.seen_at + self._idle, session.started_at + self._lifetime) - self._clock()

    _ttl = remaining  # how long its record must be kept

    async def start(self, actor: str, *, back: str = "") -> tuple[str, Session]:
        """A new session for ``actor``, and its id (for the cookie, and nowhere else)."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(
            actor=actor,
            csrf=secrets.token_urlsafe(32),
            started_at=now,
            seen_at=now,
            token_mark="" if self._marks is None else self._marks(actor),
            back=back,
        )
        await self._records.put(_digest(session_id), session, self._ttl(session))
        return session_id, session

    async def find(self, session_id: str) -> Session | None:
        """The live session of this id, now seen again; None for an unknown, ended or expired one."""
        digest = _digest(session_id)
        session = await self._records.get(digest)
        if session is None:
            return None
        now = self._clock()
        expected = "" if self._marks is None else self._marks(session.actor)
        own_token = self._marks is None or (
            bool(expected) and hmac.compare_digest(session.token_mark.encode(), expected.encode())
        )
        if not own_token or now - session.seen_at >= self._idle or now - session.started_at >= self._lifetime:
            await self._records.delete(digest)
            return None
        seen = replace(session, seen_at=now)
        await self._records.put(digest, seen, self._ttl(seen))
        return seen

    async def end(self, session_id: str) -> None:
        await self._records.delete(_digest(session_id))

    async def count(self, session_id: str, session: Session, by: int = 1) -> int:
        """One more (``by``) of what the session may do only so many times (the portal's keys): how
        many now. Kept until the session's lifetime ends, the latest it can be used."""
        ends_in = session.started_at + self._lifetime - self._clock()
        return await self._records.count(_digest(session_id), max(ends_in, 1.0), by)
