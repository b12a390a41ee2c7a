"""Error profiles: the error dialect of the API the gateway fronts, as data.

The design notes: docs/internals.md, "gateway/profiles.py"."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError

__all__ = ["BUILTIN_PROFILES", "SITUATIONS", "ErrorProfile", "ProfileError", "Situation", "build_profile"]

# Every situation, with the parameters its message and details may use.
SITUATIONS: Mapping[str, tuple[str, ...]] = {
    "missing_credentials": (),
    "invalid_credentials": (),
    "subscription_inactive": (),
    "rate_limited": ("limit", "window", "retry_after", "scope"),
    "concurrency_limited": ("max_concurrent", "retry_after"),
    "insufficient_credits": ("required", "balance"),
    "payload_too_large": ("max_bytes",),
    "upstream_unavailable": (),
    "upstream_timeout": (),
    "bad_request": (),
    "method_not_allowed": ("method",),
    "request_timeout": (),
    "headers_too_large": ("max_bytes", "max_headers"),
    "store_unavailable": (),
    "overloaded": (),
    "internal_error": (),
}

_PLACEHOLDERS = ("{code}", "{message}", "{status}", "{details}")


class ProfileError(ValueError):
    """A profile definition is invalid at ``key`` (relative to the profile), expecting ``expected``."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"{key}: expected {expected}")
        self.key = key
        self.expected = expected


@dataclass(frozen=True, slots=True)
class Situation:
    status: int
    code: str
    message: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class ErrorProfile:
    name: str
    envelope: Any
    situations: Mapping[str, Situation]
    # The prefix of the keys the fronted API documents: keys.prefix unless that is set.
    key_prefix: str = "mk_live_"
    # The fronted service's name and what its documentation calls keys (the portal's wording):
    # "Account → API keys" in Mockly's, "Dashboard → API Keys" in Mockupanda's.
    service: str = "Mockly"
    keys_title: str = "API keys"
    # Bodies of the situations whose message takes no parameter, rendered once.
    _static: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, situation in self.situations.items():
            if not situation.details and not _fields(situation.message):
                self._static[name] = self._render(situation, {})

    def render(self, error: GatewayError) -> tuple[int, bytes]:
        """The status and JSON body that answer ``error`` in this profile."""
        situation = self.situations[error.situation]
        body = self._static.get(error.situation)
        if body is None:
            body = self._render(situation, error.params)
        return situation.status, body

    def _render(self, situation: Situation, params: Mapping[str, object]) -> bytes:
        values: dict[str, object] = {
            "{code}": situation.code,
            "{message}": situation.message.format_map(params),
            "{status}": situation.status,
        }
        if situation.details:
            values["{details}"] = {name: params[name] for name in situation.details}
        return json.dumps(_fill(self.envelope, values), separators=(",", ":")).encode()


_OMIT = object()


def _fill(template: Any, values: Mapping[str, object]) -> Any:
    if isinstance(template, str):
        return values.get(template, _OMIT if template == "{details}" else template)
    if isinstance(template, dict):
        filled = {key: _fill(value, values) for key, value in template.items()}
        return {key: value for key, value in filled.items() if value is not _OMIT}
    if isinstance(template, list):
        return [value for value in (_fill(item, values) for item in template) if value is not _OMIT]
    return template


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


_MOCKLY = ErrorProfile(
    name="mockly",
    envelope={"error": {"code": "{code}", "message": "{message}"}},
    situations={
        "missing_credentials": Situation(
            401, "invalid_credentials", "Missing API key: send it as 'Authorization: Bearer <key>'"
        ),
        "invalid_credentials": Situation(401, "invalid_credentials", "Invalid or revoked API key"),
        "subscription_inactive": Situation(403, "subscription_inactive", "The subscription is not active"),
        "rate_limited": Situation(
            429, "rate_limited", "Rate limit of {limit} requests per {window} exceeded; retry in {retry_after}s"
        ),
        "concurrency_limited": Situation(
            429, "rate_limited", "Too many concurrent requests (at most {max_concurrent}); retry shortly"
        ),
        "insufficient_credits": Situation(
            402, "insufficient_credits", "Not enough credits: this request costs {required}, the balance is {balance}"
        ),
        "payload_too_large": Situation(413, "validation_failed", "Request body is larger than {max_bytes} bytes"),
        "upstream_unavailable": Situation(502, "upstream_unavailable", "The service is unavailable"),
        "upstream_timeout": Situation(504, "upstream_timeout", "The service did not answer in time"),
        "bad_request": Situation(400, "bad_request", "Malformed request"),
        "method_not_allowed": Situation(405, "method_not_allowed", "Method {method} is not allowed"),
        "request_timeout": Situation(408, "request_timeout", "The request did not arrive in time"),
        "headers_too_large": Situation(
            431, "headers_too_large", "Request headers exceed {max_bytes} bytes or {max_headers} fields"
        ),
        "store_unavailable": Situation(503, "service_unavailable", "The service is temporarily unavailable"),
        "overloaded": Situation(503, "service_unavailable", "The service is temporarily unavailable"),
        "internal_error": Situation(500, "internal_error", "Internal error"),
    },
)

_MOCKUPANDA = ErrorProfile(
    name="mockupanda",
    key_prefix="mpa_",
    service="Mockupanda",
    keys_title="API Keys",
    envelope={"error": "{message}", "code": "{code}", "details": "{details}"},
    situations={
        "missing_credentials": Situation(401, "MISSING_API_KEY", "Authorization header is required"),
        "invalid_credentials": Situation(401, "INVALID_API_KEY", "Invalid or revoked API key"),
        "subscription_inactive": Situation(403, "SUBSCRIPTION_INACTIVE", "Subscription is not active"),
        "rate_limited": Situation(
            429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded", details=("limit", "window", "retry_after", "scope")
        ),
        "concurrency_limited": Situation(
            429, "RATE_LIMIT_EXCEEDED", "Too many concurrent requests", details=("max_concurrent",)
        ),
        "insufficient_credits": Situation(
            402, "INSUFFICIENT_CREDITS", "Insufficient credits", details=("required", "balance")
        ),
        "payload_too_large": Situation(413, "PAYLOAD_TOO_LARGE", "Request body exceeds {max_bytes} bytes"),
        "upstream_unavailable": Situation(502, "UPSTREAM_UNAVAILABLE", "Upstream service unavailable"),
        "upstream_timeout": Situation(504, "UPSTREAM_TIMEOUT", "Upstream service timed out"),
        "bad_request": Situation(400, "BAD_REQUEST", "Malformed request"),
        "method_not_allowed": Situation(405, "METHOD_NOT_ALLOWED", "Method not allowed", details=("method",)),
        "request_timeout": Situation(408, "REQUEST_TIMEOUT", "Request timed out"),
        "headers_too_large": Situation(
            431, "HEADERS_TOO_LARGE", "Request headers too large", details=("max_bytes", "max_headers")
        ),
        "store_unavailable": Situation(503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable"),
        "overloaded": Situation(503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable"),
        "internal_error": Situation(500, "INTERNAL_ERROR", "Internal server error"),
    },
)

BUILTIN_PROFILES: Mapping[str, ErrorProfile] = {p.name: p for p in (_MOCKLY, _MOCKUPANDA)}


def build_profile(name: str, raw: object) -> ErrorProfile:
    """A custom profile from its ``config.yaml`` mapping; ProfileError names what is wrong.

    ``base`` (a built-in profile, default ``mockly``) supplies the envelope and every situation
    the definition does not override.
    """
    if not isinstance(raw, dict):
        raise ProfileError("", "a mapping with base, envelope and situations")
    unknown = set(raw) - {"base", "envelope", "situations"}
    if unknown:
        raise ProfileError(sorted(unknown)[0], "no such key (known: base, envelope, situations)")
    base_name = raw.get("base", "mockly")
    if not isinstance(base_name, str) or base_name not in BUILTIN_PROFILES:
        raise ProfileError("base", f"one of {', '.join(BUILTIN_PROFILES)}")
    base = BUILTIN_PROFILES[base_name]
    envelope = raw.get("envelope", base.envelope)
    if not isinstance(envelope, dict) or not _mentions_placeholder(envelope):
        raise ProfileError("envelope", "a JSON object with at least one of " + ", ".join(_PLACEHOLDERS))
    situations = dict(base.situations)
    raw_situations = raw.get("situations", {})
    if not isinstance(raw_situations, dict):
        raise ProfileError("situations", "a mapping of situation name to status, code and message")
    for situation_name, spec in raw_situations.items():
        situations[situation_name] = _build_situation(str(situation_name), spec, situations.get(situation_name))
    return ErrorProfile(
        name=name,
        envelope=envelope,
        situations=situations,
        key_prefix=base.key_prefix,
        service=base.service,
        keys_title=base.keys_title,
    )


def _build_situation(name: str, spec: object, default: Situation | None) -> Situation:
    key = f"situations.{name}"
    if default is None:
        raise ProfileError(key, f"a known situation ({', '.join(SITUATIONS)})")
    if not isinstance(spec, dict):
        raise ProfileError(key, "a mapping with status, code, message and details")
    unknown = set(spec) - {"status", "code", "message", "details"}
    if unknown:
        raise ProfileError(f"{key}.{sorted(unknown)[0]}", "no such key (known: status, code, message, details)")
    status = spec.get("status", default.status)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ProfileError(f"{key}.status", "an HTTP error status from 400 to 599")
    code = spec.get("code", default.code)
    if not isinstance(code, str) or not code:
        raise ProfileError(f"{key}.code", "a non-empty string")
    message = spec.get("message", default.message)
    params = SITUATIONS[name]
    allowed = ", ".join("{" + p + "}" for p in params) or "no placeholders"
    if not isinstance(message, str):
        raise ProfileError(f"{key}.message", f"a string (placeholders: {allowed})")
    try:
        bad = _fields(message) - set(params)
    except ValueError:
        bad = {"?"}
    if bad:
        raise ProfileError(f"{key}.message", f"a string whose only placeholders are {allowed}")
    details = spec.get("details", list(default.details))
    if not isinstance(details, list) or not all(isinstance(d, str) and d in params for d in details):
        raise ProfileError(f"{key}.details", f"a list of parameter names from: {', '.join(params) or 'none'}")
    return Situation(status=status, code=code, message=message, details=tuple(details))


def _mentions_placeholder(template: object) -> bool:
    if isinstance(template, str):
        return template in _PLACEHOLDERS
    if isinstance(template, dict):
        return any(_mentions_placeholder(v) for v in template.values())
    if isinstance(template, list):
        return any(_mentions_placeholder(v) for v in template)
    return False
