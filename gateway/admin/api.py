"""The admin listener: the JSON API the fronted service's dashboard calls, health checks, metrics.

The routes, each a call to the service layer the CLI uses too (``manage/service.py``). What they
take and answer is declared in ``models.py``, from which FastAPI checks the requests and writes
the OpenAPI document (``openapi.py``); errors are answered in one envelope (``errors.py``), and
the token is checked before any of it (``token.py``).

The design notes: docs/internals.md, "gateway/admin/api.py"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Query
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from gateway.accounting.metrics import Metrics
from gateway.admin import models, openapi
from gateway.admin.acting import ActingAs
from gateway.admin.console.app import console_routes, open_console
from gateway.admin.errors import answers, handlers
from gateway.admin.health import store_problem
from gateway.admin.pages import Position, page
from gateway.admin.routing import HeadAsGet, JsonBodyRoute
from gateway.admin.token import API, OPENAPI_PATH, AdminToken
from gateway.config import GatewayConfig
from gateway.manage.documents import (
    audit_document,
    created_document,
    daily_usage_document,
    iso,
    key_document,
    usage_document,
    user_document,
)
from gateway.manage.portal import mint_link
from gateway.manage.service import ManagementService, open_service
from gateway.manage.transfer import decode_line, export_lines
from gateway.store import ApiKey, User

__all__ = ["create_admin_app"]

logger = logging.getLogger("gateway.error")

router = APIRouter(route_class=JsonBodyRoute)


def _service(request: Request) -> ManagementService:
    service: ManagementService = request.app.state.service  # opened in the lifespan
    return service


def _config(request: Request) -> GatewayConfig:
    config: GatewayConfig = request.app.state.config
    return config


def _no_query(query: Annotated[models.NoQuery, Query()]) -> None:
    """For the /admin/v1/ operations without query parameters: any one given is refused."""


Service = Annotated[ManagementService, Depends(_service)]
Config = Annotated[GatewayConfig, Depends(_config)]
NO_QUERY = [Depends(_no_query)]


def _position(item: User | ApiKey) -> Position:
    return item.created_at, item.id


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


# ------------------------------------------------------------------- document, health, metrics


@router.get(OPENAPI_PATH, include_in_schema=False)
async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)  # written once, by create_admin_app


@router.get(
    "/healthz",
    tags=["health"],
    summary="Whether the process is alive",
    operation_id="healthz",
    response_model=models.Alive,
)
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    summary="Whether the store answers (and the upstream, with health.check_upstream)",
    operation_id="readyz",
    response_model=models.Ready,
    responses={503: {"model": models.Unavailable, "description": "Not ready, with the reason"}},
)
async def readyz(service: Service, config: Config) -> Any:
    if (problem := await store_problem(service.store)) is not None:
        return _unavailable(problem)
    if config.health.check_upstream:
        url = urlsplit(config.upstream.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), timeout=2)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            return _unavailable(f"upstream {url.hostname}:{port}: {exc or type(exc).__name__}")
    return {"status": "ready"}


_ERROR = {"schema": {"$ref": "#/components/schemas/Error"}}


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse(models.Unavailable(status="unavailable", reason=reason).model_dump(), 503)


@router.get(
    "/metrics",
    tags=["metrics"],
    summary="Prometheus metrics, in its text format",
    operation_id="metrics",
    response_class=PlainTextResponse,
    # Given whole: FastAPI would document a model under the route's own media type, text/plain.
    responses={401: {"description": "The admin token is missing or wrong", "content": {"application/json": _ERROR}}},
)
async def metrics(request: Request) -> Response:
    shown: Metrics = request.app.state.metrics
    return Response(shown.render(), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------------------------ users


@router.post(
    f"{API}/users",
    tags=["users"],
    summary="Add a user",
    operation_id="addUser",
    status_code=201,
    response_model=models.User,
    responses=answers(400, 409),
    dependencies=NO_QUERY,
)
async def add_user(new: models.NewUser, service: Service) -> Any:
    return user_document(await service.add_user(new.id, new.subscription))


@router.get(
    f"{API}/users",
    tags=["users"],
    summary="List the users, a page at a time, oldest first",
    operation_id="listUsers",
    response_model=models.UserPage,
    responses=answers(),
)
async def list_users(query: Annotated[models.UsersQuery, Query()], service: Service) -> Any:
    found = [user for user in await service.list_users() if query.q is None or user.id.startswith(query.q)]
    shown, next_cursor = page(found, _position, query.cursor, query.limit)
    return {"items": [user_document(user) for user in shown], "next_cursor": next_cursor}


@router.get(
    f"{API}/users/{{user_id}}",
    tags=["users"],
    summary="A user",
    operation_id="getUser",
    response_model=models.User,
    responses=answers(404),
    dependencies=NO_QUERY,
)
async def get_user(user_id: str, service: Service) -> Any:
    return user_document(await service.get_user(user_id))


@router.delete(
    f"{API}/users/{{user_id}}",
    tags=["users"],
    summary="Revoke all of a user's keys at once and make it inactive",
    description="The user's record and usage stay (its id is the operator's own, and its usage history"
    " still answers); every key of it not revoked yet is revoked in one transaction, and its subscription"
    " is inactive, so no key of it works from the next request on, a key created later included."
    " Deleting it again changes nothing and answers 204 again.",
    operation_id="deleteUser",
    status_code=204,
    response_description="Its keys are revoked and it is inactive (also when it was already)",
    response_class=Response,
    responses=answers(404),
    dependencies=NO_QUERY,
)
async def delete_user(user_id: str, service: Service) -> Response:
    await service.retire_user(user_id)
    return Response(status_code=204)


@router.put(
    f"{API}/users/{{user_id}}/subscription",
    tags=["users"],
    summary="Make a user's subscription active or inactive (counts on its next request)",
    operation_id="setSubscription",
    response_model=models.User,
    responses=answers(400, 404),
    dependencies=NO_QUERY,
)
async def set_subscription(user_id: str, change: models.SubscriptionChange, service: Service) -> Any:
    return user_document(await service.set_subscription(user_id, change.value))


@router.put(
    f"{API}/users/{{user_id}}/rate-limits",
    tags=["users"],
    summary="Give a user its own limits over all its keys, or null for rate_limits.per_user",
    operation_id="setUserRateLimits",
    response_model=models.User,
    responses=answers(400, 404),
    dependencies=NO_QUERY,
)
async def set_user_rate_limits(user_id: str, change: models.RateLimitsChange, service: Service) -> Any:
    return user_document(await service.set_user_rate_limits(user_id, change.rate_limits))


@router.get(
    f"{API}/users/{{user_id}}/credits",
    tags=["users"],
    summary="A user's credit balance",
    operation_id="getCredits",
    response_model=models.Credits,
    responses=answers(404),
    dependencies=NO_QUERY,
)
async def get_credits(user_id: str, service: Service) -> Any:
    return {"user_id": user_id, "balance": await service.credits(user_id)}


@router.post(
    f"{API}/users/{{user_id}}/credits",
    tags=["users"],
    summary="Add to a user's credit balance, or set it (recorded)",
    operation_id="changeCredits",
    response_model=models.Credits,
    responses=answers(400, 404),
    dependencies=NO_QUERY,
)
async def change_credits(user_id: str, change: models.CreditsChange, service: Service) -> Any:
    return {"user_id": user_id, "balance": await service.credits(user_id, add=change.add, set_to=change.set)}


@router.post(
    f"{API}/users/{{user_id}}/portal-sessions",
    tags=["users"],
    summary="A one-time link that opens the self-service portal for this user (portal.link_ttl)",
    operation_id="createPortalSession",
    status_code=201,
    response_model=models.PortalSession,
    responses=answers(400, 404, 409),
    dependencies=NO_QUERY,
)
async def create_portal_session(user_id: str, new: models.NewPortalSession, service: Service, config: Config) -> Any:
    url, expires_at = await mint_link(service, config.portal, user_id, new.return_url)
    return {"url": url, "expires_at": iso(expires_at)}


# ------------------------------------------------------------------------------------- keys


@router.post(
    f"{API}/keys",
    tags=["keys"],
    summary="Create a key: the full key is in this answer, and never again",
    operation_id="createKey",
    status_code=201,
    response_model=models.CreatedKey,
    responses=answers(400, 404),
    dependencies=NO_QUERY,
)
async def create_key(new: models.NewKey, service: Service) -> Any:
    created = await service.create_key(
        new.user_id, name=new.name, expires_in=new.expires_in, rate_limits=new.rate_limits
    )
    return created_document(created)


@router.get(
    f"{API}/keys",
    tags=["keys"],
    summary="List the keys, a page at a time, oldest first",
    operation_id="listKeys",
    response_model=models.KeyPage,
    responses=answers(404),
)
async def list_keys(query: Annotated[models.KeysQuery, Query()], service: Service) -> Any:
    now = service.now()
    found = [key for key in await service.list_keys(query.user_id) if query.status in (None, key.status(now))]
    shown, next_cursor = page(found, _position, query.cursor, query.limit)
    return {"items": [key_document(key, now) for key in shown], "next_cursor": next_cursor}


@router.post(
    f"{API}/keys/lookup",
    tags=["keys"],
    summary="The key a full key is (find a leaked key's owner); the key is never echoed",
    operation_id="lookUpKey",
    response_model=models.Key,
    responses=answers(400, 404),
    dependencies=NO_QUERY,
)
async def look_up_key(lookup: models.KeyLookup, service: Service) -> Any:
    return key_document(await service.find_key(lookup.key), service.now())


@router.get(
    f"{API}/export",
    tags=["import"],
    summary="Every user and key (with its hash) and their usage, as JSON Lines (as gateway export writes)",
    operation_id="exportUsersAndKeys",
    response_class=StreamingResponse,
    responses=answers()
    | {200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}, "description": "JSON Lines"}},
    dependencies=NO_QUERY,
)
async def export(service: Service) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        async for line in export_lines(service.store):
            yield line.encode()  # each ends its line

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get(
    f"{API}/keys/{{key_id}}",
    tags=["keys"],
    summary="A key, with its usage and limits (never the key)",
    operation_id="getKey",
    response_model=models.Key,
    responses=answers(404),
    dependencies=NO_QUERY,
)
async def get_key(key_id: str, service: Service) -> Any:
    return key_document(await service.get_key(key_id), service.now())


@router.delete(
    f"{API}/keys/{{key_id}}",
    tags=["keys"],
    summary="Revoke a key: it fails from the next request on (204 also when it was revoked already)",
    operation_id="revokeKey",
    status_code=204,
    response_description="Revoked (also when it was already)",
    response_class=Response,
    responses=answers(404),
    dependencies=NO_QUERY,
)
async def revoke_key(key_id: str, service: Service) -> Response:
    await service.revoke_key(key_id)
    return Response(status_code=204)


@router.post(
    f"{API}/keys/{{key_id}}/rotate",
    tags=["keys"],
    summary="Replace a key with a new one, the old one stopping now or after a grace period",
    operation_id="rotateKey",
    status_code=201,
    response_model=models.RotatedKey,
    responses=answers(400, 404, 409),
    dependencies=NO_QUERY,
)
async def rotate_key(key_id: str, rotation: models.Rotation, service: Service) -> Any:
    created, old = await service.rotate_key(key_id, grace=rotation.grace)
    stops_at = old.revoked_at if old.revoked_at is not None else old.expires_at
    return created_document(created) | {"replaces": old.id, "replaced_key_stops_at": iso(stops_at)}


@router.patch(
    f"{API}/keys/{{key_id}}",
    tags=["keys"],
    summary="Change a key's name, expiry or metadata (the fields given; null clears one)",
    operation_id="updateKey",
    response_model=models.Key,
    responses=answers(400, 404),
    dependencies=NO_QUERY,
)
async def update_key(key_id: str, change: models.KeyUpdate, service: Service) -> Any:
    given = {name: getattr(change, name) for name in change.model_fields_set}
    return key_document(await service.update_key(key_id, **given), service.now())


@router.put(
    f"{API}/keys/{{key_id}}/rate-limits",
    tags=["keys"],
    summary="Give a key its own limits, or null for rate_limits.default",
    operation_id="setRateLimits",
    response_model=models.Key,
    responses=answers(400, 404),
    dependencies=NO_QUERY,
)
async def set_rate_limits(key_id: str, change: models.RateLimitsChange, service: Service) -> Any:
    return key_document(await service.set_rate_limits(key_id, change.rate_limits), service.now())


# ------------------------------------------------------------------------------------ audit


@router.get(
    f"{API}/audit",
    tags=["audit"],
    summary="Every change to users and keys, newest first: who, how, what, before and after",
    operation_id="listAuditEvents",
    response_model=models.AuditPage,
    responses=answers(400),
)
async def list_audit_events(query: Annotated[models.AuditQuery, Query()], service: Service) -> Any:
    events, next_cursor = await service.audit_events(
        target=query.target,
        actor=query.actor,
        action=query.action,
        since=query.since,
        cursor=query.cursor,
        limit=query.limit,
    )
    return {"items": [audit_document(event) for event in events], "next_cursor": next_cursor}


# ------------------------------------------------------------------------------------ usage


@router.get(
    f"{API}/usage",
    tags=["usage"],
    summary="Usage summed per user (as last written by the gateways)",
    operation_id="usage",
    response_model=models.UsagePage,
    responses=answers(404),
)
async def usage(query: Annotated[models.UsageQuery, Query()], service: Service) -> Any:
    return {"items": [usage_document(found) for found in await service.usage(query.user_id)]}


@router.get(
    f"{API}/keys/{{key_id}}/usage",
    tags=["usage"],
    summary="A key's usage per UTC day",
    operation_id="keyUsageByDay",
    response_model=models.KeyDailyUsage,
    responses=answers(404),
)
async def key_usage(key_id: str, query: Annotated[models.DailyQuery, Query()], service: Service) -> Any:
    first, last, days = await service.daily_usage(key_id=key_id, since=query.from_, until=query.to)
    return daily_usage_document({"key_id": key_id}, first, last, days)


@router.get(
    f"{API}/users/{{user_id}}/usage",
    tags=["usage"],
    summary="A user's usage per UTC day, all its keys together",
    operation_id="userUsageByDay",
    response_model=models.UserDailyUsage,
    responses=answers(404),
)
async def user_usage(user_id: str, query: Annotated[models.DailyQuery, Query()], service: Service) -> Any:
    first, last, days = await service.daily_usage(user_id=user_id, since=query.from_, until=query.to)
    return daily_usage_document({"user_id": user_id}, first, last, days)


# ----------------------------------------------------------------------------------- import


@router.post(
    f"{API}/import",
    tags=["import"],
    summary="Import users and key hashes from JSON Lines, all of them or nothing",
    description="The lines gateway import reads, read as they arrive. A report either way: 200 when it was"
    " written (or would be, with dry_run), 422 with the bad lines when nothing was written.",
    operation_id="importUsersAndKeys",
    response_model=models.ImportReport,
    responses=answers()
    | {422: {"model": models.ImportReport | models.Error, "description": "Bad lines (a report), or a bad query"}},
    # FastAPI reads no body here (the lines are streamed): the document is told what it is.
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "JSON Lines, one user or key a line; read as such whatever the Content-Type",
            # text/plain too: what a client without a JSON Lines type sends (schemathesis among them).
            "content": {
                media_type: {"schema": {"type": "string"}} for media_type in ("application/x-ndjson", "text/plain")
            },
        }
    },
)
async def import_(
    request: Request, query: Annotated[models.ImportQuery, Query()], service: Service, config: Config
) -> Any:
    prefixes = (config.keys.prefix, *config.keys.legacy_prefixes)
    report = await service.import_lines(_body_lines(request), dry_run=query.dry_run, prefixes=prefixes)
    checked = models.ImportReport.model_validate(report.document())
    return JSONResponse(checked.model_dump(), 422 if report.error_count else 200)


def create_admin_app(config: GatewayConfig, metrics: Metrics) -> AdminToken:
    """The admin ASGI app, showing ``metrics``; ``config`` must have an admin token."""
    assert config.admin_tokens(), "the admin listener is on only with a token"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_service(config) as service, open_console(config, metrics, service) as console:
            app.state.service = service
            app.state.console = console
            yield

    app = FastAPI(
        # /admin/v1/users/ is a 404 in the envelope, not a redirect built from the client's Host.
        redirect_slashes=False,
        # The document is served by openapi_json, written once; no /docs or /redoc pages, which
        # would load their scripts from another host.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers=handlers(router.routes),
        # The gateway has its own metrics and log. FastAPI's telemetry would record requests'
        # inputs, and an operator's FASTAPI_OTEL_AUTO_CONFIGURE would start exporting them.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.config = config
    app.state.metrics = metrics
    app.include_router(router)
    app.router.routes.extend(console_routes())
    app.state.openapi = openapi.document(app, public_metrics=config.metrics.public)
    acting = ActingAs(HeadAsGet(app), config.keys.every_prefix)
    return AdminToken(acting, config.admin_tokens(), metrics, public_metrics=config.metrics.public)
