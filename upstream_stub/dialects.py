"""The error shapes of the two APIs the stub can imitate (``upstream-stub --profile``).

- ``mockly``: ``{"error": {"code": "not_found", "message": "Template not found"}}``, lower-case codes.
- ``mockupanda``: ``{"error": "Template not found", "code": "TEMPLATE_NOT_FOUND"}``, plus ``"details"``
  where there are some, as its documentation's error page shows; its codes for a generate request
  (``MISSING_TEMPLATE_ID``, ``TEMPLATE_NOT_FOUND`` with 404, ``MISSING_ARTWORK``,
  ``INVALID_ARTWORK_URL``) are the documented ones.

These are the upstream's own answers, which the gateway passes through untouched; the gateway's
answers in the same dialects are ``gateway/profiles.py`` (the stub never imports the gateway).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from starlette.responses import JSONResponse

__all__ = ["PROFILES", "Fault", "ProfileName", "error_response"]

ProfileName = Literal["mockly", "mockupanda"]
PROFILES: tuple[ProfileName, ...] = ("mockly", "mockupanda")


class Fault(NamedTuple):
    """One kind of refusal: its status and code in each profile (the message is the caller's)."""

    mockly: tuple[int, str]
    mockupanda: tuple[int, str]


NO_ENDPOINT = Fault((404, "not_found"), (404, "NOT_FOUND"))
METHOD_NOT_ALLOWED = Fault((405, "method_not_allowed"), (405, "METHOD_NOT_ALLOWED"))
TEMPLATE_NOT_FOUND = Fault((404, "not_found"), (404, "TEMPLATE_NOT_FOUND"))
MOCKUP_NOT_FOUND = Fault((404, "not_found"), (404, "MOCKUP_NOT_FOUND"))
BAD_REQUEST = Fault((400, "validation_failed"), (400, "BAD_REQUEST"))
MISSING_TEMPLATE_ID = Fault((400, "validation_failed"), (400, "MISSING_TEMPLATE_ID"))
# Mockly answers an unknown template in a generate request as a bad field (400); Mockupanda documents 404.
UNKNOWN_TEMPLATE = Fault((400, "validation_failed"), (404, "TEMPLATE_NOT_FOUND"))
MISSING_ARTWORK = Fault((400, "validation_failed"), (400, "MISSING_ARTWORK"))
INVALID_ARTWORK_URL = Fault((400, "validation_failed"), (400, "INVALID_ARTWORK_URL"))


def error_response(
    profile: ProfileName,
    fault: Fault,
    message: str,
    *,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The answer to ``fault`` in ``profile``'s shape (Mockly has no place for ``details``)."""
    if profile == "mockly":
        status, code = fault.mockly
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)
    status, code = fault.mockupanda
    body: dict[str, Any] = {"error": message, "code": code}
    if details:
        body["details"] = dict(details)
    return JSONResponse(body, status_code=status, headers=headers)
