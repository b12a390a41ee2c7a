"""The public listener's HTTP/1.1 protocol: uvicorn's httptools protocol, with the gateway's limits.

uvicorn parses requests with httptools, that is llhttp in strict mode: it refuses a request with
both Content-Length and Transfer-Encoding, a malformed or repeated Content-Length, an unknown or
non-final transfer coding, bad chunk syntax, bare CR or LF line ends, and control bytes in header
names or values. The gateway ships that parser, pinned in ``pyproject.toml``; the framing tests in
``tests/adversarial`` run against it and against uvicorn's other parser, h11. This subclass adds
what uvicorn leaves out:

- Every answer given before a request reaches the app is in the error profile (JSON,
  ``Cache-Control: no-store``, ``Connection: close``, an ``X-Request-Id``), not uvicorn's plain
  text: 400 for a request the parser refuses; 405 for CONNECT (a tunnel past the gateway, which
  the parser hands over as an upgrade); 431 for a head over ``limits.max_header_bytes`` or with
  more than ``limits.max_headers`` headers, counted as the bytes arrive, so an endless head is cut
  off at the limit instead of buffered; 408 for a head not complete ``limits.head_timeout`` after
  its first byte. A connection that sends nothing for that long after opening is closed.
- ``limits.max_connections``: a connection beyond it is answered 503 (``overloaded``) and closed.
- A client that closes its connection before its answer is complete cancels the request's task,
  and with it the upstream request (uvicorn would let it run to the upstream's answer).

Each refusal is counted in the metrics and written to the access log. If a response to an
earlier pipelined request is still being sent, the refusal cannot be written without corrupting
it: the connection is then closed once that response is complete.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from gateway.config import LimitsConfig
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge, MethodNotAllowed, Overloaded, RequestTimeout
from gateway.profiles import ErrorProfile
from gateway.proxy import CLIENT_GONE, OUTCOME_OF, REFUSAL, Proxy, error_answer
from gateway.request_id import HEADER as REQUEST_ID

__all__ = ["GatewayHttpProtocol", "protocol_class"]


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal itself is on the protocol."""


class GatewayHttpProtocol(HttpToolsProtocol):
    # Set on the subclass that ``protocol_class`` makes for one server.
    limits: ClassVar[LimitsConfig]
    profile: ClassVar[ErrorProfile]
    proxy: ClassVar[Proxy]

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

    # -------------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(Overloaded())
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        cycle, task = self.cycle, self._asgi_task
        if cycle is not None and not cycle.response_complete and task is not None and not task.done():
            # The client has gone before its answer was complete: stop working for nobody. The
            # cancellation reaches the upstream request, which closes its connection.
            cycle.scope["state"][CLIENT_GONE] = True
            task.cancel()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # As uvicorn does it, keeping the task to cancel (see connection_lost).
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._asgi_task = task

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
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
            # An Upgrade request goes upstream as plain HTTP (Upgrade is hop-by-hop); the parser
            # stops at its head, so what follows on this connection is not read as requests.
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
        self._head_bytes = self._received_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        self._check_head()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
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
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                codings.append(value)
        # Two Hosts leave it open which one a server behind reads; a transfer coding other than
        # a single "chunked" leaves the body's end to guesswork (llhttp reads such a body to
        # the connection's end). Either could make the upstream see a different request.
        if hosts > 1 or (codings and b",".join(codings).strip().lower() != b"chunked"):
            self._refusal = BadRequest("duplicate Host or a transfer coding other than chunked")
            raise _Refused()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = self._received_bytes = 0

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
        self._refuse(RequestTimeout("the request head did not arrive in time"))

    # -------------------------------------------------------------------- answers

    def _refuse(self, error: GatewayError) -> None:
        self._refusal = error
        self._cancel_head_timer()
        request_id = self.proxy.new_request_id()
        status, headers, body = error_answer(self.profile, error, [(REQUEST_ID, request_id)], close=True)
        scope = self.scope
        # What is known of the refused request: nothing if none of it had arrived.
        begun = self._partial_head or not self._in_head
        method = scope.get("method", "") if begun else ""
        url = self.url if begun else b""
        outcome = OUTCOME_OF[error.situation]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._in_head:
                # The next pipelined request is bad, and the answer to the one before is on its
                # way out: close after it rather than cut into it.
                self.proxy.count_refusal(request_id, method, url, status, outcome)
                cycle.keep_alive = False
                self.flow.pause_reading()
                return
            # The body of the request the app is handling is bad. The app's receive() now says
            # the client left (its upstream request is abandoned, never completed), and what it
            # sends is dropped; the proxy logs the answer given here (see Proxy.__call__).
            scope["state"][REFUSAL] = (status, outcome)
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()  # mid-response: nothing honest left to send
                return
        else:
            self.proxy.count_refusal(request_id, method, url, status, outcome)
        head = [STATUS_LINE[status]]
        head.extend(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()


def protocol_class(limits: LimitsConfig, profile: ErrorProfile, proxy: Proxy) -> type[GatewayHttpProtocol]:
    """The protocol class for one server: uvicorn makes one instance per connection."""
    return type(
        "GatewayHttpProtocol",
        (GatewayHttpProtocol,),
        {"limits": limits, "profile": profile, "proxy": proxy},
    )
