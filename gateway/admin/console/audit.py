"""The audit log: every change to users and keys, whoever made it (the admin API, the CLI, this
console, an import), newest first, filtered by target, actor or action; and a key's own events,
for its page."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from gateway.admin.console.web import Visit, page
from gateway.manage.audit import AUDIT_ACTIONS
from gateway.manage.documents import audit_document
from gateway.store import AuditEvent

__all__ = ["AuditRow", "audit_log", "audit_rows"]

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class AuditRow:
    """An event as the log's table shows it: its document, and each changed field in words."""

    event: dict[str, Any]
    changes: list[tuple[str, str, str]]  # field, before, after ("" where there is none)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def audit_rows(events: Sequence[AuditEvent]) -> list[AuditRow]:
    rows = []
    for event in events:
        document = audit_document(event)
        before, after = document["before"] or {}, document["after"] or {}
        names = [*before, *(name for name in after if name not in before)]
        rows.append(AuditRow(document, [(name, _shown(before.get(name)), _shown(after.get(name))) for name in names]))
    return rows


@page
async def audit_log(visit: Visit) -> Response:
    query = visit.request.query_params
    filters = {name: query.get(name, "").strip() or None for name in ("target", "actor", "action")}
    if filters["action"] is not None and filters["action"] not in AUDIT_ACTIONS:
        filters["action"] = None
    events, next_cursor = await visit.service.audit_events(
        target=filters["target"],
        actor=filters["actor"],
        action=filters["action"],
        cursor=query.get("cursor") or None,
        limit=PAGE_SIZE,
    )
    given = {name: value for name, value in filters.items() if value}
    return visit.render(
        "audit.html",
        nav="audit",
        rows=audit_rows(events),
        filters={name: value or "" for name, value in filters.items()},
        actions=sorted(AUDIT_ACTIONS),
        older=None if next_cursor is None else urlencode(given | {"cursor": next_cursor}),
    )
