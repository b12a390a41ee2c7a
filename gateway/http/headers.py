"""Which headers cross the gateway, in each direction.

The design notes: docs/internals.md, "gateway/http/headers.py"."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config import IPNetwork
from gateway.errors import UpstreamUnavailable
from gateway.http.request_id import HEADER as REQUEST_ID, acceptable

__all__ = ["HOP_BY_HOP", "ForwardedRequest", "RequestHeaderRules", "response_headers"]

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_X_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# Other claims about the client or the original request that only a trusted proxy may make (and
# that frameworks behind it believe: Werkzeug's ProxyFix, Symfony's and IIS's URL rewrites); the
# gateway does not write them.
_PROXY_CLAIMS = frozenset(
    {
        b"forwarded",
        b"x-real-ip",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-ssl",
        b"front-end-https",
        b"x-url-scheme",
        b"true-client-ip",
        b"x-client-ip",
        b"cf-connecting-ip",
        b"x-original-forwarded-for",
        b"x-original-url",
        b"x-rewrite-url",
    }
)
# The names the gateway sets or judges: a lookalike of one (``_`` or ``.`` for ``-``) never passes.
_NEVER_NOMINATED = frozenset({b"host", b"content-length"})
_MANAGED = HOP_BY_HOP | _X_FORWARDED | _PROXY_CLAIMS | {REQUEST_ID, b"content-length", b"expect", b"host"}


def _nominated(connection_values: Iterable[bytes]) -> frozenset[bytes]:
    """The header names listed in Connection headers (RFC 9110 section 7.6.1), beyond those always dropped.

    Usually empty (``Connection: keep-alive``), which spares the caller a second pass.
    """
    tokens = frozenset(
        token.strip().lower() for value in connection_values for token in value.split(b",") if token.strip()
    )
    return tokens - HOP_BY_HOP


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """The headers to send upstream, and what the client said about the request body."""

    headers: Headers
    # The declared Content-Length, or None; -1 when the body is chunked (Transfer-Encoding).
    content_length: int | None
    # The values of every Authorization header received, for the verifier.
    authorization: list[bytes]
    # The client's X-Request-Id, if it sent one acceptable one.
    request_id: bytes | None
    # Who the client is: the peer, or the address a trusted peer says it forwards for.
    client_address: str | None
    # The first User-Agent header's value, for the access log.
    user_agent: bytes | None = None


class RequestHeaderRules:
    """Rewrites the headers of one client request for the upstream (see the module docstring)."""

    def __init__(
        self,
        upstream_host: bytes,
        *,
        preserve_host: bool,
        trusted_peers: tuple[IPNetwork, ...],
        identity_headers: tuple[str, ...] = (),
        forward_authorization: bool = False,
    ) -> None:
        self._upstream_host = upstream_host
        self._preserve_host = preserve_host
        self._trusted_peers = trusted_peers
        self._identity = frozenset(_canonical(name.lower().encode("latin-1")) for name in identity_headers)
        self._managed = _MANAGED | self._identity
        self._forward_authorization = forward_authorization

    def is_trusted(self, peer: str) -> bool:
        if not self._trusted_peers:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._trusted_peers)

    def rewrite(self, scope_headers: Iterable[tuple[bytes, bytes]], peer: str | None, scheme: str) -> ForwardedRequest:
        headers: Headers = []
        connection: list[bytes] = []
        client_host: bytes | None = None
        content_length: int | None = None
        forwarded_for: list[bytes] = []
        forwarded_proto: bytes | None = None
        forwarded_host: bytes | None = None
        authorization: list[bytes] = []
        request_ids: list[bytes] = []
        user_agent: bytes | None = None
        trusted = peer is not None and self.is_trusted(peer)
        for name, value in scope_headers:
            if b"_" in name or b"." in name:
                if _canonical(name) in self._managed:
                    continue
            elif name in self._identity:
                continue
            if name == b"authorization":
                authorization.append(value)
                if not self._forward_authorization:
                    continue
            if name in HOP_BY_HOP:
                if name == b"connection":
                    connection.append(value)
                elif name == b"transfer-encoding":
                    content_length = -1
                continue
            if name == REQUEST_ID:
                request_ids.append(value)
                continue
            if name == b"expect":
                continue
            if name in _PROXY_CLAIMS and not trusted:
                continue
            if name in _X_FORWARDED:
                if name == b"x-forwarded-for":
                    forwarded_for.append(value)
                elif name == b"x-forwarded-proto":
                    forwarded_proto = forwarded_proto or value
                else:
                    forwarded_host = forwarded_host or value
                continue
            if name == b"host":
                client_host = value
                value = value if self._preserve_host else self._upstream_host
            elif name == b"content-length" and content_length is None:
                # uvicorn's parser has already rejected a malformed or conflicting Content-Length.
                content_length = int(value)
            elif name == b"user-agent" and user_agent is None:
                user_agent = value
            headers.append((name, value))
        if client_host is None:
            headers.insert(0, (b"host", self._upstream_host))
        # Host and Content-Length are never dropped for being named: the gateway sets the one and
        # frames the body it sends with the other (a buffered body always goes with its length).
        nominated = _nominated(connection) - _NEVER_NOMINATED if connection else None
        if nominated:
            headers = [(name, value) for name, value in headers if name not in nominated]

        client_address = peer
        if not trusted:
            forwarded_for, forwarded_proto, forwarded_host = [], None, None
        elif forwarded_for:
            nearest = forwarded_for[-1].rsplit(b",", 1)[-1].strip()
            client_address = nearest.decode("latin-1") if nearest else peer
        if peer is not None:
            forwarded_for.append(peer.encode("latin-1"))
        if forwarded_for:
            headers.append((b"x-forwarded-for", b", ".join(forwarded_for)))
        headers.append((b"x-forwarded-proto", forwarded_proto or scheme.encode("latin-1")))
        host = forwarded_host or client_host
        if host is not None:
            headers.append((b"x-forwarded-host", host))
        return ForwardedRequest(
            headers=headers,
            content_length=content_length,
            authorization=authorization,
            request_id=acceptable(request_ids) if request_ids else None,
            client_address=client_address,
            user_agent=user_agent,
        )


def _canonical(name: bytes) -> bytes:
    """A lowercased header name with ``_`` and ``.`` read as ``-``."""
    return name.replace(b"_", b"-").replace(b".", b"-")


# What RFC 9110 section 5.5 forbids in a field value (obs-text, 0x80-0xFF, passes as it came).
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def response_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    strip_cors: bool = False,
    replaced: frozenset[bytes] = frozenset({REQUEST_ID}),
) -> Headers:
    """The upstream's response headers minus hop-by-hop ones, those the gateway writes itself
    (``replaced``, lower case: X-Request-Id, its rate-limit and credits headers) and CORS ones if
    asked; names and order as the upstream sent them. UpstreamUnavailable if a value holds a
    control byte."""
    kept: Headers = []
    connection: list[bytes] = []
    for name, value in raw:
        if _CONTROL_BYTE.search(value) is not None:
            raise UpstreamUnavailable(f"the upstream sent a control byte in the value of {name!r}")
        lowered = name.lower()
        if lowered in HOP_BY_HOP:
            if lowered == b"connection":
                connection.append(value)
            continue
        if strip_cors and lowered.startswith(b"access-control-"):
            continue
        if lowered in replaced:
            continue  # the gateway's own value is sent instead, never beside it
        kept.append((name, value))
    nominated = _nominated(connection) if connection else None
    if nominated:
        kept = [(name, value) for name, value in kept if name.lower() not in nominated]
    return kept
