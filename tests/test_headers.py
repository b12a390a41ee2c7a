from __future__ import annotations

import ipaddress

from gateway.http.headers import RequestHeaderRules, response_headers


def rules(**kwargs) -> RequestHeaderRules:
    kwargs.setdefault("preserve_host", False)
    kwargs.setdefault("trusted_peers", ())
    return RequestHeaderRules(b"upstream:9000", **kwargs)


def test_request_body_framing_is_reported() -> None:
    assert rules().rewrite([(b"host", b"h")], "1.2.3.4", "http").content_length is None
    assert rules().rewrite([(b"content-length", b"12")], "1.2.3.4", "http").content_length == 12
    chunked = rules().rewrite([(b"transfer-encoding", b"chunked")], "1.2.3.4", "http")
    assert chunked.content_length == -1
    assert all(name != b"transfer-encoding" for name, _ in chunked.headers)


def test_host_is_added_when_the_client_sent_none() -> None:
    # HTTP/1.0 requests may come without Host.
    headers = rules().rewrite([(b"accept", b"*/*")], "1.2.3.4", "http").headers
    assert headers == [
        (b"host", b"upstream:9000"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"x-forwarded-proto", b"http"),
    ]


def test_connection_cannot_remove_host_or_forwarding_headers() -> None:
    headers = (
        rules()
        .rewrite([(b"host", b"h"), (b"connection", b"host, x-forwarded-for, x-forwarded-host")], "1.2.3.4", "https")
        .headers
    )
    assert headers == [
        (b"host", b"upstream:9000"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"h"),
    ]


def test_trust_is_by_network() -> None:
    trusting = rules(trusted_peers=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")))
    assert trusting.is_trusted("10.200.0.1")
    assert trusting.is_trusted("::1")
    assert not trusting.is_trusted("11.0.0.1")
    assert not trusting.is_trusted("not-an-address")
    assert not rules().is_trusted("127.0.0.1")


def test_response_hop_by_hop_headers_are_dropped_with_those_connection_names() -> None:
    raw = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"keep-alive, X-Internal"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Internal", b"secret"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Upgrade", b"h2c"),
        (b"Trailer", b"X-Sum"),
    ]
    assert response_headers(raw) == [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
