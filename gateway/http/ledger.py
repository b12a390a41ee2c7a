"""Where every request on the public listener ends: one count in the metrics and one line in the
access log, whether the proxy answered it or the HTTP protocol refused it first."""

from __future__ import annotations

from gateway.accounting.access_log import AccessLog
from gateway.accounting.metrics import Metrics
from gateway.http.request_id import RequestIds

__all__ = ["Exchange", "Ledger"]


class Exchange:
    """What became of one request, for the metrics and the access log."""

    __slots__ = (
        "client",
        "key_id",
        "observed",
        "outcome",
        "request_bytes",
        "request_id",
        "response_bytes",
        "status",
        "unread",
        "upstream",
        "upstream_status",
        "user_agent",
        "user_id",
    )

    def __init__(self) -> None:
        self.request_id = b""
        # The peer's address, or the client's that a trusted peer forwards for (proxy.trusted_peers).
        self.client: str | None = None
        # Until an answer is sent: the client left first (499, as nginx logs it).
        self.outcome = "client_closed"
        self.status = 499
        # Seconds from sending the request upstream until its response head (None: not sent),
        # and the status of that head (None: none came).
        self.upstream: float | None = None
        self.upstream_status: int | None = None
        # Bytes of the request body read (the whole body, or 0), and of the answer's body sent.
        self.request_bytes = 0
        self.response_bytes = 0
        # The first User-Agent header's value, as received.
        self.user_agent: bytes | None = None
        self.key_id: str | None = None
        self.user_id: str | None = None
        # The client may still be sending this request: an answer now closes the connection.
        self.unread = False
        # The limit in observe mode that would have refused it ("user 100/60s"), if any.
        self.observed: str | None = None


class Ledger:
    """The metrics, the access log (None when ``logging.access`` is off) and the request ids."""

    __slots__ = ("_ids", "access_log", "metrics")

    def __init__(self, metrics: Metrics, access_log: AccessLog | None) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self._ids = RequestIds()

    def new_request_id(self) -> bytes:
        return self._ids.new().encode()

    def record(self, exchange: Exchange, method: str, raw_path: bytes, duration: float) -> None:
        """One request in the metrics and the access log."""
        upstream = exchange.upstream
        self.metrics.request(exchange.outcome, exchange.status, duration - (upstream or 0.0), upstream)
        if self.access_log is not None:
            self.access_log.record(exchange, method, raw_path, duration)

    def refusal(
        self,
        request_id: bytes,
        method: str,
        raw_path: bytes,
        status: int,
        outcome: str,
        *,
        client: str | None,
        sent: int = 0,
    ) -> None:
        """A request the HTTP protocol refused before it became an ASGI request, from ``client``
        (the peer), answered with ``sent`` bytes of body."""
        exchange = Exchange()
        exchange.request_id, exchange.status, exchange.outcome = request_id, status, outcome
        exchange.client, exchange.response_bytes = client, sent
        self.record(exchange, method, raw_path, 0.0)
