"""The public listener's HTTP/1.1 protocol: uvicorn's httptools protocol, with the gateway's limits.

The design notes: docs/internals.md, "gateway/http/protocol.py"."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from gateway.config import LimitsConfig
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge, MethodNotAllowed, Overloaded, RequestTimeout
from gateway.http.answers import CLIENT_GONE, REFUSAL, error_answer, outcome_of
from gateway.http.headers import RequestHeaderRules
from gateway.http.ledger import Ledger
from gateway.http.request_id import HEADER as REQUEST_ID, acceptable
from gateway.profiles import ErrorProfile

__all__ = [
    "CHUNK_GRACE",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_PIPELINE",
    "MIN_CHUNK_AVERAGE",
    "GatewayHttpProtocol",
    "logged_path",
    "protocol_class",
]

# After an answer given before the request's body was read: what more of the body is discarded
# at most, and for how long, before the connection is closed.
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 5.0
# A chunked body's chunks may average no fewer bytes than this, once it has more than CHUNK_GRACE.
MIN_CHUNK_AVERAGE = 4
CHUNK_GRACE = 1024
# Requests parsed and waiting behind the one being answered, on one connection.
MAX_PIPELINE = 16
# A Host value (RFC 9110, 7.2): empty, or a host (an IP literal in brackets, or a reg-name of
# unreserved, percent-encoded and sub-delimiter characters) with an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal itself is on the protocol."""


class _LingeringClose:
    """The transport as the cycle of a request with a body sees it: its ``close`` becomes the
    protocol's lingering close, since the body may not all have been read."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: GatewayHttpProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._protocol.close_lingering()


class GatewayHttpProtocol(HttpToolsProtocol):
    # Set on the subclass that ``protocol_class`` makes for one server.
    limits: ClassVar[LimitsConfig]
    profile: ClassVar[ErrorProfile]
    rules: ClassVar[RequestHeaderRules]  # for proxy.trusted_peers
    ledger: ClassVar[Ledger]
    # Open connections by peer address (those not in proxy.trusted_peers), for this server.
    addresses: ClassVar[dict[str, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Waiting for a request head (or the rest of one), as opposed to a body or a response.
        self._in_head = True
        # Some of a request head has arrived, and not all of it.
        self._partial_head = False
        # The head's size: as parsed (request line and headers so far, exact), and as received
        # (every chunk since the head began but the one it began in: a bound for a head that
        # never ends, whose last header the parser is still buffering).
        self._head_bytes = 0
        self._received_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: GatewayError | None = None
        self._asgi_task: asyncio.Task[None] | None = None
        # The cycle whose task runs (self.cycle is the last one parsed, maybe queued behind it).
        self._running: RequestResponseCycle | None = None
        # The request being parsed has reached the app (its cycle exists, running or queued).
        self._has_cycle = False
        # The body of the request being parsed is chunked: the parser's body callbacks (about one
        # per chunk) and their bytes.
        self._chunked = False
        self._body_calls = 0
        self._body_bytes = 0
        # A request asked for a protocol upgrade: nothing after its head is read.
        self._upgraded = False
        # Bytes of trailer fields of the chunked body being parsed.
        self._trailer_bytes = 0
        # Set once the connection is being closed after a bounded discard of the client's body.
        self._linger_left: int | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        # The transport's write buffer when the send deadline was last armed (progress re-arms it).
        self._send_mark = 0
        # The peer address counted in ``addresses`` for this connection.
        self._address: str | None = None
        # Bytes received while requests wait in the pipeline, parsed once the one before is answered.
        self._held = b""
        # A pipelined request refused while an earlier answer was on its way: its answer, sent
        # once the answers before it are (request id, method, path, status, outcome, the answer, the
        # length of its body).
        self._deferred: tuple[bytes, str, bytes, int, str, bytes, int] | None = None

    # -------------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            # The kernel drops the connection once bytes it sent stay unacknowledged (a zero
            # window included) for limits.send_timeout: a client that stops reading is cut off
            # even when what it left unread sits in the kernel's buffer, not the transport's, or
            # after the transport was asked to close (which waits for that buffer to drain).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.limits.send_timeout * 1000))
        if len(self.connections) > self.limits.max_connections:
            self._refuse(Overloaded(), linger=False)  # shed at once: lingering would hold the slot
            return
        peer = self.client[0] if self.client else None
        if peer is not None and not self.rules.is_trusted(peer):
            count = self.addresses.get(peer, 0) + 1
            self.addresses[peer] = count
            self._address = peer
            if count > self.limits.max_connections_per_address:
                self._refuse(Overloaded(), linger=False)
                return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deferred is not None:
            # The connection ended before the refusal's turn came: it was never answered.
            request_id, method, path, _, _, _, _ = self._deferred
            self._deferred = None
            self.ledger.refusal(request_id, method, path, 499, "client_closed", client=self._peer())
        if self._address is not None:
            left = self.addresses[self._address] - 1
            if left:
                self.addresses[self._address] = left
            else:
                del self.addresses[self._address]
            self._address = None
        self._cancel_head_timer()
        for timer in (self._linger_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        cycle, task = self._running, self._asgi_task
        if cycle is not None and not cycle.response_complete and task is not None and not task.done():
            # The client has gone before its answer was complete: stop working for nobody. The
            # cancellation reaches the upstream request, which closes its connection. (uvicorn
            # marks only the last request parsed as disconnected, maybe a queued one.)
            cycle.scope["state"][CLIENT_GONE] = True
            cycle.disconnected = True
            task.cancel()
        for queued, _ in self.pipeline:
            # Requests waiting behind it leave unanswered with the client: each is logged.
            scope = queued.scope
            self.ledger.refusal(
                self.ledger.new_request_id(),
                scope["method"],
                scope["raw_path"],
                499,
                "client_closed",
                client=self._peer(),
            )
        self.pipeline.clear()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # As uvicorn does it, keeping the task to cancel (see connection_lost).
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._asgi_task = task
        self._running = cycle

    def data_received(self, data: bytes) -> None:
        if self._linger_left is not None:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self.transport.close()
            return
        if self._refusal is not None or self._upgraded:
            return
        if self.pipeline:
            # Requests wait behind the one being answered: hold what comes next (bounded) rather
            # than stop reading as uvicorn does, so that a client that leaves is seen to leave.
            self._held += data
            if len(self._held) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._received_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self._partial_head and self._head_timer is None:
                # Only a head left unfinished by this chunk needs the deadline: most arrive whole,
                # and cost no timer.
                self._arm_head_timer()
        except httptools.HttpParserUpgrade:
            # A bodiless request that asked for an upgrade (see the module docstring): it is
            # answered as plain HTTP, and nothing after its head is read.
            self._upgraded = True
            self.flow.pause_reading()
            return
        except httptools.HttpParserError:
            self._refuse(self._refusal or BadRequest("the request could not be parsed"))
            return
        if self._in_head and self._received_bytes > self.limits.max_header_bytes:
            self._refuse(HeadersTooLarge(self.limits.max_header_bytes, self.limits.max_headers))

    # -------------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._partial_head = True
        self._has_cycle = False
        self._head_bytes = self._received_bytes = self._header_count = self._trailer_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        self._check_head()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # A trailer: never a head field (it could carry an Authorization or a Host that no
            # check has seen). Dropped, within the head's byte limit.
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > self.limits.max_header_bytes:
                self._refusal = HeadersTooLarge(self.limits.max_header_bytes, self.limits.max_headers)
                raise _Refused()
            return
        self._head_bytes += len(name) + len(value) + 4
        self._header_count += 1
        self._check_head()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._in_head = self._partial_head = False
        if self.parser.get_method() == b"CONNECT":
            self._refusal = MethodNotAllowed("CONNECT")
            raise _Refused()
        hosts = 0
        codings: list[bytes] = []
        declared_body = False
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
                if not _HOST.fullmatch(value):
                    # RFC 9112, 3.2: a 400. It would otherwise reach the upstream as X-Forwarded-Host.
                    self._refusal = BadRequest("the Host header is not a host name or address with an optional port")
                    raise _Refused()
            elif name == b"transfer-encoding":
                codings.append(value)
                declared_body = True
            elif name == b"content-length" and value.strip(b" \t0"):
                declared_body = True  # llhttp has checked it is one number
        # Two Hosts leave it open which one a server behind reads; a transfer coding other than
        # a single "chunked" leaves the body's end to guesswork (llhttp reads such a body to
        # the connection's end). Either could make the upstream see a different request.
        if hosts > 1 or (codings and b",".join(codings).strip().lower() != b"chunked"):
            self._refusal = BadRequest("duplicate Host or a transfer coding other than chunked")
            raise _Refused()
        if len(self.pipeline) >= MAX_PIPELINE:
            self._refusal = BadRequest(f"more than {MAX_PIPELINE} requests waiting on one connection")
            raise _Refused()
        upgrade = self.parser.should_upgrade()
        if upgrade and declared_body:
            self._refusal = BadRequest("a request that asks for a protocol upgrade cannot carry a body here")
            raise _Refused()
        self._chunked = bool(codings)
        self._body_calls = self._body_bytes = 0
        super().on_headers_complete()
        self._has_cycle = True
        if self.pipeline:
            self.flow.resume_reading()  # uvicorn paused it to queue this one: see data_received
        cycle = self.cycle
        if upgrade:
            cycle.keep_alive = False
        elif declared_body:
            cycle.transport = _LingeringClose(self)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        # uvicorn's, less its per-chunk upgrade checks (a request asking for one has no body
        # here): a body of many tiny chunks costs one call and an append per chunk.
        if self._chunked:
            self._body_calls += 1
            self._body_bytes += len(body)
            if self._body_calls > CHUNK_GRACE and self._body_bytes < self._body_calls * MIN_CHUNK_AVERAGE:
                self._refusal = BadRequest(f"chunks of fewer than {MIN_CHUNK_AVERAGE} bytes on average")
                raise _Refused()
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = self._received_bytes = 0
        # The request is all in: read on (uvicorn may have stopped reading under its last part,
        # and resumes only when the app asks for more), so that a client that leaves while the
        # upstream works is seen to leave; what comes next is held or queued as a pipeline is.
        self.flow.resume_reading()

    # -------------------------------------------------------------------- closing and writing

    def close_lingering(self) -> None:
        """Close the connection; if the client may still be sending a body, first shut the sending
        side (the answer is complete) and discard what arrives, within LINGER_BYTES and
        LINGER_SECONDS, so that the client is not reset before it has read its answer."""
        transport = self.transport
        if transport.is_closing() or self._linger_left is not None:
            return
        if self._in_head and not self._partial_head and self._refusal is None:
            transport.close()  # the request is all in: nothing left to wait for
            return
        self._cancel_head_timer()
        self._linger_left = LINGER_BYTES
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, transport.abort)
        self.flow.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()

    def on_response_complete(self) -> None:
        if self._linger_left is not None:
            return  # closing: no next request, no keep-alive
        deferred = self._deferred
        if deferred is not None and not self.pipeline and not self.transport.is_closing():
            # Every answer before the refused request's is out: now its own, and close.
            self._deferred = None
            request_id, method, path, status, outcome, answer, sent = deferred
            self.ledger.refusal(request_id, method, path, status, outcome, client=self._peer(), sent=sent)
            self._unset_keepalive_if_required()
            self.transport.write(answer)
            self.close_lingering()
            return
        super().on_response_complete()
        if self._held and not self.pipeline and not self.transport.is_closing():
            held, self._held = self._held, b""
            self.data_received(held)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_mark = self.transport.get_write_buffer_size()
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def _send_timed_out(self) -> None:
        size = self.transport.get_write_buffer_size()
        if size < self._send_mark:
            # Some of the answer left meanwhile, however slowly: a deadline on the next part.
            self._send_mark = size
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)
            return
        # The client has taken nothing of its answer for limits.send_timeout.
        self._send_timer = None
        self.transport.abort()

    def _peer(self) -> str | None:
        """The peer's address, for a request refused before its headers were judged."""
        return self.client[0] if self.client else None

    # -------------------------------------------------------------------- limits

    def _check_head(self) -> None:
        limits = self.limits
        if self._head_bytes > limits.max_header_bytes or self._header_count > limits.max_headers:
            self._refusal = HeadersTooLarge(limits.max_header_bytes, limits.max_headers)
            raise _Refused()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if not self._partial_head:
            self.transport.close()  # opened and never used: nobody to answer
            return
        # No lingering: a client this slow is not sending a body worth waiting for.
        self._refuse(RequestTimeout("the request head did not arrive in time"), linger=False)

    # -------------------------------------------------------------------- answers

    def _refuse(self, error: GatewayError, *, linger: bool = True) -> None:
        self._refusal = error
        self._cancel_head_timer()
        scope = self.scope
        # What is known of the refused request: nothing if none of it had arrived.
        begun = self._partial_head or not self._in_head
        # The client's own request id, as the proxy would have kept it, if its head is all in.
        sent = acceptable([v for n, v in self.headers if n == REQUEST_ID]) if begun and not self._in_head else None
        request_id = sent or self.ledger.new_request_id()
        status, headers, body = error_answer(self.profile, error, [(REQUEST_ID, request_id)], close=True)
        method = scope.get("method", "") if begun else ""
        if not method and begun and not self._in_head:  # refused at the end of its head
            method = self.parser.get_method().decode("latin-1")
        url = logged_path(self.url) if begun else b""
        outcome = outcome_of(error)
        running = self._running
        # The refused request is the one the app is handling (its body turned out bad).
        handled = self._has_cycle and not self._in_head and self.cycle is running
        if running is not None and not running.response_complete and not handled:
            # A pipelined request is bad (its head, or the body of one queued behind), and the
            # answer to an earlier one is on its way out: its own answer waits for the answers
            # queued before it (on_response_complete), then the connection closes. It never runs.
            if self._has_cycle and self.pipeline and self.pipeline[0][0] is self.cycle:
                self.pipeline.popleft()
            head = [STATUS_LINE[status]]
            head.extend(name + b": " + value + b"\r\n" for name, value in headers)
            answer = b"".join(head) + b"\r\n" + body
            self._deferred = (request_id, method, url, status, outcome, answer, len(body))
            # Reading goes on (what arrives is discarded, see data_received), so that a client that
            # leaves meanwhile is seen to leave and its running request is cancelled.
            self.flow.resume_reading()
            return
        if handled and running is not None and not running.response_complete:
            # The app's receive() now says the client left (its upstream request is abandoned,
            # never sent), and what it sends is dropped; the proxy logs the answer given here
            # (see Proxy.__call__).
            scope["state"][REFUSAL] = (status, outcome, request_id, len(body))
            running.disconnected = True
            running.message_event.set()
            if running.response_started:
                self.transport.close()  # mid-response: nothing honest left to send
                return
        else:
            self.ledger.refusal(request_id, method, url, status, outcome, client=self._peer(), sent=len(body))
        head = [STATUS_LINE[status]]
        head.extend(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"".join(head) + b"\r\n" + body)
        if linger:
            self.close_lingering()
        else:
            self.transport.close()


def logged_path(target: bytes) -> bytes:
    """A request target as the access log shows it: its path alone. The query may carry secrets
    (``?api_key=``), and so may an absolute-form target's userinfo (``http://user:password@h/x``)."""
    try:
        return httptools.parse_url(target).path or b""
    except httptools.HttpParserInvalidURLError:
        pass
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    scheme, separator, rest = path.partition(b"://")
    if separator:
        path = b"/" + rest.partition(b"/")[2]
    return path if path[:1] == b"/" or path == b"*" else b""


def protocol_class(
    limits: LimitsConfig, profile: ErrorProfile, rules: RequestHeaderRules, ledger: Ledger
) -> type[GatewayHttpProtocol]:
    """The protocol class for one server: uvicorn makes one instance per connection."""
    return type(
        "GatewayHttpProtocol",
        (GatewayHttpProtocol,),
        {"limits": limits, "profile": profile, "rules": rules, "ledger": ledger, "addresses": {}},
    )
