"""Settings: loaded once from YAML and the environment into frozen dataclasses.

The design notes: docs/internals.md, "gateway/config.py"."""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from limits import RateLimitItem

from gateway.profiles import BUILTIN_PROFILES, ErrorProfile, ProfileError, build_profile
from gateway.units import parse_duration, parse_limits, parse_size

__all__ = ["ConfigError", "GatewayConfig", "load_config", "resolve_config_path"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UpstreamClientName = Literal["aiohttp", "httpx", "builtin"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
RedisFailure = Literal["open", "closed"]

# Every key comes from the environment as GATEWAY_<SECTION>__<KEY> (``env_variable``); these
# shorter names, older than that rule, keep working (their value is taken as it is, never as YAML).
ENV_OVERRIDES: Mapping[str, str] = {
    "GATEWAY_UPSTREAM_URL": "upstream.url",
    "GATEWAY_STORE_URL": "store.url",
    "GATEWAY_REDIS_URL": "redis.url",
}
ENV_PREFIX = "GATEWAY_"
# The gateway's variables that are not config keys, with what each is for.
SPECIAL_VARIABLES: Mapping[str, str] = {
    "GATEWAY_CONFIG": "the config file's path",
    "GATEWAY_ADMIN_TOKEN": "the admin token",
    "GATEWAY_REQUIRE_SERVICES": "the tests: fail rather than skip without PostgreSQL or Redis",
    "GATEWAY_SCREENSHOTS": "the tests: write the README's screenshots of the console",
    **ENV_OVERRIDES,
}


class ConfigError(Exception):
    """The configuration cannot be used: one line for the operator per problem found (``problems``)."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # On SIGTERM: how long requests in flight may take to finish before they are cut off.
    shutdown_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = "http://127.0.0.1:9000"
    client: UpstreamClientName = "builtin"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_connections: int = 100
    # The longest a request waits for one of the max_connections to be free (then 503).
    pool_timeout: float = 5.0
    preserve_host: bool = False
    forward_authorization: bool = False
    # The upstream echoes X-Request-Id on every answer: one without the request's own id is an
    # answer meant for another request (an upstream's stray or late answer), refused with 502.
    check_request_id: bool = False

    @property
    def origin(self) -> str:
        """The upstream's scheme, host and port: where the clients connect."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def base_path(self) -> str:
        """``upstream.url``'s path without a trailing slash ("" for none), put before every
        forwarded path, as Kong's service path is."""
        return urlsplit(self.url).path.rstrip("/")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    trusted_peers: tuple[IPNetwork, ...] = ()


DEFAULT_KEY_PREFIX = "mk_live_"


@dataclass(frozen=True, slots=True)
class KeysConfig:
    prefix: str = DEFAULT_KEY_PREFIX
    # Prefixes of imported keys that carry no checksum of ours (gateway import).
    legacy_prefixes: tuple[str, ...] = ()
    # Not a config key: the prefix of keys this gateway minted before the error profile chose
    # keys.prefix (mk_live_, when a mockupanda deployment gets mpa_): still ours, checksum and all.
    earlier_prefixes: tuple[str, ...] = ()

    @property
    def every_prefix(self) -> tuple[str, ...]:
        """Every prefix of the keys this gateway takes: what is never to be echoed or taken for an id."""
        return (self.prefix, *self.earlier_prefixes, *self.legacy_prefixes)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    ttl_seconds: float = 60.0
    max_entries: int = 100_000
    # While Redis is down (redis.on_failure: open), no epoch announces changes: verdicts live this long.
    degraded_ttl_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class IdentityHeadersConfig:
    user_id: str = "X-User-Id"
    key_id: str = "X-Api-Key-Id"


@dataclass(frozen=True, slots=True)
class CorsConfig:
    deny_prefixes: tuple[str, ...] = ("/api/v1/",)


RateLimitHeaders = Literal["x-ratelimit", "ietf", "both", "none"]
LimitMode = Literal["enforce", "observe"]


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """Limits on one route only (a method, or "*", and a path: exact, or a prefix ending in "*"),
    per key and per user, on top of the general ones."""

    method: str
    path: str
    per_key: tuple[RateLimitItem, ...] = ()
    per_user: tuple[RateLimitItem, ...] = ()
    # observe: counted and reported (metric, access log), never refusing.
    mode: LimitMode = "enforce"

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class RateLimitsConfig:
    default: tuple[RateLimitItem, ...] = field(default_factory=lambda: parse_limits(["100/minute", "10000/day"]))
    # Every user's limits over all its keys together, unless it has its own (none: no user limits).
    per_user: tuple[RateLimitItem, ...] = ()
    headers: RateLimitHeaders = "x-ratelimit"
    routes: tuple[RouteLimit, ...] = ()
    # The general limits only observed: "key" (every key's), "user" (every user's).
    observe: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthFailuresConfig:
    # Failed authentications allowed per client address and window (null: no throttle).
    limit: RateLimitItem | None = field(default_factory=lambda: parse_limits("20/minute")[0])


@dataclass(frozen=True, slots=True)
class CreditRule:
    method: str  # upper case, or "*" for any
    path: str  # exact, or a prefix when it ends in "*"
    cost: int


@dataclass(frozen=True, slots=True)
class CreditRefill:
    """Every ``every`` (a calendar day or month, UTC), each balance is raised to ``amount``."""

    amount: int
    every: Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class CreditsConfig:
    rules: tuple[CreditRule, ...] = (CreditRule("POST", "/api/v1/mockups/generate", 1),)
    # Each user's balance pays for costed requests (402 when it cannot); off: credits are counted only.
    wallet: bool = False
    refill: CreditRefill | None = None
    # On the answers to costed requests, with the wallet on.
    header: str = "X-Credits-Remaining"


@dataclass(frozen=True, slots=True)
class UsageConfig:
    flush_seconds: float = 1.0
    # How many UTC days of usage per key are kept (the lifetime counters keep everything).
    history_days: int = 400


@dataclass(frozen=True, slots=True)
class AuditConfig:
    # How many days audit events are kept.
    retention_days: int = 365


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 10 * 1024 * 1024
    # The request line and headers together, and the number of headers (431 beyond either).
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    # From a request's first byte (or a connection's opening) until its head is complete (408).
    head_timeout: float = 10.0
    # The longest wait for the next part of a request body (408).
    body_idle_timeout: float = 30.0
    # Request bodies are read whole before the upstream is contacted: up to this size in memory,
    # beyond it (up to max_body_bytes) in a temporary file.
    body_buffer_bytes: int = 1024 * 1024
    # An idle keep-alive connection is closed after this long.
    keepalive_timeout: float = 5.0
    # A client that takes no part of its answer for this long is disconnected.
    send_timeout: float = 60.0
    # Open client connections on the public listener; one more is answered 503 and closed.
    max_connections: int = 1000
    # The same, from one peer address (proxy.trusted_peers are exempt).
    max_connections_per_address: int = 100
    # Requests of one key, and of all the keys of one user, in flight to the upstream at once; one
    # more is answered 429.
    max_concurrent_per_key: int = 32
    max_concurrent_per_user: int = 50


@dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 8081
    token_file: str | None = None
    # Named tokens, each from a file: (name, token file). The name is who the audit says made a change.
    tokens: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    # The session cookie is sent over HTTPS only: on when TLS is terminated in front of the admin
    # listener (the browser then never sends it in clear text).
    secure_cookies: bool = False
    # A session ends after this long without a request, and this long after signing in, whichever
    # comes first.
    session_idle_timeout: float = 30 * 60.0
    session_lifetime: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class PortalConfig:
    """The self-service key portal (issue 16): its own listener, off while ``port`` is None."""

    host: str = "127.0.0.1"
    port: int | None = None
    # What the links handed out are built from (the portal behind the service's proxy); None:
    # http://host:port.
    public_url: str | None = None
    # How long a link opens the portal; it opens it once.
    link_ttl: float = 5 * 60.0
    # The hosts a portal session's return_url may name.
    return_url_hosts: tuple[str, ...] = ()
    # Who may show the portal in a frame (CSP frame-ancestors).
    frame_ancestors: str = "'none'"
    # None: Secure when public_url is https:// (TLS in front of the portal).
    secure_cookies: bool | None = None
    session_idle_timeout: float = 30 * 60.0  # as the console
    session_lifetime: float = 12 * 3600.0
    # The grace periods a user may give the old key when rotating (besides "now").
    rotation_graces: tuple[float, ...] = (3600.0, 86400.0, 7 * 86400.0)
    # A key older than this is marked, with a suggestion to rotate it (Mockupanda advises 90 days).
    rotate_after: float = 90 * 86400.0
    # At most this many active keys per user from the portal (None: no limit, as Mockupanda has none).
    max_active_keys_per_user: int | None = None
    # Keys one portal session may create or rotate: a stolen session cannot mint keys without end.
    max_keys_per_session: int = 20
    # The service's name ("Back to <name>"; default: the error profile's service) and the portal's
    # title (default: "<service name> API keys", in the profile's own wording).
    service_name: str | None = None
    title: str | None = None
    accent_color: str | None = None  # "#rrggbb"; None: the console's blue
    logo: str | None = None  # an image file shown in the portal's header

    def cookies_secure(self) -> bool:
        """secure_cookies, or by default whether links are https:// (the browser comes over TLS)."""
        if self.secure_cookies is not None:
            return self.secure_cookies
        return urlsplit(self.link_base()).scheme.lower() == "https"

    def link_base(self) -> str:
        """Where links point: ``public_url``, else the listener's own address."""
        if self.public_url is not None:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    public: bool = False


@dataclass(frozen=True, slots=True)
class HealthConfig:
    check_upstream: bool = False


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///./gateway.db"
    # The longest a request waits for a key look-up before it gets 503.
    lookup_timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str | None = None
    # What requests get while Redis cannot be used: "open" (limits per process) or "closed" (503).
    on_failure: RedisFailure = "open"
    # The longest a request waits for Redis before the gateway counts it as down.
    timeout: float = 0.25


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: LogLevel = "info"
    # The log on stderr: "text" lines, or one JSON object a line.
    format: LogFormat = "text"
    # One JSON line per public request on stdout.
    access: bool = True


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: ListenConfig = field(default_factory=ListenConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    identity_headers: IdentityHeadersConfig = field(default_factory=IdentityHeadersConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    auth_failures: AuthFailuresConfig = field(default_factory=AuthFailuresConfig)
    credits: CreditsConfig = field(default_factory=CreditsConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    error_profile: ErrorProfile = BUILTIN_PROFILES["mockly"]
    store: StoreConfig = field(default_factory=StoreConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    admin_token: str | None = field(default=None, repr=False)
    # admin.tokens as read: (name, token).
    named_admin_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Where the settings came from, for messages: a path, or "defaults".
    source: str = "defaults"

    def admin_tokens(self) -> tuple[tuple[str, str], ...]:
        """Every admin token with its name: the unnamed one (GATEWAY_ADMIN_TOKEN or
        admin.token_file) is "admin". None: the admin listener is off."""
        unnamed = ((UNNAMED_ADMIN_TOKEN, self.admin_token),) if self.admin_token is not None else ()
        return unnamed + self.named_admin_tokens


# ---------------------------------------------------------------------------------- values
# Each parser takes the raw YAML value and returns the typed one, or raises ValueError whose
# text says what is expected.


def _string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError("a port number from 0 to 65535")
    return value


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a whole number of at least 1")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("a duration above zero such as 500ms or 30s")
    return seconds


def _choice(*choices: str) -> Callable[[object], Any]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return str(value)

    return parse


# A base path: segments of RFC 3986 path characters (percent-encoded as needed), no dot segments.
_BASE_PATH = re.compile(r"(/(?!\.\.?(/|$))[A-Za-z0-9\-._~!$&'()*+,;=:@%]+)*/?")


def _http_url(value: object) -> str:
    expected = "an http:// or https:// URL with a host and maybe a base path, such as http://127.0.0.1:9000/v2"
    if not isinstance(value, str):
        raise ValueError(expected)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _BASE_PATH.fullmatch(parts.path):
        raise ValueError(expected)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(expected)
    return value.rstrip("/")


def _installed(module: str) -> bool:
    # Found, not imported: the module is imported only where it is used. A bare folder of that
    # name on the path (a namespace package) is not the library.
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin not in (None, "namespace")


def _missing_extra(key: str, value: Any) -> str | None:
    """The error for ``key``'s value if it chooses a backend whose extra is not installed."""
    needs = None
    if key == "store.url" and str(value).startswith(("postgresql://", "postgres://")):
        needs = ("asyncpg", "postgres", "a PostgreSQL store")
    elif key == "redis.url" and value is not None:
        needs = ("redis", "redis", "Redis")
    elif key == "upstream.client" and value == "httpx":
        needs = ("httpx", "httpx", "the httpx upstream client")
    if needs is None or _installed(needs[0]):
        return None
    module, extra, what = needs
    return f"{what} needs the {extra} extra, which is not installed: pip install 'api-key-gateway[{extra}]'"


def _store_url(value: object) -> str:
    expected = "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://..."
    if not isinstance(value, str):
        raise ValueError(expected)
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise ValueError(expected)


def _redis_url(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a redis://host:port/db URL, or null for none")
    try:
        urlsplit(value).port  # noqa: B018 (read for its check: a port out of range raises)
    except ValueError:
        raise ValueError("a redis://host:port/db URL with a port from 1 to 65535") from None
    return value


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
_ROUTE_FIELDS = {"method", "path", "per_key", "per_user", "mode"}
LIMIT_MODES = ("enforce", "observe")


def _header_name(value: object) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ValueError("an HTTP header name such as X-User-Id")
    return value


_KEY_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


def _key_prefix(value: object) -> str:
    if not isinstance(value, str) or not _KEY_PREFIX.match(value):
        raise ValueError("a key prefix of letters, digits and underscores starting with a letter, such as mk_live_")
    return value


def _legacy_prefixes(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() == v and v for v in value):
        raise ValueError("a list of key prefixes such as [mk_live_, mpa_]")
    return tuple(value)


_TOKEN_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
UNNAMED_ADMIN_TOKEN = "admin"


def _named_token_files(value: object) -> tuple[tuple[str, str], ...]:
    expected = "a list of {name, token_file} such as [{name: ops, token_file: /run/secrets/ops-token}]"
    if not isinstance(value, list):
        raise ValueError(expected)
    named: list[tuple[str, str]] = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"name", "token_file"}:
            raise ValueError(expected)
        name, token_file = item["name"], item["token_file"]
        if not isinstance(name, str) or not _TOKEN_NAME.fullmatch(name) or name == UNNAMED_ADMIN_TOKEN:
            raise ValueError(f"{expected}; a name is 1 to 64 of a-z 0-9 _ . - (and not {UNNAMED_ADMIN_TOKEN!r})")
        if not isinstance(token_file, str) or not token_file:
            raise ValueError(expected)
        if name in {n for n, _ in named}:
            raise ValueError(f"{expected}; each name once ({name!r} twice)")
        named.append((name, token_file))
    return tuple(named)


def _path_prefixes(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/") for p in value):
        raise ValueError("a list of path prefixes such as [/api/v1/]")
    return tuple(value)


def _optional_limit(value: object) -> RateLimitItem | None:
    if value is None:
        return None
    expected = "one limit such as 20/minute, or null for none"
    if not isinstance(value, str):
        raise ValueError(expected)
    try:
        items = parse_limits(value)
    except ValueError:
        raise ValueError(expected) from None
    if len(items) != 1:
        raise ValueError(expected)
    return items[0]


def _rate_limits(value: object) -> tuple[RateLimitItem, ...]:
    # A list, or one string as the CLI takes it ("100/minute;10000/day"; "," alike).
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('a list of limits such as ["100/minute", "10000/day"]')
    try:
        return parse_limits(value)
    except ValueError:
        raise ValueError('a list of limits such as ["100/minute", "10000/day"]') from None


def _rate_limits_or_none(value: object) -> tuple[RateLimitItem, ...]:
    if value == [] or value is None:
        return ()
    return _rate_limits(value)


def _credit_rules(value: object) -> tuple[CreditRule, ...]:
    expected = "a list of {method, path, cost} such as [{method: POST, path: /api/v1/mockups/generate, cost: 1}]"
    if not isinstance(value, list):
        raise ValueError(expected)
    rules = []
    for rule in value:
        if not isinstance(rule, dict) or set(rule) != {"method", "path", "cost"}:
            raise ValueError(expected)
        method, path, cost = rule["method"], rule["path"], rule["cost"]
        valid_method = isinstance(method, str) and (method == "*" or _TOKEN.match(method))
        valid_path = isinstance(path, str) and path.startswith("/")
        if not valid_method or not valid_path or isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            raise ValueError(expected)
        rules.append(CreditRule(method.upper(), path, cost))
    return tuple(rules)


def _route_limits(value: object) -> tuple[RouteLimit, ...]:
    expected = (
        "a list of {method, path, per_key?, per_user?, mode?} such as"
        ' [{method: POST, path: /api/v1/mockups/generate, per_key: ["10/minute"]}]'
    )
    if not isinstance(value, list):
        raise ValueError(expected)
    routes = []
    for route in value:
        if not isinstance(route, dict) or not {"method", "path"} <= set(route) <= _ROUTE_FIELDS:
            raise ValueError(expected)
        method, path, mode = route["method"], route["path"], route.get("mode", "enforce")
        valid_method = isinstance(method, str) and (method == "*" or _TOKEN.match(method))
        if not valid_method or not isinstance(path, str) or not path.startswith("/") or mode not in LIMIT_MODES:
            raise ValueError(expected)
        per_key = _rate_limits_or_none(route.get("per_key"))
        per_user = _rate_limits_or_none(route.get("per_user"))
        if not per_key and not per_user:
            raise ValueError(expected + " (each with per_key or per_user)")
        routes.append(RouteLimit(method.upper(), path, per_key, per_user, mode))
    return tuple(routes)


def _refill(value: object) -> CreditRefill | None:
    if value is None:
        return None
    expected = "{amount, every} such as {amount: 1000, every: month} (every: day or month), or null"
    if not isinstance(value, dict) or set(value) != {"amount", "every"}:
        raise ValueError(expected)
    amount, every = value["amount"], value["every"]
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0 or every not in ("day", "month"):
        raise ValueError(expected)
    return CreditRefill(amount, every)


def _observed(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not set(value) <= {"key", "user"}:
        raise ValueError('a list of the limits only observed: [], ["key"], ["user"] or ["key", "user"]')
    return tuple(value)


def _networks(value: object) -> tuple[IPNetwork, ...]:
    expected = "a list of IP addresses or networks, such as [10.0.0.0/8, 192.168.1.7]"
    if not isinstance(value, list):
        raise ValueError(expected)
    try:
        return tuple(ipaddress.ip_network(str(item), strict=False) for item in value)
    except ValueError:
        raise ValueError(expected) from None


_HOST_NAME = re.compile(r"[A-Za-z0-9.\-]+")


def _host_names(value: object) -> tuple[str, ...]:
    expected = "a list of host names, such as [dashboard.example.com]"
    if not isinstance(value, list) or not all(isinstance(h, str) and _HOST_NAME.fullmatch(h) for h in value):
        raise ValueError(expected)
    return tuple(h.lower() for h in value)


def _grace_periods(value: object) -> tuple[float, ...]:
    # Whole seconds: a page offers each by its seconds, and "0" is "now".
    expected = "a list of durations of whole seconds, at least 1s, such as [1h, 1d, 7d]"
    if not isinstance(value, list):
        raise ValueError(expected)
    try:
        graces = tuple(sorted({_positive_duration(item) for item in value}))
    except ValueError:
        raise ValueError(expected) from None
    if any(grace < 1 or grace != int(grace) for grace in graces):
        raise ValueError(expected)
    return graces


def _colour(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"#(?:[0-9A-Fa-f]{3}){1,2}", value):
        raise ValueError("a colour as #rrggbb or #rgb, such as '#2f5fd0' (quoted in YAML)")
    return value.lower()


def _short_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 80 or not value.isprintable():
        raise ValueError("a line of text of at most 80 characters")
    return value.strip()


# What an <img> may show of a logo file, by its extension, and how large it may be.
LOGO_TYPES: Mapping[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
MAX_LOGO_BYTES = 512 * 1024


def _logo(value: object) -> str:
    if not isinstance(value, str) or Path(value).suffix.lower() not in LOGO_TYPES:
        raise ValueError("the path of an image file: " + ", ".join(LOGO_TYPES))
    return value


def _check_logo(path: str, source: str, problems: list[str]) -> None:
    """The logo file can be read and is not too large (it is read again when the portal starts)."""
    try:
        size = Path(path).stat().st_size
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        problems.append(f"{source}: portal.logo: cannot read {path}: {exc.strerror or exc}")
        return
    if size > MAX_LOGO_BYTES:
        problems.append(f"{source}: portal.logo: {path} is {size:,} bytes; at most {MAX_LOGO_BYTES:,}")


def _frame_ancestors(value: object) -> str:
    # Sources of a CSP directive: nothing that would end it (";") or another header line.
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9'*:/.\- ]+", value.strip()):
        raise ValueError("CSP frame-ancestors sources, such as 'none', 'self' or https://dashboard.example.com")
    return value.strip()


# Every key of the file: dotted name -> parser. Defaults live on the dataclasses above.
_SCALARS: Mapping[str, Callable[[object], Any]] = {
    "listen.host": _string,
    "listen.port": _port,
    "listen.shutdown_timeout": _positive_duration,
    "upstream.url": _http_url,
    "upstream.client": _choice("aiohttp", "httpx", "builtin"),
    "upstream.connect_timeout": _positive_duration,
    "upstream.read_timeout": _positive_duration,
    "upstream.max_connections": _positive_int,
    "upstream.pool_timeout": _positive_duration,
    "upstream.preserve_host": _boolean,
    "upstream.forward_authorization": _boolean,
    "upstream.check_request_id": _boolean,
    "proxy.trusted_peers": _networks,
    "limits.max_body_bytes": parse_size,
    "limits.max_header_bytes": parse_size,
    "limits.max_headers": _positive_int,
    "limits.head_timeout": _positive_duration,
    "limits.body_idle_timeout": _positive_duration,
    "limits.body_buffer_bytes": parse_size,
    "limits.keepalive_timeout": _positive_duration,
    "limits.send_timeout": _positive_duration,
    "limits.max_connections": _positive_int,
    "limits.max_connections_per_address": _positive_int,
    "limits.max_concurrent_per_key": _positive_int,
    "limits.max_concurrent_per_user": _positive_int,
    "keys.prefix": _key_prefix,
    "keys.legacy_prefixes": _legacy_prefixes,
    "cache.ttl_seconds": _positive_duration,
    "cache.max_entries": _positive_int,
    "cache.degraded_ttl_seconds": _positive_duration,
    "identity_headers.user_id": _header_name,
    "identity_headers.key_id": _header_name,
    "cors.deny_prefixes": _path_prefixes,
    "rate_limits.default": _rate_limits,
    "rate_limits.per_user": _rate_limits_or_none,
    "rate_limits.routes": _route_limits,
    "rate_limits.observe": _observed,
    "auth_failures.limit": _optional_limit,
    "rate_limits.headers": _choice("x-ratelimit", "ietf", "both", "none"),
    "credits.rules": _credit_rules,
    "credits.wallet": _boolean,
    "credits.refill": _refill,
    "credits.header": _header_name,
    "usage.flush_seconds": _positive_duration,
    "usage.history_days": _positive_int,
    "audit.retention_days": _positive_int,
    "admin.host": _string,
    "admin.port": _port,
    "admin.token_file": lambda value: None if value is None else _string(value),
    "admin.tokens": _named_token_files,
    "console.secure_cookies": _boolean,
    "console.session_idle_timeout": _positive_duration,
    "console.session_lifetime": _positive_duration,
    "portal.host": _string,
    "portal.port": lambda value: None if value is None else _port(value),
    "portal.public_url": lambda value: None if value is None else _http_url(value),
    "portal.link_ttl": _positive_duration,
    "portal.return_url_hosts": _host_names,
    "portal.frame_ancestors": _frame_ancestors,
    "portal.secure_cookies": lambda value: None if value is None else _boolean(value),
    "portal.session_idle_timeout": _positive_duration,
    "portal.session_lifetime": _positive_duration,
    "portal.rotation_graces": _grace_periods,
    "portal.rotate_after": _positive_duration,
    "portal.max_active_keys_per_user": lambda value: None if value is None else _positive_int(value),
    "portal.max_keys_per_session": _positive_int,
    "portal.service_name": lambda value: None if value is None else _short_text(value),
    "portal.title": lambda value: None if value is None else _short_text(value),
    "portal.accent_color": lambda value: None if value is None else _colour(value),
    "portal.logo": lambda value: None if value is None else _logo(value),
    "health.check_upstream": _boolean,
    "metrics.public": _boolean,
    "store.url": _store_url,
    "store.lookup_timeout": _positive_duration,
    "redis.url": _redis_url,
    "redis.on_failure": _choice("open", "closed"),
    "redis.timeout": _positive_duration,
    "logging.level": _choice("debug", "info", "warning", "error"),
    "logging.format": _choice("text", "json"),
    "logging.access": _boolean,
    "errors.profile": _string,
}
_SECTIONS = {
    "listen": ListenConfig,
    "upstream": UpstreamConfig,
    "proxy": ProxyConfig,
    "limits": LimitsConfig,
    "keys": KeysConfig,
    "cache": CacheConfig,
    "identity_headers": IdentityHeadersConfig,
    "cors": CorsConfig,
    "rate_limits": RateLimitsConfig,
    "auth_failures": AuthFailuresConfig,
    "credits": CreditsConfig,
    "usage": UsageConfig,
    "audit": AuditConfig,
    "admin": AdminConfig,
    "console": ConsoleConfig,
    "portal": PortalConfig,
    "health": HealthConfig,
    "metrics": MetricsConfig,
    "store": StoreConfig,
    "redis": RedisConfig,
    "logging": LoggingConfig,
}


def _profile_definitions(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a mapping of profile name to definition")
    return {str(name): definition for name, definition in value.items()}


# Every key the settings can be given, in the file or the environment: the documented ones, and
# the custom error profiles (documented commented out).
_KEYS: Mapping[str, Callable[[object], Any]] = {**_SCALARS, "errors.profiles": _profile_definitions}


def env_variable(key: str) -> str:
    """The environment variable of a key: ``listen.port`` is GATEWAY_LISTEN__PORT."""
    return ENV_PREFIX + key.replace(".", "__").upper()


_ENV_KEYS: Mapping[str, str] = {env_variable(key): key for key in _KEYS}


# ---------------------------------------------------------------------------------- loading


def resolve_config_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """The file to read: the explicit path, else $GATEWAY_CONFIG, else ./config.yaml if present."""
    if path is not None:
        return Path(path)
    if environ.get("GATEWAY_CONFIG"):
        return Path(environ["GATEWAY_CONFIG"])
    default = Path("config.yaml")
    return default if default.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, check and freeze the settings: the file, then the environment over it. ConfigError
    if anything is wrong, with one line per problem found, every problem at once."""
    environ = os.environ if environ is None else environ
    file = resolve_config_path(path, environ)
    raw: dict[str, Any] = {}
    source = "defaults"
    if file is not None:
        source = str(file)
        raw = _read_yaml(file)
    problems: list[str] = []
    values = _flatten(raw, source, problems)
    origins = dict.fromkeys(values, source)
    for variable, key, value in _from_environment(environ, problems):
        origin = f"environment variable {variable}"
        values.pop(key, None)
        parsed = _parse(key, value, origin, problems)
        if parsed is not _INVALID:
            values[key], origins[key] = parsed, origin
    # Once the environment has had its say: it may choose another backend than the file did.
    for key, value in values.items():
        if (missing := _missing_extra(key, value)) is not None:
            problems.append(f"{origins[key]}: {key}: {missing}")
    admin_token = environ.get("GATEWAY_ADMIN_TOKEN", "").strip() or None
    token_file = values.get("admin.token_file")
    if admin_token is None and token_file is not None:
        admin_token = _read_token(token_file, origins["admin.token_file"], problems)
    if admin_token is not None and not _usable_token(admin_token):
        where = "environment variable GATEWAY_ADMIN_TOKEN" if environ.get("GATEWAY_ADMIN_TOKEN") else source
        problems.append(f"{where}: admin token: expected {TOKEN_RULE}")
    named_tokens: list[tuple[str, str]] = []
    for name, token_file in values.get("admin.tokens", ()):
        where = origins["admin.tokens"]
        token = _read_token(token_file, where, problems, key=f"admin.tokens ({name})")
        if token is None:
            continue
        if not _usable_token(token):
            problems.append(f"{where}: admin.tokens ({name}): expected {TOKEN_RULE}")
        elif token == admin_token or token in {t for _, t in named_tokens}:
            problems.append(f"{where}: admin.tokens ({name}): the same token as another; give each its own")
        named_tokens.append((name, token))

    if values.get("portal.logo") is not None:
        _check_logo(values["portal.logo"], origins["portal.logo"], problems)

    profiles: dict[str, ErrorProfile] = dict(BUILTIN_PROFILES)
    for name, definition in values.pop("errors.profiles", {}).items():
        try:
            profiles[name] = build_profile(name, definition)
        except ProfileError as exc:
            key = f"errors.profiles.{name}" + (f".{exc.key}" if exc.key else "")
            problems.append(f"{origins['errors.profiles']}: {key}: expected {exc.expected}")
    profile_name = values.pop("errors.profile", "mockly")
    if profile_name not in profiles:
        where = origins.get("errors.profile", source)
        problems.append(f"{where}: errors.profile: expected one of {', '.join(profiles)}, got {profile_name!r}")
    if problems:
        raise ConfigError(*problems)
    if "keys.prefix" not in values:
        # The fronted API's documented prefix (mockupanda: mpa_). Keys minted before with the
        # old default keep working: the change of prefix must not turn every key away.
        values["keys.prefix"] = profiles[profile_name].key_prefix
        if values["keys.prefix"] != DEFAULT_KEY_PREFIX:
            values["keys.earlier_prefixes"] = (DEFAULT_KEY_PREFIX,)

    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        prefix = section + "."
        sections[section] = cls(**{k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)})
    return GatewayConfig(
        **sections,
        error_profile=profiles[profile_name],
        admin_token=admin_token,
        named_admin_tokens=tuple(named_tokens),
        source=source,
    )


MIN_ADMIN_TOKEN = 16


TOKEN_RULE = f"at least {MIN_ADMIN_TOKEN} characters, printable ASCII without spaces, not all one character"


def _usable_token(token: str) -> bool:
    """What a client can send as ``Bearer <token>``, and not trivially guessed."""
    return len(token) >= MIN_ADMIN_TOKEN and all("!" <= character <= "~" for character in token) and len(set(token)) > 1


def _read_token(token_file: str, source: str, problems: list[str], key: str = "admin.token_file") -> str | None:
    """The token in ``token_file``, or None with the problem noted."""
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{source}: {key}: cannot read {token_file}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        problems.append(f"{source}: {key}: {token_file} is not UTF-8 text")
        return None
    if not token:
        problems.append(f"{source}: {key}: {token_file} is empty")
        return None
    return token


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of sections (listen, upstream, ...) at the top level")
    return data


def _flatten(raw: Mapping[str, Any], source: str, problems: list[str]) -> dict[str, Any]:
    """The file's checked values by dotted key; what is wrong is noted in ``problems``."""
    values: dict[str, Any] = {}
    for section, body in raw.items():
        if section not in (*_SECTIONS, "errors"):
            known = ", ".join((*_SECTIONS, "errors"))
            problems.append(f"{source}: {section}: unknown section (known: {known})")
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append(f"{source}: {section}: expected a mapping of keys")
            continue
        for name, value in body.items():
            key = f"{section}.{name}"
            if key not in _KEYS:
                known = ", ".join(k for k in _KEYS if k.startswith(section + "."))
                problems.append(f"{source}: {key}: unknown key (known: {known})")
                continue
            parsed = _parse(key, value, source, problems)
            if parsed is not _INVALID:
                values[key] = parsed
    return values


_INVALID = object()


_PASSWORD_IN_URL = re.compile(r"(://[^/@]*?:)[^/@]*@")


def _got(key: str, value: object) -> str:
    """A refused value as an error message may show it: a URL's password masked (as the
    connection errors mask it), and a URL key's value that is no URL at all left out (it may be
    a password pasted in the wrong place)."""
    if not key.endswith("url"):
        return f", got {value!r}"
    if not isinstance(value, str) or "://" not in value:
        return ""
    masked = _PASSWORD_IN_URL.sub(r"\1***@", value)
    return f", got {masked!r}"


def _parse(key: str, value: object, source: str, problems: list[str]) -> Any:
    """The key's checked value, or _INVALID with the problem noted."""
    try:
        return _KEYS[key](value)
    except ValueError as exc:
        problems.append(f"{source}: {key}: expected {exc}{_got(key, value)}")
        return _INVALID


# ---------------------------------------------------------------------------------- the environment


def _from_environment(environ: Mapping[str, str], problems: list[str]) -> list[tuple[str, str, object]]:
    """(variable, key, raw value) of every config key set in the environment; an unknown
    GATEWAY_ variable, or a value that cannot be read, is noted in ``problems``."""
    found: list[tuple[str, str, object]] = []
    for variable in sorted(environ):
        # gateway_listen__port is a slip for GATEWAY_LISTEN__PORT, not someone else's variable.
        if not variable.upper().startswith(ENV_PREFIX) or variable in SPECIAL_VARIABLES:
            continue
        key = _ENV_KEYS.get(variable)
        if key is None:
            problems.append(_unknown_variable(variable))
            continue
        try:
            found.append((variable, key, _env_value(environ[variable])))
        except ValueError as exc:
            problems.append(f"environment variable {variable}: {key}: expected {exc}{_got(key, environ[variable])}")
    for variable, key in ENV_OVERRIDES.items():
        if variable not in environ:
            continue
        if any(key == other for _, other, _ in found):
            problems.append(f"environment variable {variable}: {key} is set by {env_variable(key)} too: set one")
            continue
        found.append((variable, key, environ[variable]))  # as it is, as ever
    return found


def _env_value(text: str) -> object:
    """A variable's value: a list or a mapping as JSON, a scalar as the YAML file would spell it
    (``8081`` a number, ``true`` a boolean, ``5s`` a string, ``null`` or nothing none)."""
    text = text.strip()
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"a list or a mapping in JSON ({exc.msg} at column {exc.colno})") from None
    loader = yaml.SafeLoader("")
    try:
        # Resolved as a plain scalar of the file: a value is never taken for YAML's structure.
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        node = yaml.ScalarNode(tag, text)
        return loader.construct_object(node)
    except yaml.YAMLError:
        return text
    finally:
        loader.dispose()


def _unknown_variable(variable: str) -> str:
    """The error for a GATEWAY_ variable that is no config key, naming the nearest one."""
    candidates = {**{name: f"({key})" for name, key in _ENV_KEYS.items()}, **SPECIAL_VARIABLES}
    # The usual slip is an underscore too few or too many: compared without them first.
    squeezed = {name.replace("_", ""): name for name in candidates}
    nearest = squeezed.get(variable.upper().replace("_", ""))
    if nearest is None:
        tails = {name[len(ENV_PREFIX) :]: name for name in candidates}
        tail = variable[len(ENV_PREFIX) :].upper()
        nearest = tails[max(tails, key=lambda t: difflib.SequenceMatcher(None, tail, t).ratio())]
    what = candidates[nearest]
    what = what if what.startswith("(") else f"({what})"
    return f"environment variable {variable} is no config key: did you mean {nearest} {what}?"
