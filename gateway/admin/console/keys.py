"""Keys: the form for a new one, creating (the key shown once), rotating, revoking (after a
confirmation that needs no script), and a key's page with its limits and usage."""

from __future__ import annotations

import json

from starlette.responses import RedirectResponse, Response

from gateway.admin.console.audit import audit_rows
from gateway.admin.console.charts import daily_chart
from gateway.admin.console.users import user_page_context
from gateway.admin.console.web import PREFIX, Visit, key_rows, page, user_url
from gateway.manage.rules import InvalidField, split_limits
from gateway.units import parse_duration

__all__ = ["confirm_revoke", "create_key", "key_page", "new_key", "revoke_key", "rotate_key", "save_limits"]


# A key's latest audit events on its page; the audit log has them all.
KEY_EVENTS = 20


def _limits(text: str) -> str | None:
    """The limits typed, or None (empty) for the default ones."""
    return text.strip() or None


@page
async def new_key(visit: Visit) -> Response:
    user = await visit.service.get_user(visit.request.path_params["user_id"])
    return visit.render("new_key.html", nav="users", user=user, default_limits=visit.console.config.rate_limits.default)


@page
async def create_key(visit: Visit) -> Response:
    user = await visit.service.get_user(visit.request.path_params["user_id"])
    expires = visit.form.get("expires_in", "").strip()
    try:
        expires_in = parse_duration(expires) if expires else None
    except ValueError:
        raise InvalidField("expires in: a duration such as 30d, 12h or 90d (empty: never)", "expires_in") from None
    created = await visit.service.create_key(
        user.id,
        name=visit.form.get("name", "").strip() or None,
        expires_in=expires_in,
        rate_limits=_limits(visit.form.get("rate_limits", "")),
    )
    return visit.render("user.html", **await user_page_context(visit, user, created))


@page
async def rotate_key(visit: Visit) -> Response:
    created, _ = await visit.service.rotate_key(visit.request.path_params["key_id"])
    user = await visit.service.get_user(created.record.user_id)
    return visit.render("user.html", **await user_page_context(visit, user, created))


@page
async def confirm_revoke(visit: Visit) -> Response:
    key = await visit.service.get_key(visit.request.path_params["key_id"])
    return visit.render("revoke.html", nav="users", key=key)


@page
async def revoke_key(visit: Visit) -> Response:
    key, _ = await visit.service.revoke_key(visit.request.path_params["key_id"])
    return RedirectResponse(f"{user_url(key.user_id)}?done=revoked", 303)


@page
async def key_page(visit: Visit) -> Response:
    key = await visit.service.get_key(visit.request.path_params["key_id"])
    first, last, days = await visit.service.daily_usage(key_id=key.id)
    events, more = await visit.service.audit_events(target=key.id, limit=KEY_EVENTS)
    return visit.render(
        "key.html",
        nav="users",
        key=key,
        status=key.status(visit.service.now()),
        row=key_rows([key], visit.service.now(), visit.console.config.portal.rotate_after)[0],
        rotate_after=visit.console.config.portal.rotate_after,
        own_limits=split_limits(key.rate_limits),
        default_limits=visit.console.config.rate_limits.default,
        days=days,
        chart=daily_chart(days, first, last, title=f"Requests per day of key {key.id}, {first} to {last}"),
        first=first,
        last=last,
        saved=visit.request.query_params.get("done") == "limits",
        metadata=None if key.metadata is None else json.dumps(json.loads(key.metadata), indent=2, sort_keys=True),
        events=audit_rows(events),
        more_events=more is not None,
    )


@page
async def save_limits(visit: Visit) -> Response:
    key = await visit.service.set_rate_limits(
        visit.request.path_params["key_id"], _limits(visit.form.get("rate_limits", ""))
    )
    return RedirectResponse(f"{PREFIX}/keys/{key.id}?done=limits", 303)
