"""The forwarding path: plain ASGI, because it is the hot path (Starlette's Request, router and
StreamingResponse cost about as much again as the forwarding itself; see bench/README.md).

For each HTTP request: rewrite the headers (``headers.py``), authenticate the caller
(``auth/verify.py``), charge the key's rate limits (``ratelimit/limiter.py``; 429 when full), refuse a body
declared larger than ``limits.max_body_bytes``, hold the key to ``limits.max_concurrent_per_key``
requests in flight and its user to ``limits.max_concurrent_per_user`` (429), count the request
(``accounting/usage.py``), read the whole request body (``request_body.py``: no upstream connection waits on
a slow client), take one of ``upstream.max_connections`` (503 after ``upstream.pool_timeout``), add
the identity headers, send method, raw path and raw query byte for byte to the upstream with the
body, and stream the response back. A response of known small length is read whole and sent as
one message; anything else streams, with back-pressure from the client's socket through
uvicorn's ``send``.

An answer the gateway gives before it has read a request's body says ``Connection: close``: the
HTTP protocol then discards a bounded part of what the client still sends, and closes.

Errors before the response has started are answered in the active error profile. After it has
started they can only break the connection, so a truncated body is never passed off as complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.accounting.access_log import AccessLog
from gateway.accounting.metrics import Metrics
from gateway.config import GatewayConfig
from gateway.errors import (
    BadRequest,
    ConcurrencyLimited,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    UpstreamAborted,
    UpstreamBusy,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.http.headers import ForwardedRequest, RequestHeaderRules, response_headers
from gateway.profiles import ErrorProfile
from gateway.ratelimit.limiter import Limiter

if TYPE_CHECKING:  # redis is imported only when redis.url is set
    from gateway.ratelimit.shared import SharedLimiter
from gateway.accounting.usage import CreditRules, UsageRecorder
from gateway.auth.verify import Verifier
from gateway.http.request_body import ClientDisconnected, read_body
from gateway.http.request_id import HEADER as REQUEST_ID, RequestIds
from gateway.ratelimit.headers import RateLimitHeaderWriter
from gateway.types import Receive, Scope, Send
from gateway.upstream.base import UpstreamClient, UpstreamResponse

__all__ = ["Proxy", "error_answer", "send_error"]

logger = logging.getLogger("gateway.error")

# The metrics outcome of each answer the gateway gives by itself.
OUTCOME_OF = {
    "missing_credentials": "missing_key",
    "invalid_credentials": "invalid_key",
    "subscription_inactive": "subscription_inactive",
    "rate_limited": "rate_limited",
    "concurrency_limited": "concurrency_limited",
    "payload_too_large": "too_large",
    "upstream_unavailable": "upstream_unavailable",
    "upstream_timeout": "upstream_timeout",
    "bad_request": "bad_request",
    "method_not_allowed": "method_not_allowed",
    "request_timeout": "request_timeout",
    "headers_too_large": "headers_too_large",
    "store_unavailable": "store_unavailable",
    "overloaded": "overloaded",
    "internal_error": "internal_error",
}
# Refused before anything else: TRACE would reflect the request, Authorization included; CONNECT
# would open a tunnel past the gateway. (uvicorn's parser hands CONNECT over as an upgrade.)
REFUSED_METHODS = frozenset({"TRACE", "CONNECT"})
# Where the HTTP protocol notes in scope["state"] the (status, outcome, request id) it answered a
# request with whose body turned out malformed after the request had reached the app.
REFUSAL = "gateway.refusal"
# Set in scope["state"] by the HTTP protocol when it cancels a request whose client has gone.
CLIENT_GONE = "gateway.client_gone"

# A response whose Content-Length is at most this is read whole and sent in one body message.
SMALL_BODY = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class Exchange:
    """What became of one request, for the metrics and the access log."""

    __slots__ = ("key_id", "outcome", "request_id", "status", "upstream", "user_id")

    def __init__(self) -> None:
        self.request_id = b""
        # Until an answer is sent: the client left first (499, as nginx logs it).
        self.outcome = "client_closed"
        self.status = 499
        # Seconds from sending the request upstream until its response head (None: not sent).
        self.upstream: float | None = None
        self.key_id: str | None = None
        self.user_id: str | None = None


def error_answer(
    profile: ErrorProfile, error: GatewayError, extra: list[tuple[bytes, bytes]] | None = None, *, close: bool = False
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and JSON body that answer ``error`` in ``profile``."""
    status, body = profile.render(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"date", formatdate(usegmt=True).encode()),
        # An answer about this request and its credentials: no cache may keep it for another.
        (b"cache-control", b"no-store"),
    ]
    headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items())
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    return status, headers, body


def outcome_of(error: GatewayError) -> str:
    """The metrics and access-log outcome of an answer the gateway gives by itself."""
    return error.outcome or OUTCOME_OF[error.situation]


async def send_error(
    send: Send,
    profile: ErrorProfile,
    error: GatewayError,
    *,
    close: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """Answer ``error`` as the profile says (JSON, never a traceback or an HTML page); its status."""
    status, headers, body = error_answer(profile, error, extra, close=close)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


class _FailureLog:
    """Upstream failures in the log: each one, but at most one line a second (an upstream that is
    down fails every request), with a count of those left out."""

    __slots__ = ("_left_out", "_next")

    def __init__(self) -> None:
        self._next = 0.0
        self._left_out = 0

    def note(self, method: str, path: str, error: GatewayError) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        self._next = now + 1.0
        more = f" ({self._left_out} more failures since the last line)" if self._left_out else ""
        self._left_out = 0
        # %r: a path is the client's, and its control characters must not forge log lines.
        logger.warning("upstream request %s %r failed: %s%s", method, path, error.reason, more)


class _InFlight:
    """Requests in flight to the upstream by holder (a key id, or a user id), up to ``cap`` each."""

    __slots__ = ("_counts", "cap")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._counts: dict[str, int] = {}  # absent: none

    def full(self, holder: str) -> bool:
        return self._counts.get(holder, 0) >= self.cap

    def enter(self, holder: str) -> None:
        self._counts[holder] = self._counts.get(holder, 0) + 1

    def leave(self, holder: str) -> None:
        left = self._counts[holder] - 1
        if left:
            self._counts[holder] = left
        else:
            del self._counts[holder]


async def _watch_disconnect(receive: Receive) -> None:
    """Return once the client has gone (any request body left over is discarded)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Proxy:
    """Forwards every request to ``upstream.url`` (see the module docstring)."""

    def __init__(self, config: GatewayConfig) -> None:
        upstream_host = urlsplit(config.upstream.url).netloc.encode("latin-1")
        identity = config.identity_headers
        self._rules = RequestHeaderRules(
            upstream_host,
            preserve_host=config.upstream.preserve_host,
            trusted_peers=config.proxy.trusted_peers,
            identity_headers=(identity.user_id, identity.key_id),
            forward_authorization=config.upstream.forward_authorization,
        )
        self._user_header = identity.user_id.lower().encode("latin-1")
        self._key_header = identity.key_id.lower().encode("latin-1")
        self._cors_prefixes = config.cors.deny_prefixes
        self._cors_raw_prefixes = tuple(prefix.encode() for prefix in config.cors.deny_prefixes)
        limits = config.limits
        self._max_body = limits.max_body_bytes
        self._body_idle = limits.body_idle_timeout
        self._body_memory = limits.body_buffer_bytes
        self._key_in_flight = _InFlight(limits.max_concurrent_per_key)
        self._user_in_flight = _InFlight(limits.max_concurrent_per_user)
        # One per upstream connection, so that waiting for one is bounded (the client libraries'
        # own pool waits cannot be told from a connect timeout).
        self._slots = asyncio.Semaphore(config.upstream.max_connections)
        self._pool_timeout = config.upstream.pool_timeout
        self._failures = _FailureLog()
        self._profile = config.error_profile
        self._rate_headers = RateLimitHeaderWriter(config.rate_limits.headers)
        self._credits = CreditRules(config.credits.rules)
        self._request_ids = RequestIds()
        self.client: UpstreamClient | None = None
        self.verifier: Verifier | None = None
        self.limiter: Limiter | None = None
        # Set when redis.url is: the limits every worker and replica share.
        self.shared_limiter: SharedLimiter | None = None
        self.usage: UsageRecorder | None = None
        self.metrics: Metrics | None = None
        self.access_log: AccessLog | None = None

    def trusted_peer(self, address: str) -> bool:
        """Whether ``address`` is in proxy.trusted_peers (a proxy or load balancer of the operator's)."""
        return self._rules.is_trusted(address)

    def new_request_id(self) -> bytes:
        return self._request_ids.new().encode()

    def count_refusal(self, request_id: bytes, method: str, raw_path: bytes, status: int, outcome: str) -> None:
        """Count and log a request the HTTP protocol refused before it became an ASGI request."""
        exchange = Exchange()
        exchange.request_id, exchange.status, exchange.outcome = request_id, status, outcome
        self._account(exchange, method, raw_path, 0.0)

    def _account(self, exchange: Exchange, method: str, raw_path: bytes, duration: float) -> None:
        """One request in the metrics and the access log."""
        upstream = exchange.upstream
        if self.metrics is not None:
            self.metrics.request(exchange.outcome, duration - (upstream or 0.0), upstream)
        if self.access_log is not None:
            self.access_log.record(
                request_id=exchange.request_id.decode(),
                method=method,
                raw_path=raw_path,
                status=exchange.status,
                outcome=exchange.outcome,
                duration=duration,
                upstream=upstream,
                key_id=exchange.key_id,
                user_id=exchange.user_id,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        exchange = Exchange()
        try:
            peer = scope.get("client")
            forwarded = self._rules.rewrite(scope["headers"], peer[0] if peer else None, scope["scheme"])
            exchange.request_id = forwarded.request_id or self._request_ids.new().encode()
            await self._handle(scope, receive, send, forwarded, exchange)
        except UpstreamAborted:
            exchange.outcome = "upstream_unavailable"
            raise
        except asyncio.CancelledError:
            if not scope.get("state", {}).get(CLIENT_GONE):
                raise  # a shutdown past its grace period
            # The protocol cancelled us because the client left: an outcome, not an error.
            exchange.outcome = "client_closed"
        except Exception:
            # %r: a path is the client's, and its control characters must not forge log lines.
            logger.exception("unexpected error while handling %s %r", scope["method"], scope["path"])
            exchange.outcome, exchange.status = "internal_error", 500
            exchange.request_id = exchange.request_id or self._request_ids.new().encode()
            # If the response had already started, send() refuses a second start with RuntimeError
            # and the server closes the connection, which is all that is left.
            extra = [(REQUEST_ID, exchange.request_id)]
            await send_error(send, self._profile, InternalError(), close=True, extra=extra)
        finally:
            # The protocol's answer is the one the client got, whatever the app made of the request
            # meanwhile (its own answer was dropped).
            refusal = scope.get("state", {}).get(REFUSAL)
            if refusal is not None:
                exchange.status, exchange.outcome, exchange.request_id = refusal
            self._account(exchange, scope["method"], scope["raw_path"], time.perf_counter() - started)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, forwarded: ForwardedRequest, exchange: Exchange
    ) -> None:
        """Answer one request, noting in ``exchange`` what happened."""
        verifier, limiter, usage = self.verifier, self.limiter, self.usage
        assert verifier is not None and limiter is not None and usage is not None, "opened in the lifespan"
        request_id = (REQUEST_ID, exchange.request_id)
        refusal: GatewayError | None = None
        if scope["method"] in REFUSED_METHODS:
            refusal = MethodNotAllowed(scope["method"])
        elif scope["raw_path"][:1] != b"/":
            # "*" or anything else that is not a path would be glued to upstream.url as it is.
            refusal = BadRequest("the request target is not a path")
        if refusal is not None:
            exchange.status = await send_error(send, self._profile, refusal, close=True, extra=[request_id])
            exchange.outcome = outcome_of(refusal)
            return
        length = forwarded.content_length
        # An answer before the body is read closes the connection (see the module docstring).
        unread = bool(length)
        try:
            identity = await verifier.verify(forwarded.authorization, forwarded.client_address)
            exchange.key_id, exchange.user_id = identity.key_id, identity.user_id
            shared = self.shared_limiter
            if shared is None:
                decision = limiter.hit(identity.key_id, identity.limits)
            else:
                decision, epoch = await shared.hit(identity.key_id, identity.limits)
                if epoch is not None and verifier.note_epoch(epoch):
                    # Something was written since this process last looked (a revocation on
                    # another replica, say): the cached verdict may be stale; check afresh.
                    checked = await verifier.verify(forwarded.authorization, forwarded.client_address)
                    if checked.limits != identity.limits:
                        decision, _ = await shared.hit(checked.key_id, checked.limits)
                    identity = checked
        except GatewayError as error:
            # Answered before the body is read: an unauthenticated upload is never taken in.
            exchange.status = await send_error(send, self._profile, error, close=unread, extra=[request_id])
            exchange.outcome = outcome_of(error)
            return
        extra_headers = self._rate_headers.headers(decision, limiter.clock())
        extra_headers.append(request_id)
        if not decision.allowed:
            usage.rate_limited(identity.key_id)
            window = decision.shown
            limited = RateLimited(
                limit=window.item.amount,
                window=f"{window.item.get_expiry()}s",
                retry_after=limiter.retry_after(window),
            )
            exchange.status = await send_error(send, self._profile, limited, close=unread, extra=extra_headers)
            exchange.outcome = "rate_limited"
            return
        if length is not None and length > self._max_body:
            too_large = PayloadTooLarge(self._max_body)
            exchange.status = await send_error(send, self._profile, too_large, close=True, extra=extra_headers)
            exchange.outcome = "too_large"
            return
        key_id, user_id = identity.key_id, identity.user_id
        for in_flight, holder in ((self._key_in_flight, key_id), (self._user_in_flight, user_id)):
            if in_flight.full(holder):
                busy = ConcurrencyLimited(in_flight.cap)
                exchange.status = await send_error(send, self._profile, busy, close=unread, extra=extra_headers)
                exchange.outcome = "concurrency_limited"
                return
        self._key_in_flight.enter(key_id)
        self._user_in_flight.enter(user_id)
        try:
            usage.forwarded(key_id)
            headers = forwarded.headers
            headers.append((self._user_header, user_id.encode()))
            headers.append((self._key_header, key_id.encode()))
            headers.append(request_id)
            await self._forward(scope, receive, send, headers, length, extra_headers, key_id, exchange)
        finally:
            self._key_in_flight.leave(key_id)
            self._user_in_flight.leave(user_id)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        extra_headers: list[tuple[bytes, bytes]],
        key_id: str,
        exchange: Exchange,
    ) -> None:
        """Read the body, send the request upstream on a free connection, and answer."""
        client = self.client
        assert client is not None, "opened in the lifespan"
        body = None
        if length:
            try:
                body = await read_body(receive, limit=self._max_body, memory=self._body_memory, idle=self._body_idle)
            except ClientDisconnected:
                return
            except GatewayError as error:
                exchange.status = await send_error(send, self._profile, error, close=True, extra=extra_headers)
                exchange.outcome = outcome_of(error)
                return
            if length < 0:  # chunked from the client: the upstream gets the length, now known
                headers.append((b"content-length", str(body.length).encode()))
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            if not await self._take_slot():
                busy = UpstreamBusy()
                exchange.status = await send_error(send, self._profile, busy, extra=extra_headers)
                exchange.outcome = outcome_of(busy)
                return
            try:
                content = None if body is None else body.payload()
                sent_at = time.perf_counter()
                try:
                    response = await client.request(scope["method"], target, headers, content)
                except GatewayError as exc:
                    if isinstance(exc, UpstreamError):  # else it was refused before anything was sent
                        exchange.upstream = time.perf_counter() - sent_at
                        self._failures.note(scope["method"], scope["path"], exc)
                    exchange.status = await send_error(send, self._profile, exc, extra=extra_headers)
                    exchange.outcome = outcome_of(exc)
                    return
                exchange.upstream = time.perf_counter() - sent_at
                try:
                    await self._respond(scope, receive, send, response, extra_headers, exchange, key_id)
                finally:
                    await response.aclose()
            finally:
                self._slots.release()
        finally:
            if body is not None:
                body.close()

    async def _take_slot(self) -> bool:
        """One of the upstream.max_connections, waiting at most upstream.pool_timeout (False then)."""
        slots = self._slots
        if not slots.locked():
            return await slots.acquire()  # at once: no timer to arm
        try:
            async with asyncio.timeout(self._pool_timeout):
                return await slots.acquire()
        except TimeoutError:
            return False

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        response: UpstreamResponse,
        extra_headers: list[tuple[bytes, bytes]],
        exchange: Exchange,
        key_id: str,
    ) -> None:
        strip_cors = bool(self._cors_prefixes) and (
            scope["path"].startswith(self._cors_prefixes) or scope["raw_path"].startswith(self._cors_raw_prefixes)
        )
        try:
            if not 200 <= response.status <= 599:
                # 1xx are the client library's to handle; 101 would switch to a protocol the
                # gateway does not carry; above 599 is no HTTP status.
                raise UpstreamUnavailable(f"the upstream answered with status {response.status}")
            headers = response_headers(response.headers, strip_cors=strip_cors)
        except GatewayError as error:
            self._failures.note(scope["method"], scope["path"], error)
            exchange.status = await send_error(send, self._profile, error, extra=extra_headers)
            exchange.outcome = outcome_of(error)
            return
        if 200 <= response.status < 300:
            cost = self._credits.cost(scope["method"], scope["path"])
            if cost and self.usage is not None:
                self.usage.charge(key_id, cost)
        headers += extra_headers
        start = {"type": "http.response.start", "status": response.status, "headers": headers}
        length = response.content_length
        exchange.outcome, exchange.status = "forwarded", response.status
        if scope["method"] == "HEAD" or response.status in _NO_BODY_STATUSES:
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        if length is not None and length <= SMALL_BODY:
            try:
                content = await response.read()
            except GatewayError as error:
                exchange.status = await send_error(send, self._profile, error, extra=extra_headers)
                exchange.outcome = outcome_of(error)
                return
            await send(start)
            await send({"type": "http.response.body", "body": content})
            return

        await send(start)
        # uvicorn's send() returns quietly once the client has gone, so watch for it to stop
        # pulling a large body from the upstream for nobody. (The request body has been read
        # whole by now, so this is receive()'s only reader.)
        watcher = asyncio.ensure_future(_watch_disconnect(receive))
        sent = 0
        try:
            async for chunk in response.iter_chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                if watcher.done():
                    return
        except UpstreamAborted as exc:
            logger.warning(
                "upstream broke off the response to %s %r after %d bytes; closing the client connection: %s",
                scope["method"],
                scope["path"],
                sent,
                exc,
            )
            raise
        finally:
            watcher.cancel()
        await send({"type": "http.response.body", "body": b""})
