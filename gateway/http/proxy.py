"""The request's route: plain ASGI, because it is the hot path (Starlette's Request, router and
StreamingResponse cost about as much again as the forwarding itself; see bench/README.md).

The design notes: docs/internals.md, "gateway/http/proxy.py"."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from gateway.accounting.usage import CreditRules, UsageRecorder
from gateway.accounting.wallet import CreditWallet
from gateway.auth.verdicts import Identity
from gateway.auth.verify import Verifier
from gateway.config import GatewayConfig
from gateway.errors import (
    BadRequest,
    ConcurrencyLimited,
    GatewayError,
    InsufficientCredits,
    InternalError,
    MethodNotAllowed,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    UpstreamAborted,
    UpstreamBusy,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.http.answers import CLIENT_GONE, REFUSAL, outcome_of, send_error
from gateway.http.headers import ForwardedRequest, RequestHeaderRules, response_headers
from gateway.http.ledger import Exchange, Ledger
from gateway.http.request_body import BufferedBody, ClientDisconnected, read_body
from gateway.http.request_id import HEADER as REQUEST_ID
from gateway.ratelimit.charges import ChargePlan
from gateway.ratelimit.headers import RATE_LIMIT_HEADERS, RateLimitHeaderWriter
from gateway.ratelimit.limiter import Charge, Decision, Limiter
from gateway.store.base import is_store_failure
from gateway.types import Receive, Scope, Send
from gateway.upstream.base import UpstreamClient, UpstreamResponse, carries_request_id

if TYPE_CHECKING:  # redis is imported only when redis.url is set
    from gateway.ratelimit.shared import SharedLimiter

__all__ = ["Proxy"]

logger = logging.getLogger("gateway.error")

# Refused before anything else: TRACE would reflect the request, Authorization included; CONNECT
# would open a tunnel past the gateway. (uvicorn's parser hands CONNECT over as an upgrade.)
REFUSED_METHODS = frozenset({"TRACE", "CONNECT"})

# A response whose Content-Length is at most this is read whole and sent in one body message.
SMALL_BODY = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


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


class _Spend:
    """A request's credits held in its user's wallet: paid (``commit``) or given back
    (``release``), whichever comes first; the other is then a no-op."""

    __slots__ = ("_header", "_wallet", "cost", "settled", "token", "user_id")

    def __init__(self, wallet: CreditWallet, user_id: str, cost: int, token: int, header: bytes) -> None:
        self._wallet, self.user_id, self.cost, self.token, self._header = wallet, user_id, cost, token, header
        self.settled = False

    def commit(self) -> None:
        if not self.settled:
            self.settled = True
            self._wallet.commit(self.user_id, self.cost, self.token)

    def release(self) -> None:
        if not self.settled:
            self.settled = True
            self._wallet.release(self.user_id, self.cost, self.token)

    def left(self) -> int:
        """What the user can still spend."""
        return max(0, self._wallet.available(self.user_id))

    def header(self) -> tuple[bytes, bytes]:
        """X-Credits-Remaining (credits.header)."""
        return self._header, str(self.left()).encode()


async def _shared_hit(
    shared: SharedLimiter, identity: Identity, charges: tuple[Charge, ...] | None
) -> tuple[Decision, bytes | None]:
    if charges is None:
        return await shared.hit(identity.key_id, identity.limits)
    return await shared.hit_all(charges)


# A "." or ".." segment, as it is or percent-encoded (%2e), and a "/" or "\\" percent-encoded
# within a segment: what an upstream may resolve to leave a base path.
_DOT_SEGMENT = re.compile(rb"(^|/|%2f|%5c|\\)(\.|%2e){1,2}(/|%2f|%5c|\\|$)", re.IGNORECASE)


async def _watch_disconnect(receive: Receive) -> None:
    """Return once the client has gone (any request body left over is discarded)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Proxy:
    """Forwards every request to ``upstream.url`` (see the module docstring)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        rules: RequestHeaderRules,
        ledger: Ledger,
        verifier: Verifier,
        limiter: Limiter,
        shared_limiter: SharedLimiter | None,
        usage: UsageRecorder,
        client: UpstreamClient,
        wallet: CreditWallet | None = None,
    ) -> None:
        """``shared_limiter`` is the limits every worker and replica share (with ``redis.url``)."""
        self._rules = rules
        self._ledger = ledger
        self._verifier = verifier
        self._limiter = limiter
        self._shared_limiter = shared_limiter
        self._usage = usage
        self._client = client
        identity = config.identity_headers
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
        self._check_request_id = config.upstream.check_request_id
        self._base_path = config.upstream.base_path
        self._failures = _FailureLog()
        self._profile = config.error_profile
        self._rate_headers = RateLimitHeaderWriter(config.rate_limits.headers)
        self._plan = ChargePlan(config.rate_limits)
        # The response header names the gateway writes (by its config): an upstream's own are
        # never passed, on any answer, so a client cannot take one for the gateway's.
        self._credits_header = config.credits.header.lower().encode("latin-1")
        credits = {self._credits_header} if wallet is not None else set()
        self._replaced = frozenset({REQUEST_ID, *RATE_LIMIT_HEADERS[config.rate_limits.headers], *credits})
        self._credits = CreditRules(config.credits.rules)
        self._wallet = wallet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        exchange = Exchange()
        try:
            peer = scope.get("client")
            forwarded = self._rules.rewrite(scope["headers"], peer[0] if peer else None, scope["scheme"])
            exchange.client, exchange.user_agent = forwarded.client_address, forwarded.user_agent
            exchange.request_id = forwarded.request_id or self._ledger.new_request_id()
            await self.route(scope, receive, send, forwarded, exchange)
        except UpstreamAborted:
            exchange.outcome = "upstream_unavailable"
            raise
        except asyncio.CancelledError:
            if scope.get("state", {}).get(CLIENT_GONE):
                # The protocol cancelled us because the client left: an outcome, not an error.
                exchange.outcome = "client_closed"
            elif exchange.outcome == "client_closed":
                # A shutdown past listen.shutdown_timeout, before any answer was sent: say so in
                # the profile's words (uvicorn would answer a plain-text 500), and end here.
                stopping = Overloaded("the gateway is shutting down")
                extra = [(REQUEST_ID, exchange.request_id or self._ledger.new_request_id())]
                exchange.status, exchange.response_bytes = await send_error(
                    send, self._profile, stopping, close=True, extra=extra
                )
                exchange.outcome = outcome_of(stopping)
            # Else the answer had begun: the connection closes under it, as it must.
        except Exception:
            # %r: a path is the client's, and its control characters must not forge log lines.
            logger.exception("unexpected error while handling %s %r", scope["method"], scope["path"])
            exchange.outcome, exchange.status = "internal_error", 500
            exchange.request_id = exchange.request_id or self._ledger.new_request_id()
            # If the response had already started, send() refuses a second start with RuntimeError
            # and the server closes the connection, which is all that is left.
            extra = [(REQUEST_ID, exchange.request_id)]
            _, exchange.response_bytes = await send_error(send, self._profile, InternalError(), close=True, extra=extra)
        finally:
            # The protocol's answer is the one the client got, whatever the app made of the request
            # meanwhile (its own answer was dropped).
            refusal = scope.get("state", {}).get(REFUSAL)
            if refusal is not None:
                exchange.status, exchange.outcome, exchange.request_id, exchange.response_bytes = refusal
            self._ledger.record(exchange, scope["method"], scope["raw_path"], time.perf_counter() - started)

    async def route(
        self, scope: Scope, receive: Receive, send: Send, forwarded: ForwardedRequest, exchange: Exchange
    ) -> None:
        """Answer one request, noting in ``exchange`` what happened: every step either passes or
        raises the ``GatewayError`` that is answered here."""
        request_id = (REQUEST_ID, exchange.request_id)
        answer_headers = [request_id]  # on every answer; the rate-limit headers join once known
        exchange.unread = bool(forwarded.content_length)
        try:
            self._refuse_unforwardable(scope, exchange)
            identity, decision = await self._authenticate(forwarded, exchange, scope)
            if decision.observed:
                self._note_observed(decision, exchange)
            answer_headers = self._rate_headers.headers(decision, self._limiter.clock())
            answer_headers.append(request_id)
            self._enforce_limits(identity, decision, forwarded.content_length)
            self._hold(identity)
            spend = None
            try:
                spend = await self._reserve(scope, identity, answer_headers) if self._wallet is not None else None
                body = await self._read_body(receive, forwarded, exchange)
                try:
                    await self._forward(
                        scope, receive, send, forwarded, identity, body, answer_headers, exchange, spend
                    )
                finally:
                    if body is not None:
                        body.close()
            finally:
                if spend is not None:
                    spend.release()  # unless paid for: the request never got a 2xx
                self._release(identity)
        except ClientDisconnected:
            return  # nobody to answer
        except GatewayError as error:
            exchange.status, exchange.response_bytes = await send_error(
                send, self._profile, error, close=exchange.unread, extra=answer_headers
            )
            exchange.outcome = outcome_of(error)

    # -------------------------------------------------------------------- the steps, in order

    def _refuse_unforwardable(self, scope: Scope, exchange: Exchange) -> None:
        if scope["method"] in REFUSED_METHODS:
            exchange.unread = True  # whatever follows is not read
            raise MethodNotAllowed(scope["method"])
        raw_path = scope["raw_path"]
        if raw_path[:1] != b"/":
            # "*" or anything else that is not a path would be glued to upstream.url as it is.
            exchange.unread = True
            raise BadRequest("the request target is not a path")
        if self._base_path and _DOT_SEGMENT.search(raw_path):
            # /v2 + /../admin is /admin to the upstream: out of the base path the operator set.
            exchange.unread = True
            raise BadRequest("the request path has a dot segment")

    async def _authenticate(
        self, forwarded: ForwardedRequest, exchange: Exchange, scope: Scope
    ) -> tuple[Identity, Decision]:
        """Who is calling, and their rate limits charged (an unauthenticated upload is never read)."""
        verifier = self._verifier
        identity = await verifier.verify(forwarded.authorization, forwarded.client_address)
        exchange.key_id, exchange.user_id = identity.key_id, identity.user_id
        charges = self._plan.charges(identity, scope["method"], scope["path"])
        shared = self._shared_limiter
        if shared is None:
            if charges is None:
                return identity, self._limiter.hit(identity.key_id, identity.limits)
            return identity, self._limiter.hit_all(charges)
        decision, epoch = await _shared_hit(shared, identity, charges)
        if epoch is not None and verifier.note_epoch(epoch):
            # Something was written since this process last looked (a revocation on another
            # replica, say): the cached verdict may be stale; check afresh.
            checked = await verifier.verify(forwarded.authorization, forwarded.client_address)
            if checked.limits != identity.limits or checked.user_limits != identity.user_limits:
                charges = self._plan.charges(checked, scope["method"], scope["path"])
                decision, _ = await _shared_hit(shared, checked, charges)
            identity = checked
        return identity, decision

    def _note_observed(self, decision: Decision, exchange: Exchange) -> None:
        """A limit in observe mode would have refused this request: counted, and named in the log."""
        self._ledger.metrics.rate_limit_observed.inc()
        window = decision.observed[0]
        exchange.observed = f"{window.scope} {window.item.amount}/{window.item.get_expiry()}s"

    def _enforce_limits(self, identity: Identity, decision: Decision, length: int | None) -> None:
        if not decision.allowed:
            self._usage.rate_limited(identity.key_id)
            window = decision.shown
            assert window is not None  # a refusal comes from an enforced window
            raise RateLimited(
                limit=window.item.amount,
                window=f"{window.item.get_expiry()}s",
                retry_after=self._limiter.retry_after(window),
                scope=window.scope,
            )
        if length is not None and length > self._max_body:
            raise PayloadTooLarge(self._max_body)

    def _hold(self, identity: Identity) -> None:
        """Count the request in flight for its key and its user (``_release`` uncounts it)."""
        key_in_flight, user_in_flight = self._key_in_flight, self._user_in_flight
        if key_in_flight.full(identity.key_id):
            raise ConcurrencyLimited(key_in_flight.cap)
        if user_in_flight.full(identity.user_id):
            raise ConcurrencyLimited(user_in_flight.cap)
        key_in_flight.enter(identity.key_id)
        user_in_flight.enter(identity.user_id)

    def _release(self, identity: Identity) -> None:
        self._key_in_flight.leave(identity.key_id)
        self._user_in_flight.leave(identity.user_id)

    async def _read_body(
        self, receive: Receive, forwarded: ForwardedRequest, exchange: Exchange
    ) -> BufferedBody | None:
        """The whole request body (None if it has none); its errors close the connection."""
        if not forwarded.content_length:
            return None
        body = await read_body(receive, limit=self._max_body, memory=self._body_memory, idle=self._body_idle)
        exchange.unread = False
        exchange.request_bytes = body.length
        return body

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        forwarded: ForwardedRequest,
        identity: Identity,
        body: BufferedBody | None,
        answer_headers: list[tuple[bytes, bytes]],
        exchange: Exchange,
        spend: _Spend | None,
    ) -> None:
        """Send the request upstream on a free connection, and answer with what comes back."""
        target = self._base_path + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = forwarded.headers
        headers.append((self._user_header, identity.user_id.encode()))
        headers.append((self._key_header, identity.key_id.encode()))
        headers.append((REQUEST_ID, exchange.request_id))
        if body is not None and forwarded.content_length is not None and forwarded.content_length < 0:
            # Chunked from the client: the upstream gets the length, now known.
            headers.append((b"content-length", str(body.length).encode()))
        if not await self._take_slot():
            raise UpstreamBusy()
        try:
            self._usage.forwarded(identity.key_id)  # sent upstream, whatever it answers
            content = None if body is None else body.payload()
            sent_at = time.perf_counter()
            try:
                response = await self._client.request(scope["method"], target, headers, content)
            except GatewayError as exc:
                if isinstance(exc, UpstreamError):  # else it was refused before anything was sent
                    exchange.upstream = time.perf_counter() - sent_at
                    self._failures.note(scope["method"], scope["path"], exc)
                raise
            except asyncio.CancelledError:
                exchange.upstream = time.perf_counter() - sent_at  # the upstream was asked
                if scope.get("state", {}).get(CLIENT_GONE):
                    # The client left with its request in the upstream's hands: the work may be
                    # done all the same, so it is paid for (leaving early must not dodge a charge).
                    self._charge(scope, identity.key_id, spend)
                raise
            exchange.upstream = time.perf_counter() - sent_at
            exchange.upstream_status = response.status
            try:
                if self._check_request_id and not carries_request_id(response.headers, exchange.request_id):
                    await response.abandon()
                    error = UpstreamUnavailable("the upstream's answer does not carry this request's X-Request-Id")
                    self._failures.note(scope["method"], scope["path"], error)
                    raise error
                await self._respond(scope, receive, send, response, answer_headers, exchange, identity.key_id, spend)
            except asyncio.CancelledError:
                # The client left after a 2xx head came, before its answer was charged (its body
                # was being read): the work is done, so it is paid for, as above.
                gone = scope.get("state", {}).get(CLIENT_GONE)
                if gone and exchange.outcome != "forwarded" and 200 <= response.status < 300:
                    self._charge(scope, identity.key_id, spend)
                raise
            finally:
                await response.aclose()
        finally:
            self._slots.release()

    def _charge(self, scope: Scope, key_id: str, spend: _Spend | None) -> None:
        """The credits of the request's route (``credits.rules``), if it costs any: counted, and
        paid from the wallet's reservation."""
        if spend is not None:
            spend.commit()
        cost = self._credits.cost(scope["method"], scope["path"])
        if cost:
            self._usage.charge(key_id, cost)

    async def _reserve(
        self, scope: Scope, identity: Identity, answer_headers: list[tuple[bytes, bytes]]
    ) -> _Spend | None:
        """Hold the route's cost in the user's wallet, or refuse the request (402) before it is forwarded."""
        cost = self._credits.cost(scope["method"], scope["path"])
        wallet = self._wallet
        if not cost or wallet is None:
            return None
        try:
            token = await wallet.reserve(identity.user_id, cost)
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            raise StoreUnavailable(f"credit balance: {type(exc).__name__}", retry_after=1) from None
        if token is None:
            self._usage.refused_credits(identity.key_id)
            refused = _Spend(wallet, identity.user_id, cost, token=0, header=self._credits_header)
            answer_headers.append(refused.header())
            raise InsufficientCredits(required=cost, balance=refused.left())
        return _Spend(wallet, identity.user_id, cost, token, self._credits_header)

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
        answer_headers: list[tuple[bytes, bytes]],
        exchange: Exchange,
        key_id: str,
        spend: _Spend | None,
    ) -> None:
        strip_cors = bool(self._cors_prefixes) and (
            scope["path"].startswith(self._cors_prefixes) or scope["raw_path"].startswith(self._cors_raw_prefixes)
        )
        try:
            if not 200 <= response.status <= 599:
                # 1xx are the client library's to handle; 101 would switch to a protocol the
                # gateway does not carry; above 599 is no HTTP status.
                raise UpstreamUnavailable(f"the upstream answered with status {response.status}")
            headers = response_headers(response.headers, strip_cors=strip_cors, replaced=self._replaced)
        except GatewayError as error:
            self._failures.note(scope["method"], scope["path"], error)
            raise
        headers += answer_headers
        start: dict[str, Any] = {"type": "http.response.start", "status": response.status, "headers": headers}
        length = response.content_length
        content = None
        if response.status in _NO_BODY_STATUSES:
            # 204 and 304 have no body whatever a Content-Length says (a 304's may give the size of
            # the representation); uvicorn would wait for that many bytes and fail the answer.
            start["headers"] = [(name, value) for name, value in headers if name.lower() != b"content-length"]
            content = b""
        elif scope["method"] == "HEAD":
            content = b""
        elif length is not None and length <= SMALL_BODY:
            content = await response.read()  # its errors are answered in the route: nothing is sent yet
        # From here on the answer is the upstream's (a client that leaves still paid for it): the
        # usage and the wallet are charged at this one point, so they always agree.
        exchange.outcome, exchange.status = "forwarded", response.status
        if 200 <= response.status < 300:
            self._charge(scope, key_id, spend)
        if spend is not None:
            spend.release()  # (a no-op once paid)
            start["headers"].append(spend.header())  # what is left after this request
        if content is not None:
            await send(start)
            await send({"type": "http.response.body", "body": content})
            exchange.response_bytes = len(content)
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
            exchange.response_bytes = sent
        await send({"type": "http.response.body", "body": b""})
