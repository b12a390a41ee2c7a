"""The admin API's OpenAPI 3.1 document, served at ``/admin/v1/openapi.json`` without the token.

Written out by hand, next to the routes in ``api.py``; CI checks the two against each other with
schemathesis (tests/test_admin_openapi.py), every operation and bad inputs too.
"""

from __future__ import annotations

from typing import Any

from gateway.manage.documents import KEY_FIELDS, USAGE_FIELDS

__all__ = ["OPENAPI"]

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_USER_ID = {"type": "string", "pattern": "^[!-~]{1,255}$"}
_DURATION = {
    "description": 'A duration: seconds, or a string such as "30d", "12h", "15m", "30s", "500ms".',
    "oneOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": 3153600000},
        {"type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,3})?(ms|s|m|h|d)?$"},
    ],
}
_LIMITS = {
    "description": 'Rate limits such as ["1000/minute", "100000/day"] (limits notation); null: the default.',
    "type": ["array", "null"],
    "items": {"type": "string"},
    "minItems": 1,
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "The body is not valid JSON",
        401: "The admin token is missing or wrong",
        404: "No such user or key",
        409: "It exists already (a user), or was rotated already (a key: the message names its replacement)",
        422: "A value is not acceptable",
        503: "The key store is unavailable; nothing was changed (Retry-After)",
    }
    return {str(status): _json(_ref("Error"), text[status]) for status in (*statuses, 503)}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_PATH_USER = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
_DAY = {"type": "string", "format": "date", "description": "a UTC day, YYYY-MM-DD"}
_DAILY_QUERY = [
    {"name": "from", "in": "query", "schema": _DAY, "description": "first day (default: 29 days before today)"},
    {"name": "to", "in": "query", "schema": _DAY, "description": "last day (default: today, UTC)"},
    {"name": "granularity", "in": "query", "schema": {"enum": ["day"]}},
]
_DAY_COUNTS = {name: {"type": "integer"} for name in ("requests", "rate_limited", "credits", "refused_credits")}
_PATH_KEY = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "API key gateway: admin API", "version": "1"},
    "security": [{"adminToken": []}],
    "paths": {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "The process is alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "The store answers (and the upstream, if checked)"),
                    "503": _json(_ref("Health"), "Not ready, with the reason"),
                },
            }
        },
        "/admin/v1/users": {
            "post": {
                "operationId": "addUser",
                "requestBody": _body(_ref("NewUser")),
                "responses": {"201": _json(_ref("User"), "Added"), **_errors(400, 401, 409, 422)},
            }
        },
        "/admin/v1/users/{user_id}": {
            "get": {
                "operationId": "getUser",
                "parameters": [_PATH_USER],
                "responses": {"200": _json(_ref("User"), "The user"), **_errors(401, 404)},
            }
        },
        "/admin/v1/users/{user_id}/subscription": {
            "put": {
                "operationId": "setSubscription",
                "parameters": [_PATH_USER],
                "requestBody": _body(_ref("SubscriptionChange")),
                "responses": {"200": _json(_ref("User"), "Changed"), **_errors(400, 401, 404, 422)},
            }
        },
        "/admin/v1/users/{user_id}/rate-limits": {
            "put": {
                "operationId": "setUserRateLimits",
                "parameters": [_PATH_USER],
                "requestBody": _body(_ref("RateLimitsChange")),
                "responses": {"200": _json(_ref("User"), "Changed"), **_errors(400, 401, 404, 422)},
            }
        },
        "/admin/v1/users/{user_id}/credits": {
            "get": {
                "operationId": "getCredits",
                "parameters": [_PATH_USER],
                "responses": {"200": _json(_ref("Credits"), "The user's credit balance"), **_errors(401, 404)},
            },
            "post": {
                "operationId": "changeCredits",
                "parameters": [_PATH_USER],
                "requestBody": _body(_ref("CreditsChange")),
                "responses": {"200": _json(_ref("Credits"), "Changed (recorded)"), **_errors(400, 401, 404, 422)},
            },
        },
        "/admin/v1/keys": {
            "post": {
                "operationId": "createKey",
                "requestBody": _body(_ref("NewKey")),
                "responses": {
                    "201": _json(_ref("CreatedKey"), "Created: the full key, shown this once"),
                    **_errors(400, 401, 404, 422),
                },
            },
            "get": {
                "operationId": "listKeys",
                "parameters": [
                    {"name": "user_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "schema": {"enum": ["active", "revoked", "expired"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_ref("KeyPage"), "A page of keys"), **_errors(401, 404, 422)},
            },
        },
        "/admin/v1/keys/{key_id}": {
            "get": {
                "operationId": "getKey",
                "parameters": [_PATH_KEY],
                "responses": {"200": _json(_ref("Key"), "The key, with its usage"), **_errors(401, 404)},
            },
            "delete": {
                "operationId": "revokeKey",
                "parameters": [_PATH_KEY],
                "responses": {"204": {"description": "Revoked (also when it already was)"}, **_errors(401, 404)},
            },
        },
        "/admin/v1/keys/{key_id}/rotate": {
            "post": {
                "operationId": "rotateKey",
                "parameters": [_PATH_KEY],
                "requestBody": _body(_ref("Rotation")),
                "responses": {
                    "201": _json(_ref("RotatedKey"), "The new key, shown this once"),
                    **_errors(400, 401, 404, 409, 422),
                },
            }
        },
        "/admin/v1/keys/{key_id}/rate-limits": {
            "put": {
                "operationId": "setRateLimits",
                "parameters": [_PATH_KEY],
                "requestBody": _body(_ref("RateLimitsChange")),
                "responses": {"200": _json(_ref("Key"), "Changed"), **_errors(400, 401, 404, 422)},
            }
        },
        "/admin/v1/usage": {
            "get": {
                "operationId": "usage",
                "parameters": [{"name": "user_id", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("UsagePage"), "Usage summed per user"), **_errors(401, 404)},
            }
        },
        "/admin/v1/keys/{key_id}/usage": {
            "get": {
                "operationId": "keyUsageByDay",
                "parameters": [_PATH_KEY, *_DAILY_QUERY],
                "responses": {
                    "200": _json(_ref("DailyUsage"), "The key's usage per UTC day"),
                    **_errors(401, 404, 422),
                },
            }
        },
        "/admin/v1/users/{user_id}/usage": {
            "get": {
                "operationId": "userUsageByDay",
                "parameters": [_PATH_USER, *_DAILY_QUERY],
                "responses": {
                    "200": _json(_ref("DailyUsage"), "The user's usage per UTC day, all its keys together"),
                    **_errors(401, 404, 422),
                },
            }
        },
        "/admin/v1/import": {
            "post": {
                "operationId": "importUsersAndKeys",
                "description": "Users and key hashes as JSON Lines, as gateway import reads them: all of them"
                " or nothing. A report either way: 200 when it was written (or would be, with dry_run),"
                " 422 with each bad line when nothing was written.",
                "parameters": [{"name": "dry_run", "in": "query", "schema": {"enum": ["true", "false"]}}],
                "requestBody": {
                    "required": True,
                    "description": "JSON Lines; any Content-Type is read so (application/x-ndjson, text/plain)",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "200": _json(_ref("ImportReport"), "Imported (or checked, with dry_run)"),
                    "422": _json(_ref("ImportReport"), "Bad lines: nothing was written"),
                    **_errors(401),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "ImportReport": {
                "type": "object",
                "required": ["dry_run", "written", "lines", "users", "keys", "errors", "error_count", "warnings"],
                "properties": {
                    "dry_run": {"type": "boolean"},
                    "written": {"type": "boolean"},
                    "lines": {"type": "integer", "minimum": 0},
                    "users": _ref("ImportCounts"),
                    "keys": _ref("ImportCounts"),
                    "errors": {
                        "description": "The first 20 bad lines",
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["line", "message"],
                            "properties": {"line": {"type": "integer"}, "message": {"type": "string"}},
                        },
                    },
                    "error_count": {"type": "integer", "minimum": 0},
                    "warnings": {"type": "array", "items": {"type": "string"}},
                },
            },
            "ImportCounts": {
                "type": "object",
                "required": ["created", "updated", "unchanged"],
                "properties": {
                    "created": {"type": "integer", "minimum": 0},
                    "updated": {"type": "integer", "minimum": 0},
                    "unchanged": {"type": "integer", "minimum": 0},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                        },
                    }
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"enum": ["ok", "ready", "unavailable"]}, "reason": {"type": "string"}},
            },
            "NewUser": {
                "type": "object",
                "required": ["id"],
                "additionalProperties": False,
                "properties": {"id": _USER_ID, "subscription": {"enum": ["active", "inactive"]}},
            },
            "User": {
                "type": "object",
                "required": ["id", "subscription", "created_at", "updated_at", "rate_limits"],
                "properties": {
                    "id": {"type": "string"},
                    "subscription": {"enum": ["active", "inactive"]},
                    "created_at": _TIME,
                    "updated_at": _TIME,
                    "rate_limits": {"type": ["array", "null"], "items": {"type": "string"}},
                },
            },
            "SubscriptionChange": {
                "type": "object",
                "required": ["status"],
                "additionalProperties": False,
                "properties": {"status": {"enum": ["active", "inactive"]}},
            },
            "NewKey": {
                "type": "object",
                "required": ["user_id"],
                "additionalProperties": False,
                "properties": {
                    "user_id": _USER_ID,
                    "name": {"type": ["string", "null"], "maxLength": 200},
                    "expires_in": _DURATION,
                    "rate_limits": _LIMITS,
                },
            },
            "Rotation": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"grace": _DURATION},
            },
            "RateLimitsChange": {
                "type": "object",
                "required": ["rate_limits"],
                "additionalProperties": False,
                "properties": {"rate_limits": _LIMITS},
            },
            "CreatedKey": {
                "type": "object",
                "required": ["id", "key", "prefix", "user_id", "name", "created_at", "expires_at", "rate_limits"],
                "properties": {
                    "id": {"type": "string"},
                    "key": {"type": "string"},
                    "prefix": {"type": "string"},
                    "user_id": {"type": "string"},
                    "name": {"type": ["string", "null"]},
                    "created_at": _TIME,
                    "expires_at": _NULLABLE_TIME,
                    "rate_limits": {"type": ["array", "null"], "items": {"type": "string"}},
                },
            },
            "RotatedKey": {
                "allOf": [
                    _ref("CreatedKey"),
                    {
                        "type": "object",
                        "required": ["replaces", "replaced_key_stops_at"],
                        "properties": {"replaces": {"type": "string"}, "replaced_key_stops_at": _NULLABLE_TIME},
                    },
                ]
            },
            "Key": {
                "type": "object",
                "required": list(KEY_FIELDS),
                "properties": {
                    "id": {"type": "string"},
                    "prefix": {"type": "string"},
                    "name": {"type": ["string", "null"]},
                    "user_id": {"type": "string"},
                    "status": {"enum": ["active", "revoked", "expired"]},
                    "created_at": _TIME,
                    "expires_at": _NULLABLE_TIME,
                    "last_used_at": _NULLABLE_TIME,
                    "requests": {"type": "integer", "minimum": 0},
                    "rate_limited": {"type": "integer", "minimum": 0},
                    "credits": {"type": "integer", "minimum": 0},
                    "legacy": {
                        "type": "boolean",
                        "description": "Imported from an earlier system (gateway import): no checksum of ours.",
                    },
                    "rate_limits": {"type": ["array", "null"], "items": {"type": "string"}},
                    "replaced_by": {
                        "type": ["string", "null"],
                        "description": "The id of the key that replaced this one (keys rotate); null until then.",
                    },
                },
            },
            "KeyPage": {
                "type": "object",
                "required": ["items", "next_cursor"],
                "properties": {
                    "items": {"type": "array", "items": _ref("Key")},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "Credits": {
                "type": "object",
                "required": ["user_id", "balance"],
                "properties": {"user_id": {"type": "string"}, "balance": {"type": "integer"}},
            },
            "CreditsChange": {
                "type": "object",
                "additionalProperties": False,
                "description": "either add (may be negative) or set (at least 0)",
                "properties": {"add": {"type": "integer"}, "set": {"type": "integer", "minimum": 0}},
                "oneOf": [{"required": ["add"]}, {"required": ["set"]}],
            },
            "DailyUsage": {
                "type": "object",
                "required": ["granularity", "from", "to", "days", "totals"],
                "properties": {
                    "key_id": {"type": "string"},
                    "user_id": {"type": "string"},
                    "granularity": {"enum": ["day"]},
                    "from": _DAY,
                    "to": _DAY,
                    "days": {
                        "description": "days with usage, oldest first (days without any are left out)",
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["day", *_DAY_COUNTS],
                            "properties": {"day": _DAY, **_DAY_COUNTS},
                        },
                    },
                    "totals": {"type": "object", "required": list(_DAY_COUNTS), "properties": _DAY_COUNTS},
                },
            },
            "UsagePage": {
                "type": "object",
                "required": ["items"],
                "properties": {
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": list(USAGE_FIELDS),
                            "properties": {
                                "user_id": {"type": "string"},
                                "requests": {"type": "integer"},
                                "rate_limited": {"type": "integer"},
                                "credits": {"type": "integer"},
                                "last_used_at": _NULLABLE_TIME,
                                "legacy_keys": {
                                    "description": "Keys of an earlier system (gateway import) not revoked",
                                    "type": "integer",
                                },
                                "legacy_last_used_at": _NULLABLE_TIME,
                            },
                        },
                    }
                },
            },
        },
    },
}
