"""The admin API's typed models: what a request may carry, and what an answer holds.

FastAPI checks every request against these and writes the OpenAPI document from them, so the
document and the checks cannot disagree. Answers are checked against them too (``extra="forbid"``
on both sides): a document of ``manage/documents.py`` that grows or loses a field fails loudly
instead of leaving the OpenAPI document behind.

A refused value is answered in the words the document shows: "limit: a whole number from 1 to
200" is the field's name and its description (``Checked``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from gateway.admin.pages import MAX_PAGE, Position, decode_cursor
from gateway.manage.audit import AUDIT_ACTIONS
from gateway.manage.rules import MAX_DURATION, METADATA_MAX_BYTES, NAME_MAX, USER_ID_PATTERN
from gateway.units import parse_duration, parse_instant

__all__ = [
    "REFUSED",
    "NewPortalSession",
    "PortalSession",
    "Alive",
    "AuditEvent",
    "AuditPage",
    "AuditQuery",
    "Checked",
    "CreatedKey",
    "Credits",
    "CreditsChange",
    "DailyQuery",
    "Error",
    "ErrorCode",
    "ImportQuery",
    "ImportReport",
    "Key",
    "KeyDailyUsage",
    "KeyPage",
    "KeysQuery",
    "KeyUpdate",
    "NewKey",
    "NewUser",
    "NoQuery",
    "RateLimitsChange",
    "Ready",
    "RotatedKey",
    "Rotation",
    "SubscriptionChange",
    "Unavailable",
    "UsagePage",
    "UsageQuery",
    "User",
    "UserDailyUsage",
    "UserPage",
    "UsersQuery",
]

# The pydantic error type of a refusal worded here; errors.py answers its message as it stands.
REFUSED = "gateway_refused"


def refused(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(REFUSED, "{message}", {"message": message, "field": field})


# ------------------------------------------------------------------------------ requests


class Checked(BaseModel):
    """A request's body or query: unknown names are refused, and a refused value is answered with
    its field's description, so every field of a request model has one."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="wrap")
    @classmethod
    def _in_the_documents_words(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if any(error["type"] == REFUSED for error in exc.errors()):
                raise
            assert info.field_name is not None
            field = cls.model_fields[info.field_name]
            name = field.alias or info.field_name
            raise refused(name, f"{name}: {field.description}") from None


Subscription = Literal["active", "inactive"]
KeyStatus = Literal["active", "revoked", "expired"]
UserId = Annotated[StrictStr, Field(pattern=USER_ID_PATTERN.pattern)]
RateLimits = Annotated[list[StrictStr] | None, Field(min_length=1)]
_LIMITS = 'a list such as ["1000/minute", "100000/day"], or null for the default'


def _duration_schema(minimum: Literal["minimum", "exclusiveMinimum"]) -> dict[str, Any]:
    return {
        "oneOf": [
            {"type": "number", minimum: 0, "maximum": MAX_DURATION},
            {"type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,3})?(ms|s|m|h|d)?$"},
        ]
    }


# Seconds, from a number or a string such as "30d", read as the CLI reads them (units.parse_duration);
# the service checks the range (at most 100 years).
Lifetime = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_duration_schema("exclusiveMinimum"))]
Grace = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_duration_schema("minimum"))]
_DURATION = "a duration such as 30s, 500ms, 15m, 12h or 90d, or a number of seconds, up to 100 years"
_USER_ID = "1 to 255 printable ASCII characters without spaces"


class NewUser(Checked):
    id: UserId = Field(description=f"{_USER_ID} (the operator's own id, sent upstream as X-User-Id)")
    subscription: Subscription = Field("active", description="active or inactive")


class SubscriptionChange(Checked):
    """subscription, as the user's document names it; status, its first name, is still read
    (deprecated)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["subscription"]}, {"required": ["status"]}]})

    subscription: Subscription | SkipJsonSchema[None] = Field(None, description="active or inactive")
    status: Subscription | SkipJsonSchema[None] = Field(
        None,
        description="active or inactive (deprecated: the older name of subscription)",
        json_schema_extra={"deprecated": True},
    )

    @model_validator(mode="after")
    def _one_name(self) -> SubscriptionChange:
        if self.subscription is not None and self.status is not None:
            raise refused("status", "give subscription alone (status is its deprecated name)")
        if self.subscription is None and self.status is None:
            raise refused("subscription", "subscription is required")
        return self

    @property
    def value(self) -> Subscription:
        value = self.subscription or self.status
        assert value is not None  # checked above
        return value


class CreditsChange(Checked):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["add"]}, {"required": ["set"]}]})

    add: StrictInt | SkipJsonSchema[None] = Field(None, description="a whole number of credits (negative: taken off)")
    set: Annotated[StrictInt, Field(ge=0)] | SkipJsonSchema[None] = Field(
        None, description="the new balance, a whole number from 0"
    )

    @model_validator(mode="after")
    def _add_or_set(self) -> CreditsChange:
        if (self.add is None) == (self.set is None):
            raise refused("add", 'give "add" or "set" (a whole number)')
        return self


class RateLimitsChange(Checked):
    rate_limits: RateLimits = Field(description=_LIMITS)


class NewKey(Checked):
    user_id: UserId = Field(description=f"{_USER_ID}: the id of a user added before")
    name: Annotated[StrictStr, Field(max_length=NAME_MAX)] | None = Field(
        None, description=f"a label for people, at most {NAME_MAX} printable characters"
    )
    expires_in: Lifetime | None = Field(None, description=f"{_DURATION}: the key's lifetime (null: it never expires)")
    rate_limits: RateLimits = Field(None, description=_LIMITS)


def _instant(value: Any) -> Any:
    """An ISO 8601 time as Unix seconds (units.parse_instant, as the CLI reads it); null stays null."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("not a time")
    return parse_instant(value)


_INSTANT_SCHEMA = {"type": "string", "format": "date-time"}
Instant = Annotated[float, BeforeValidator(_instant), WithJsonSchema(_INSTANT_SCHEMA)]
_METADATA = (
    f"a JSON object of at most {METADATA_MAX_BYTES} bytes, the operator's own (never sent upstream); null clears it"
)


class KeyUpdate(Checked):
    """The fields given are changed; those left out stay as they are; null clears one."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Annotated[StrictStr, Field(max_length=NAME_MAX)] | None = Field(
        None, description=f"a label for people, at most {NAME_MAX} printable characters"
    )
    expires_at: Instant | None = Field(
        None,
        description="when the key stops, as 2027-01-01T00:00:00Z (at most 100 years ahead; a past time stops it now);"
        " null: it never expires",
    )
    metadata: dict[str, Any] | None = Field(None, description=_METADATA)


class KeyLookup(Checked):
    key: Annotated[StrictStr, Field(min_length=1, max_length=512)] = Field(
        description="a full key, as its holder sends it; never echoed, stored or logged"
    )


class Rotation(Checked):
    grace: Grace | None = Field(
        None, description=f"{_DURATION}: how long the old key keeps working (null or 0: it stops now)"
    )


class NoQuery(Checked):
    """An operation without query parameters: any given is refused."""


class PageQuery(Checked):
    limit: int = Field(50, ge=1, le=MAX_PAGE, description=f"a whole number from 1 to {MAX_PAGE}")
    cursor: (
        Annotated[Position, BeforeValidator(decode_cursor), WithJsonSchema({"type": "string"})] | SkipJsonSchema[None]
    ) = Field(None, description="the next_cursor of the page before, as this API gave it")


class KeysQuery(PageQuery):
    user_id: StrictStr | SkipJsonSchema[None] = Field(None, description="only this user's keys")
    status: KeyStatus | SkipJsonSchema[None] = Field(None, description="one of active, revoked, expired")


class UsersQuery(PageQuery):
    q: StrictStr | SkipJsonSchema[None] = Field(None, description="only users whose id starts with this")


class AuditQuery(Checked):
    limit: int = Field(50, ge=1, le=MAX_PAGE, description=f"a whole number from 1 to {MAX_PAGE}")
    cursor: Annotated[StrictStr, Field(pattern="^[0-9a-f]{24}$")] | SkipJsonSchema[None] = Field(
        None, description="the next_cursor of the page before, as this API gave it"
    )
    target: StrictStr | SkipJsonSchema[None] = Field(None, description="only events about this user or key id")
    actor: StrictStr | SkipJsonSchema[None] = Field(
        None, description="only events by this actor (an admin token's name, cli:<os user>)"
    )
    action: Literal[tuple(sorted(AUDIT_ACTIONS))] | SkipJsonSchema[None] = Field(  # type: ignore[valid-type]
        None, description=f"only events of this action: {', '.join(sorted(AUDIT_ACTIONS))}"
    )
    since: Instant | SkipJsonSchema[None] = Field(
        None, description="only events at or after this time, as 2026-12-01T00:00:00Z or 2026-12-01"
    )


class UsageQuery(Checked):
    user_id: StrictStr | SkipJsonSchema[None] = Field(None, description="only this user")


_DAY_SCHEMA = {"type": "string", "format": "date"}
# The days themselves are checked by the service (rules.check_day), the same for the CLI.
Day = Annotated[StrictStr, WithJsonSchema(_DAY_SCHEMA)]


class DailyQuery(Checked):
    from_: Day | SkipJsonSchema[None] = Field(
        None, alias="from", description="the first UTC day, 2026-12-01 (default: 29 days before today)"
    )
    to: Day | SkipJsonSchema[None] = Field(None, description="the last UTC day (default: today)")
    granularity: Literal["day"] = Field("day", description="day, the only one kept")


class ImportQuery(Checked):
    dry_run: bool = Field(False, description="true or false; true checks every line and reports, writing nothing")


# ------------------------------------------------------------------------------- answers


class Document(BaseModel):
    """An answer, as ``manage/documents.py`` writes it for the CLI and the API alike."""

    model_config = ConfigDict(extra="forbid")


# Times as documents.iso writes them, 2026-11-22T02:10:00Z.
Time = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
NullableTime = Annotated[str | None, WithJsonSchema({"type": ["string", "null"], "format": "date-time"})]
DayString = Annotated[str, WithJsonSchema(_DAY_SCHEMA)]


class User(Document):
    id: str
    subscription: Subscription
    created_at: Time
    updated_at: Time
    rate_limits: list[str] | None = Field(description="its own limits over all its keys; null: rate_limits.per_user")


class UserPage(Document):
    items: list[User]
    next_cursor: str | None = Field(description="the cursor of the next page; null on the last")


class Key(Document):
    """A stored key: never the key, never its hash."""

    id: str
    prefix: str
    name: str | None
    user_id: str
    status: KeyStatus
    created_at: Time
    expires_at: NullableTime
    last_used_at: NullableTime
    requests: int = Field(ge=0)
    rate_limited: int = Field(ge=0)
    credits: int = Field(ge=0)
    legacy: bool = Field(description="imported from an earlier system (gateway import): no checksum of ours")
    rate_limits: list[str] | None = Field(description="its own limits; null: rate_limits.default")
    replaced_by: str | None = Field(description="the key that replaced it (keys rotate); null until then")
    metadata: dict[str, Any] | None = Field(description="the operator's own notes on the key; never sent upstream")


class KeyPage(Document):
    items: list[Key]
    next_cursor: str | None = Field(description="the cursor of the next page; null on the last")


class CreatedKey(Document):
    """A new key: the one document that holds the full key, shown this once."""

    id: str
    key: str
    prefix: str
    user_id: str
    name: str | None
    created_at: Time
    expires_at: NullableTime
    rate_limits: list[str] | None


class RotatedKey(CreatedKey):
    replaces: str = Field(description="the old key's id")
    replaced_key_stops_at: NullableTime = Field(description="when the old key stops (now, or the grace period's end)")


class NewPortalSession(Checked):
    return_url: Annotated[StrictStr, Field(max_length=2048)] | None = Field(
        None, description="where the portal's link back goes: an http(s) URL on one of portal.return_url_hosts"
    )


class PortalSession(Document):
    url: str
    expires_at: Time


class Credits(Document):
    user_id: str
    balance: int


class UserUsage(Document):
    user_id: str
    requests: int
    rate_limited: int
    credits: int
    last_used_at: NullableTime
    legacy_keys: int = Field(description="keys of an earlier system (gateway import) not revoked")
    legacy_last_used_at: NullableTime


class UsagePage(Document):
    items: list[UserUsage]


class DayCounts(Document):
    requests: int
    rate_limited: int
    credits: int
    refused_credits: int


class DayUsage(Document):
    day: DayString
    requests: int
    rate_limited: int
    credits: int
    refused_credits: int


class KeyDailyUsage(Document):
    key_id: str
    granularity: Literal["day"]
    from_: DayString = Field(alias="from")
    to: DayString
    days: list[DayUsage] = Field(description="days with usage, oldest first (days without any are left out)")
    totals: DayCounts


class UserDailyUsage(Document):
    user_id: str
    granularity: Literal["day"]
    from_: DayString = Field(alias="from")
    to: DayString
    days: list[DayUsage] = Field(description="days with usage, oldest first (days without any are left out)")
    totals: DayCounts


class ImportCounts(Document):
    created: int = Field(ge=0)
    updated: int = Field(ge=0)
    unchanged: int = Field(ge=0)


class BadLine(Document):
    line: int
    message: str


class ImportReport(Document):
    dry_run: bool
    written: bool
    lines: int = Field(ge=0)
    users: ImportCounts
    keys: ImportCounts
    errors: list[BadLine] = Field(description="the first bad lines (20 at most)")
    error_count: int = Field(ge=0)
    warnings: list[str]


class AuditEvent(Document):
    """One change: when, who (an admin token's name, cli:<os user>, portal:<user id>) and how,
    what, and the fields it changed; never a key or its hash."""

    id: str
    at: Time
    actor: str
    via: Literal["api", "cli", "console", "portal", "unknown"]
    action: str = Field(description=", ".join(sorted(AUDIT_ACTIONS)))
    target_type: Literal["user", "key", "store"]
    target: str = Field(description="the user's or the key's id (import: import)")
    request_id: str | None = Field(description="the admin request's X-Request-Id, if made through a request")
    before: dict[str, Any] | None = Field(description="the fields it changed, before; null for a creation")
    after: dict[str, Any] | None = Field(description="the fields it changed, after")


class AuditPage(Document):
    items: list[AuditEvent]
    next_cursor: str | None = Field(description="the cursor of the next page; null on the last")


class Alive(Document):
    status: Literal["ok"]


class Ready(Document):
    status: Literal["ready"]


class Unavailable(Document):
    status: Literal["unavailable"]
    reason: str


ErrorCode = Literal[
    "invalid_json",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "validation_failed",
    "store_unavailable",
    "internal_error",
]


class ErrorDetail(Document):
    code: ErrorCode
    message: str
    field: str | SkipJsonSchema[None] = Field(None, description="the field or query parameter to blame, if one is")


class Error(Document):
    """The one envelope of every error the admin listener answers."""

    error: ErrorDetail
