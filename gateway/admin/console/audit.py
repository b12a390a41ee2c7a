"""The audit log: every change to users and keys, whoever made it (the admin API, the CLI, this
console, an import)."""

from __future__ import annotations

from starlette.responses import Response

from gateway.admin.console.web import Visit, page

__all__ = ["audit_log"]


@page
async def audit_log(visit: Visit) -> Response:
    # The audit trail (issue 15) is not in this gateway yet: the page says so rather than show an
    # empty log that would read as "nothing changed".
    return visit.render("audit.html", nav="audit", available=False)
