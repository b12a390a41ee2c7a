"""The admin API's one error envelope, ``{"error": {"code", "message", "field"?}}``, for every
refusal, whoever raised it; FastAPI's and pydantic's own formats never reach a client.

    status  code                raised by
    400     invalid_json        a body that is not JSON, or not a JSON object
    401     unauthorized        token.AdminToken, before the app runs
    404     not_found           service.NotFound; a path no route has
    405     method_not_allowed  a path's routes, asked with another method (Allow: the ones they take)
    409     conflict            service.AlreadyExists (and AlreadyReplaced); manage.portal.PortalOff, PortalClosed
    413     payload_too_large   a JSON body past routing.MAX_JSON_BODY (1 MiB)
    422     validation_failed   a model's check (models.Checked), rules.InvalidField; with field
    503     store_unavailable   a store failure, service.ChangeNotAnnounced; Retry-After: 5
    500     internal_error      anything else, logged with its traceback
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from gateway.admin.models import REFUSED, Error, ErrorCode, ErrorDetail
from gateway.admin.routing import TOO_LARGE, allowed_methods
from gateway.manage.portal import PortalClosed, PortalOff
from gateway.manage.rules import InvalidField
from gateway.manage.service import AlreadyExists, ChangeNotAnnounced, NotFound
from gateway.store.base import is_store_failure

__all__ = ["answers", "envelope", "handlers"]

RETRY_AFTER = "5"

Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]

_MEANINGS = {
    400: "The body is not JSON, or not a JSON object",
    401: "The admin token is missing or wrong",
    404: "No such user or key",
    409: "It exists already (a user), or was rotated already (a key: the message names its replacement);"
    " a portal session while the portal is off (portal.port), or for an inactive user",
    422: "A value or a name is not acceptable: field names it",
    503: "The key store (or Redis) is unavailable: the message says whether the change was made",
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an /admin/v1/ operation documents: ``statuses``, and always 401 (the
    token), 422 (a query parameter it does not take) and 503 (the store)."""
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": Error, "description": _MEANINGS[status]} for status in sorted({401, 422, *statuses, 503})
    }
    documented[503]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return documented


def envelope(
    status: int, code: ErrorCode, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    error = Error(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(error.model_dump(exclude_none=True), status, headers)


async def _not_found(request: Request, exc: NotFound) -> Response:
    return envelope(404, "not_found", str(exc))


async def _conflict(request: Request, exc: AlreadyExists) -> Response:
    return envelope(409, "conflict", str(exc))


async def _portal_off(request: Request, exc: PortalOff | PortalClosed) -> Response:
    return envelope(409, "conflict", str(exc))


async def _invalid_field(request: Request, exc: InvalidField) -> Response:
    return envelope(422, "validation_failed", str(exc), exc.field)


def _http_errors(routes: Sequence[BaseRoute]) -> Handler:
    async def http_error(request: Request, exc: HTTPException) -> Response:
        """What the router raises itself: no route for the path (404) or the method (405); and
        FastAPI for a body it cannot decode (400)."""
        if exc.status_code == 404:
            return envelope(404, "not_found", "no such path: see /admin/v1/openapi.json")
        if exc.status_code == 405:
            allow = ", ".join(allowed_methods(routes, request.scope))
            message = f"{request.method} is not allowed here: {allow}"
            return envelope(405, "method_not_allowed", message, headers={"Allow": allow})
        if exc.status_code == 400:
            return envelope(400, "invalid_json", "the request body is not valid JSON")
        if exc.status_code == 413:
            return envelope(413, "payload_too_large", TOO_LARGE)
        return envelope(500, "internal_error", f"unexpected {exc.status_code}: see the gateway's log")

    return http_error


# What a field or parameter name of this API can look like: an unknown one unlike it is not echoed.
_NAME = re.compile(r"[a-z][a-z_]{0,31}")


async def _refused(request: Request, exc: RequestValidationError) -> Response:
    """A request the models refused, in one line naming one field (pydantic lists them all)."""
    errors = exc.errors()
    # An unknown name first, as the hand-written checks did: a misspelt field explains the rest.
    error = next((error for error in errors if error["type"] == "extra_forbidden"), errors[0])
    kind, *path = error["loc"]
    if error["type"] == "json_invalid":
        return envelope(400, "invalid_json", "the request body is not valid JSON")
    field = (error.get("ctx") or {}).get("field") or (str(path[0]) if path else None)
    if field is None:  # the body as a whole: JSON, but not an object
        return envelope(400, "invalid_json", "the request body must be a JSON object")
    if error["type"] == "extra_forbidden":
        if not _NAME.fullmatch(field):
            # No name of ours looks like this; it may be a key sent in the wrong place: not echoed.
            field = "(not a name of this API)"
        message = f"unknown {'query parameter' if kind == 'query' else 'field'} {field!r}"
    elif error["type"] == "missing":
        message = f"{field} is required"
    elif error["type"] == REFUSED:
        message = error["msg"]
    else:
        message = f"{field}: {error['msg']}"
    return envelope(422, "validation_failed", message, field)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Any other failure: 503 when the store failed (the write did not happen), 500 otherwise.
    Starlette raises it again afterwards, so uvicorn logs the traceback."""
    if isinstance(exc, ChangeNotAnnounced):
        message = (
            "The change was made, but Redis could not tell every gateway: they may use cached copies"
            " for up to cache.ttl_seconds. Repeat it once Redis answers."
        )
        return envelope(503, "store_unavailable", message, headers={"Retry-After": RETRY_AFTER})
    if is_store_failure(exc):
        message = "The key store is unavailable; nothing was changed. Retry later."
        return envelope(503, "store_unavailable", message, headers={"Retry-After": RETRY_AFTER})
    return envelope(500, "internal_error", "Internal error; see the gateway's log")


def handlers(routes: Sequence[BaseRoute]) -> dict[int | type[Exception], Handler]:
    """The app's exception handlers; ``routes`` are the app's, for a 405's Allow. Each is found by
    walking the exception's MRO: AlreadyReplaced is answered as AlreadyExists."""
    return {
        NotFound: _not_found,
        AlreadyExists: _conflict,
        PortalOff: _portal_off,
        PortalClosed: _portal_off,
        InvalidField: _invalid_field,
        HTTPException: _http_errors(routes),
        RequestValidationError: _refused,
        Exception: _unexpected,
    }
