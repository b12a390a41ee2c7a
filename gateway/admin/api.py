"""The admin listener: the JSON API the fronted service's dashboard calls, and health checks.

The design notes: docs/internals.md, "gateway/admin/api.py"."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.accounting.metrics import Metrics
from gateway.admin.openapi import OPENAPI
from gateway.config import GatewayConfig
from gateway.manage.documents import (
    created_document,
    daily_usage_document,
    iso,
    key_document,
    usage_document,
    user_document,
)
from gateway.manage.rules import InvalidField
from gateway.manage.service import AlreadyExists, ChangeNotAnnounced, ManagementService, NotFound, open_service
from gateway.manage.transfer import decode_line
from gateway.store.base import is_store_failure
from gateway.types import Receive, Scope, Send
from gateway.units import parse_duration

__all__ = ["create_admin_app"]

API = "/admin/v1"
OPENAPI_PATH = f"{API}/openapi.json"
MAX_PAGE = 200
KEY_STATUSES = ("active", "revoked", "expired")


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status)


class AdminToken:
    """Requires the admin token on every ``/admin/v1/`` path (pure ASGI, constant-time compare)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        token: str,
        metrics: Metrics,
        *,
        public_metrics: bool,
    ) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics
        self._public_metrics = public_metrics

    def _needs_token(self, path: str) -> bool:
        if path == "/metrics":
            return not self._public_metrics
        return path.startswith(API + "/") and path != OPENAPI_PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._needs_token(scope["path"]):
            given = [value for name, value in scope["headers"] if name == b"authorization"]
            # compare_digest on every request, whatever was sent: no early exit to time.
            ok = hmac.compare_digest(given[0] if len(given) == 1 else b"", self._expected) and len(given) == 1
            if not ok:
                self._metrics.admin_auth_failures.inc()
                response = error(401, "unauthorized", "send the admin token as 'Authorization: Bearer <token>'")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _json_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested too deep for the parser
        raise BadRequest(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "invalid_json", "the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(422, "validation_failed", f"unknown field {unknown[0]!r}", unknown[0])
    return body


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(422, "validation_failed", f"{name} is required", name)
        return None
    if not isinstance(value, str):
        raise BadRequest(422, "validation_failed", f"{name} must be a string", name)
    return value


def _duration(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise BadRequest(422, "validation_failed", f"{name}: expected {exc}", name) from None


def _limits(body: dict[str, Any]) -> list[str] | None:
    limits = body.get("rate_limits")
    if limits is not None and (not isinstance(limits, list) or not all(isinstance(x, str) for x in limits)):
        raise BadRequest(
            422, "validation_failed", 'rate_limits: a list such as ["1000/minute"], or null', "rate_limits"
        )
    return limits


async def _body_lines(request: Request) -> AsyncIterator[str]:
    """The body's lines as they arrive: an import is never held whole."""
    pending = b""
    async for chunk in request.stream():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield decode_line(line)
    if pending:
        yield decode_line(pending)


def _encode_cursor(created_at: float, key_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, key_id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, key_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(created_at), str(key_id)
    except (ValueError, TypeError):
        raise BadRequest(422, "validation_failed", "cursor is not one this API gave", "cursor") from None


class AdminApi:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.service: ManagementService | None = None

    @property
    def keys(self) -> ManagementService:
        assert self.service is not None, "opened in the lifespan"
        return self.service

    # ---------------------------------------------------------------------- health

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            await asyncio.wait_for(self.keys.store.check(), timeout=2)
        except Exception as exc:  # whatever the reason, not ready
            return JSONResponse({"status": "unavailable", "reason": f"store: {exc or type(exc).__name__}"}, 503)
        if self.config.health.check_upstream:
            url = urlsplit(self.config.upstream.url)
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), timeout=2)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            except (OSError, TimeoutError) as exc:
                reason = f"upstream {url.hostname}:{port}: {exc or type(exc).__name__}"
                return JSONResponse({"status": "unavailable", "reason": reason}, 503)
        return JSONResponse({"status": "ready"})

    # ---------------------------------------------------------------------- users

    async def add_user(self, request: Request) -> Response:
        body = await _json_object(request, {"id", "subscription"})
        user_id = _string(body, "id", required=True)
        assert user_id is not None
        user = await self.keys.add_user(user_id, _string(body, "subscription") or "active")
        return JSONResponse(user_document(user), 201)

    async def get_user(self, request: Request) -> Response:
        return JSONResponse(user_document(await self.keys.get_user(request.path_params["user_id"])))

    async def set_subscription(self, request: Request) -> Response:
        body = await _json_object(request, {"status"})
        status = _string(body, "status", required=True)
        assert status is not None
        try:
            user = await self.keys.set_subscription(request.path_params["user_id"], status)
        except InvalidField as exc:
            raise BadRequest(422, "validation_failed", str(exc), "status") from None
        return JSONResponse(user_document(user))

    async def user_credits(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        add = set_to = None
        if request.method == "POST":
            body = await _json_object(request, {"add", "set"})
            add, set_to = body.get("add"), body.get("set")
            if (add is None) == (set_to is None):
                raise BadRequest(422, "validation_failed", 'give "add" or "set" (a whole number)', "add")
        balance = await self.keys.credits(user_id, add=add, set_to=set_to)
        return JSONResponse({"user_id": user_id, "balance": balance})

    async def set_user_rate_limits(self, request: Request) -> Response:
        body = await _json_object(request, {"rate_limits"})
        user = await self.keys.set_user_rate_limits(request.path_params["user_id"], _limits(body))
        return JSONResponse(user_document(user))

    # ---------------------------------------------------------------------- keys

    async def create_key(self, request: Request) -> Response:
        body = await _json_object(request, {"user_id", "name", "expires_in", "rate_limits"})
        user_id = _string(body, "user_id", required=True)
        assert user_id is not None
        created = await self.keys.create_key(
            user_id, name=_string(body, "name"), expires_in=_duration(body, "expires_in"), rate_limits=_limits(body)
        )
        return JSONResponse(created_document(created), 201)

    async def list_keys(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status")
        if status is not None and status not in KEY_STATUSES:
            raise BadRequest(422, "validation_failed", f"status: one of {', '.join(KEY_STATUSES)}", "status")
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(422, "validation_failed", f"limit: a whole number from 1 to {MAX_PAGE}", "limit")
        after = _decode_cursor(query["cursor"]) if query.get("cursor") else None
        now = self.keys.now()
        found = [
            key
            for key in await self.keys.list_keys(query.get("user_id"))
            if (status is None or key.status(now) == status) and (after is None or (key.created_at, key.id) > after)
        ]
        page = found[:limit]
        next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if len(found) > limit else None
        return JSONResponse({"items": [key_document(key, now) for key in page], "next_cursor": next_cursor})

    async def get_key(self, request: Request) -> Response:
        key = await self.keys.get_key(request.path_params["key_id"])
        return JSONResponse(key_document(key, self.keys.now()))

    async def revoke_key(self, request: Request) -> Response:
        await self.keys.revoke_key(request.path_params["key_id"])
        return Response(status_code=204)

    async def rotate_key(self, request: Request) -> Response:
        body = await _json_object(request, {"grace"})
        created, old = await self.keys.rotate_key(request.path_params["key_id"], grace=_duration(body, "grace"))
        stops_at = old.revoked_at if old.revoked_at is not None else old.expires_at
        document = created_document(created) | {"replaces": old.id, "replaced_key_stops_at": iso(stops_at)}
        return JSONResponse(document, 201)

    async def set_rate_limits(self, request: Request) -> Response:
        body = await _json_object(request, {"rate_limits"})
        key = await self.keys.set_rate_limits(request.path_params["key_id"], _limits(body))
        return JSONResponse(key_document(key, self.keys.now()))

    async def import_(self, request: Request) -> Response:
        dry_run = request.query_params.get("dry_run") == "true"
        prefixes = (self.config.keys.prefix, *self.config.keys.legacy_prefixes)
        report = await self.keys.import_lines(_body_lines(request), dry_run=dry_run, prefixes=prefixes)
        return JSONResponse(report.document(), 422 if report.error_count else 200)

    async def key_usage(self, request: Request) -> Response:
        return await self._daily_usage(request, {"key_id": request.path_params["key_id"]})

    async def user_usage(self, request: Request) -> Response:
        return await self._daily_usage(request, {"user_id": request.path_params["user_id"]})

    async def _daily_usage(self, request: Request, owner: dict[str, str]) -> Response:
        query = request.query_params
        if query.get("granularity", "day") != "day":
            raise BadRequest(422, "validation_failed", "granularity: only day is kept", "granularity")
        first, last, days = await self.keys.daily_usage(
            key_id=owner.get("key_id"), user_id=owner.get("user_id"), since=query.get("from"), until=query.get("to")
        )
        return JSONResponse(daily_usage_document(owner, first, last, days))

    async def usage(self, request: Request) -> Response:
        found = await self.keys.usage(request.query_params.get("user_id"))
        return JSONResponse({"items": [usage_document(u) for u in found]})


async def _service_errors(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BadRequest):
        return error(exc.status, exc.code, exc.message, exc.field)
    if isinstance(exc, NotFound):
        return error(404, "not_found", str(exc))
    if isinstance(exc, AlreadyExists):
        return error(409, "conflict", str(exc))
    if isinstance(exc, InvalidField):
        return error(422, "validation_failed", str(exc), exc.field)
    raise exc


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Any other failure, in the envelope: 503 when the store failed (the write did not happen),
    500 otherwise. Starlette still raises it afterwards, so uvicorn logs the traceback."""
    if isinstance(exc, ChangeNotAnnounced):
        response = error(
            503,
            "store_unavailable",
            "The change was made, but Redis could not tell every gateway: they may use cached copies"
            " for up to cache.ttl_seconds. Repeat it once Redis answers.",
        )
        response.headers["Retry-After"] = "5"
        return response
    if is_store_failure(exc):
        response = error(503, "store_unavailable", "The key store is unavailable; nothing was changed. Retry later.")
        response.headers["Retry-After"] = "5"
        return response
    return error(500, "internal_error", "Internal error; see the gateway's log")


def create_admin_app(config: GatewayConfig, metrics: Metrics) -> AdminToken:
    """The admin ASGI app, showing ``metrics``; ``config.admin_token`` must be set."""
    assert config.admin_token is not None
    api = AdminApi(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_service(config) as service:
            api.service = service
            yield

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route(f"{API}/openapi.json", openapi),
        Route("/metrics", metrics_text),
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route(f"{API}/users", api.add_user, methods=["POST"]),
        Route(f"{API}/users/{{user_id}}", api.get_user, methods=["GET"]),
        Route(f"{API}/users/{{user_id}}/subscription", api.set_subscription, methods=["PUT"]),
        Route(f"{API}/users/{{user_id}}/rate-limits", api.set_user_rate_limits, methods=["PUT"]),
        Route(f"{API}/users/{{user_id}}/credits", api.user_credits, methods=["GET", "POST"]),
        Route(f"{API}/keys", api.create_key, methods=["POST"]),
        Route(f"{API}/keys", api.list_keys, methods=["GET"]),
        Route(f"{API}/keys/{{key_id}}", api.get_key, methods=["GET"]),
        Route(f"{API}/keys/{{key_id}}", api.revoke_key, methods=["DELETE"]),
        Route(f"{API}/keys/{{key_id}}/rotate", api.rotate_key, methods=["POST"]),
        Route(f"{API}/keys/{{key_id}}/rate-limits", api.set_rate_limits, methods=["PUT"]),
        Route(f"{API}/usage", api.usage, methods=["GET"]),
        Route(f"{API}/keys/{{key_id}}/usage", api.key_usage, methods=["GET"]),
        Route(f"{API}/users/{{user_id}}/usage", api.user_usage, methods=["GET"]),
        Route(f"{API}/import", api.import_, methods=["POST"]),
    ]
    handlers: dict[Any, Any] = {exc: _service_errors for exc in (BadRequest, NotFound, AlreadyExists, InvalidField)}
    handlers[Exception] = _unexpected
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    return AdminToken(app, config.admin_token, metrics, public_metrics=config.metrics.public)
