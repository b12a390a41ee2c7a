"""Where every request on the public listener ends: one count in the metrics and one line in the
access log, whether the proxy answered it or the HTTP protocol refused it first."""

from __future__ import annotations

from gateway.accounting.access_log import AccessLog
from gateway.accounting.metrics import Metrics
from gateway.http.request_id import RequestIds

__all__ = ["Exchange", "Ledger"]


class Exchange:
    """What became of one request, for the metrics and the access log."""

    __slots__ = ("key_id", "observed", "outcome", "request_id", "status", "unread", "upstream", "user_id")

    def __init__(self) -> None:
        self.request_id = b""
        # Until an answer is sent: the client left first (499, as nginx logs it).
        self.outcome = "client_closed"
        self.status = 499
        # Seconds from sending the request upstream until its response head (None: not sent).
        self.upstream: float | None = None
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
                observed=exchange.observed,
            )

    def refusal(self, request_id: bytes, method: str, raw_path: bytes, status: int, outcome: str) -> None:
        """A request the HTTP protocol refused before it became an ASGI request."""
        exchange = Exchange()
        exchange.request_id, exchange.status, exchange.outcome = request_id, status, outcome
        self.record(exchange, method, raw_path, 0.0)
