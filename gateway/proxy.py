"""The forwarding path: plain ASGI, because it is the hot path (Starlette's Request, router and
StreamingResponse cost about as much again as the forwarding itself; see bench/README.md).

For each HTTP request: rewrite the headers (``headers.py``), authenticate the caller
(``verify.py``), charge the key's rate limits (``ratelimit.py``; 429 when full), count the
request (``usage.py``), add the identity headers, refuse a body declared larger than
``limits.max_body_bytes``, send method, raw path and raw query byte for byte to the upstream,
stream the request body to it (cutting it off if it crosses the limit midway), and stream the
response back. A response of known small length is read whole and sent as one message; anything
else streams, with back-pressure from the client's socket through uvicorn's ``send``.

Errors before the response has started are answered in the active error profile. After it has
started they can only break the connection, so a truncated body is never passed off as complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.access_log import AccessLog
from gateway.auth_throttle import FailureThrottle
from gateway.config import GatewayConfig
from gateway.errors import (
    BadRequest,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    UpstreamAborted,
)
from gateway.headers import ForwardedRequest, RequestHeaderRules, response_headers
from gateway.metrics import Metrics
from gateway.profiles import ErrorProfile
from gateway.ratelimit import Limiter

if TYPE_CHECKING:  # redis is imported only when redis.url is set
    from gateway.shared_limiter import SharedLimiter
from gateway.ratelimit_headers import RateLimitHeaderWriter
from gateway.request_id import HEADER as REQUEST_ID, RequestIds
from gateway.types import Receive, Scope, Send
from gateway.upstream import UpstreamClient, UpstreamResponse
from gateway.usage import CreditRules, UsageRecorder
from gateway.verify import Verifier

__all__ = ["Proxy", "error_answer", "send_error"]

logger = logging.getLogger("gateway.error")

# The metrics outcome of each answer the gateway gives by itself.
OUTCOME_OF = {
    "missing_credentials": "missing_key",
    "invalid_credentials": "invalid_key",
    "subscription_inactive": "subscription_inactive",
    "rate_limited": "rate_limited",
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
# Where the HTTP protocol notes in scope["state"] the (status, outcome) it answered a request with
# whose body turned out malformed after the request had reached the app.
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


class ClientDisconnected(Exception):
    """The client went away while its request body was being forwarded."""


class _RequestBody:
    """The client's request body as an async iterator, cut off once it passes the limit."""

    __slots__ = ("_idle", "_limit", "_receive", "complete", "disconnected", "received", "timed_out", "too_large")

    def __init__(self, receive: Receive, limit: int, idle: float) -> None:
        self._receive = receive
        self._limit = limit
        self._idle = idle
        self.received = 0
        self.complete = False
        self.too_large = False
        self.timed_out = False
        self.disconnected = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self._idle):
                    message = await self._receive()
            except TimeoutError:
                # Like the cut-off for size: the upstream never sees a complete request.
                self.timed_out = True
                raise RequestTimeout("no request body data for limits.body_idle_timeout") from None
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected()
            chunk: bytes = message.get("body", b"")
            if chunk:
                self.received += len(chunk)
                if self.received > self._limit:
                    # Raising inside the upload makes the client library abandon the upstream
                    # connection before the final chunk: the upstream never sees a complete request.
                    self.too_large = True
                    raise PayloadTooLarge(self._limit)
                yield chunk
            if not message.get("more_body", False):
                self.complete = True
                return


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
        self._max_body = config.limits.max_body_bytes
        self._body_idle = config.limits.body_idle_timeout
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
        limit = config.auth_failures.limit
        self.throttle = FailureThrottle(limit) if limit is not None else None

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
            refusal = scope.get("state", {}).get(REFUSAL) if exchange.outcome == "client_closed" else None
            if refusal is not None:
                exchange.status, exchange.outcome = refusal
            self._account(exchange, scope["method"], scope["raw_path"], time.perf_counter() - started)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, forwarded: ForwardedRequest, exchange: Exchange
    ) -> None:
        """Answer one request, noting in ``exchange`` what happened."""
        client, verifier, limiter, usage = self.client, self.verifier, self.limiter, self.usage
        assert client is not None and verifier is not None and limiter is not None and usage is not None, (
            "opened in the lifespan"
        )
        request_id = (REQUEST_ID, exchange.request_id)
        refusal: GatewayError | None = None
        if scope["method"] in REFUSED_METHODS:
            refusal = MethodNotAllowed(scope["method"])
        elif scope["raw_path"][:1] != b"/":
            # "*" or anything else that is not a path would be glued to upstream.url as it is.
            refusal = BadRequest("the request target is not a path")
        if refusal is not None:
            exchange.status = await send_error(send, self._profile, refusal, close=True, extra=[request_id])
            exchange.outcome = OUTCOME_OF[refusal.situation]
            return
        throttle, address = self.throttle, forwarded.client_address
        if throttle is not None and address is not None:
            retry_after = throttle.retry_after(address)
            if retry_after is not None:
                limit = throttle.limit
                throttled = RateLimited(limit=limit.amount, window=f"{limit.get_expiry()}s", retry_after=retry_after)
                exchange.status = await send_error(send, self._profile, throttled, extra=[request_id])
                exchange.outcome = "auth_throttled"
                return
        try:
            identity = await verifier.verify(forwarded.authorization)
            exchange.key_id, exchange.user_id = identity.key_id, identity.user_id
            shared = self.shared_limiter
            if shared is None:
                decision = limiter.hit(identity.key_id, identity.limits)
            else:
                decision, epoch = await shared.hit(identity.key_id, identity.limits)
                if epoch is not None and verifier.note_epoch(epoch):
                    # Something was written since this process last looked (a revocation on
                    # another replica, say): the cached verdict may be stale; check afresh.
                    checked = await verifier.verify(forwarded.authorization)
                    if checked.limits != identity.limits:
                        decision, _ = await shared.hit(checked.key_id, checked.limits)
                    identity = checked
        except GatewayError as error:
            # Answered before the body is read: an unauthenticated upload is never taken in.
            if throttle is not None and address is not None and error.situation == "invalid_credentials":
                throttle.failed(address)
            exchange.status = await send_error(send, self._profile, error, extra=[request_id])
            exchange.outcome = OUTCOME_OF[error.situation]
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
            exchange.status = await send_error(send, self._profile, limited, extra=extra_headers)
            exchange.outcome = "rate_limited"
            return
        headers = forwarded.headers
        headers.append((self._user_header, identity.user_id.encode()))
        headers.append((self._key_header, identity.key_id.encode()))
        headers.append(request_id)
        length = forwarded.content_length
        if length is not None and length > self._max_body:
            too_large = PayloadTooLarge(self._max_body)
            exchange.status = await send_error(send, self._profile, too_large, close=True, extra=extra_headers)
            exchange.outcome = "too_large"
            return
        usage.forwarded(identity.key_id)

        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        body = _RequestBody(receive, self._max_body, self._body_idle) if length else None
        sent_at = time.perf_counter()
        try:
            response = await client.request(scope["method"], target, headers, body)
        except ClientDisconnected:
            exchange.upstream = time.perf_counter() - sent_at
            return
        except GatewayError as exc:
            exchange.upstream = time.perf_counter() - sent_at
            if body is not None and body.disconnected:
                return
            if body is not None and (body.too_large or body.timed_out):
                # However the client library reported the cut-off upload, the client gets the 413 or 408.
                cut: GatewayError = PayloadTooLarge(self._max_body) if body.too_large else RequestTimeout()
                exchange.status = await send_error(send, self._profile, cut, close=True, extra=extra_headers)
                exchange.outcome = OUTCOME_OF[cut.situation]
                return
            exchange.status = await send_error(send, self._profile, exc, extra=extra_headers)
            exchange.outcome = OUTCOME_OF[exc.situation]
            return
        exchange.upstream = time.perf_counter() - sent_at
        if 200 <= response.status < 300:
            cost = self._credits.cost(scope["method"], scope["path"])
            if cost:
                usage.charge(identity.key_id, cost)
        try:
            await self._respond(
                scope, receive, send, response, extra_headers, exchange, request_read=body is None or body.complete
            )
        finally:
            await response.aclose()

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        response: UpstreamResponse,
        extra_headers: list[tuple[bytes, bytes]],
        exchange: Exchange,
        *,
        request_read: bool,
    ) -> None:
        strip_cors = bool(self._cors_prefixes) and (
            scope["path"].startswith(self._cors_prefixes) or scope["raw_path"].startswith(self._cors_raw_prefixes)
        )
        headers = response_headers(response.headers, strip_cors=strip_cors)
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
                exchange.outcome = OUTCOME_OF[error.situation]
                return
            await send(start)
            await send({"type": "http.response.body", "body": content})
            return

        await send(start)
        # uvicorn's send() returns quietly once the client has gone, so watch for it to stop
        # pulling a large body from the upstream for nobody. Not while the upload is still being
        # read (an upstream may answer early): receive() must have one reader at a time.
        watcher = asyncio.ensure_future(_watch_disconnect(receive)) if request_read else None
        sent = 0
        try:
            async for chunk in response.iter_chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                if watcher is not None and watcher.done():
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
            if watcher is not None:
                watcher.cancel()
        await send({"type": "http.response.body", "body": b""})
