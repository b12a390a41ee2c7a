"""Which configured route a request is on: one matcher for the credit rules (``credits.rules``)
and the route limits (``rate_limits.routes``), so that the two can never read a path apart.

A route is a method (or ``*`` for any) and a path: exact, or a prefix when it ends in ``*``. The
request's path is matched with dot segments resolved and repeated slashes collapsed, so
``/api/v1/mockups/./generate`` cannot dodge a route. A route for GET also covers HEAD: servers
answer HEAD by doing the GET's work (Starlette, Flask, Rails), so HEAD must not dodge its cost or
limits."""

from __future__ import annotations

import posixpath
from typing import Protocol

__all__ = ["Route", "matches", "normalized_path"]


class Route(Protocol):
    @property
    def method(self) -> str:
        """Upper case, or "*" for any."""
        ...

    @property
    def path(self) -> str:
        """Exact, or a prefix when it ends in "*"."""
        ...


def normalized_path(path: str) -> str:
    """``path`` with dot segments resolved and repeated slashes collapsed; a trailing slash kept."""
    if "/." not in path and "//" not in path:
        return path
    resolved = posixpath.normpath(path)
    if resolved.startswith("//"):  # normpath keeps exactly two leading slashes (POSIX)
        resolved = "/" + resolved.lstrip("/")
    if path.endswith("/") and resolved != "/":
        resolved += "/"
    return resolved


def matches(route: Route, method: str, normal_path: str) -> bool:
    """Whether a request (its path already ``normalized_path``) is on ``route``."""
    if route.method != "*" and route.method != method and not (method == "HEAD" and route.method == "GET"):
        return False
    if route.path.endswith("*"):
        return normal_path.startswith(route.path[:-1])
    return normal_path == route.path
