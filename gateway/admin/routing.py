"""How a request reaches the admin API's routes, where FastAPI's defaults differ from what the API
has always done: a JSON body is read as JSON whatever its Content-Type says, and an empty one as
``{}`` (``JsonBodyRoute``); HEAD is answered as GET without the body (``HeadAsGet``); and a 405
lists every method the path takes, not only those of the first route that matched
(``allowed_methods``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from gateway.admin.models import Error
from gateway.types import ASGIApp, Receive, Scope, Send

__all__ = ["MAX_JSON_BODY", "TOO_LARGE", "HeadAsGet", "JsonBodyRoute", "allowed_methods"]


# A JSON body of this API is a user, a key or a change: a few KiB at most (metadata is 2 KiB).
# Read past this, a body is refused (413) rather than held in memory whole.
MAX_JSON_BODY = 1024 * 1024
TOO_LARGE = f"the request body is larger than {MAX_JSON_BODY // 1024} KiB, the most a JSON body of this API may be"


class _JsonBody(Request):
    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > MAX_JSON_BODY:
                    raise HTTPException(413)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        # An empty body is an empty object: POST …/rotate needs none, and a missing required
        # field is then named ("id is required") rather than the body.
        return self._body or b"{}"


class JsonBodyRoute(APIRoute):
    """A route whose JSON body FastAPI reads whatever the Content-Type: FastAPI would hand any other
    type (curl -d sends application/x-www-form-urlencoded) to the model as raw bytes. Its reason,
    keeping browsers' forms from posting JSON across sites, does not apply behind a bearer token,
    which a browser never adds by itself."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.body_field is not None:  # documented where it can happen
            self.responses.setdefault(413, {"model": Error, "description": TOO_LARGE})

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:  # no JSON body: POST /admin/v1/import reads its own stream
            return handle

        async def read_as_json(request: Request) -> Response:
            headers = [(name, value) for name, value in request.scope["headers"] if name != b"content-type"]
            scope = {**request.scope, "headers": [*headers, (b"content-type", b"application/json")]}
            return await handle(_JsonBody(scope, request.receive))

        return read_as_json


class HeadAsGet:
    """HEAD runs the GET route (RFC 9110 §9.3.2: every general-purpose server answers it), as
    Starlette's routes do and FastAPI's do not; uvicorn leaves the body out, since its own scope
    still says HEAD."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """The methods ``routes`` take at the request's path. Starlette's 405 names those of the first
    route that matched only: GET for a path whose POST is another route."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)
