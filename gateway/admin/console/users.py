"""The users: the list (searched by id prefix, a page at a time), adding one, and a user's page
with its keys, its usage per day and its subscription switch."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.responses import RedirectResponse, Response

from gateway.admin.console.charts import daily_chart
from gateway.admin.console.web import Visit, key_rows, page, user_url
from gateway.admin.pages import decode_cursor, page as page_of
from gateway.manage.service import CreatedKey
from gateway.store import User

__all__ = ["add_user", "user_page", "user_page_context", "users", "set_subscription"]

PAGE_SIZE = 50

# What a redirect after a change says on the page it lands on (never text from the request).
NOTICES = {
    "added": "User added.",
    "revoked": "Key revoked: it fails from its next request on.",
    "subscription": "Subscription changed: it counts from the user's next request on.",
}


@page
async def users(visit: Visit) -> Response:
    query = visit.request.query_params.get("q", "")
    cursor = visit.request.query_params.get("cursor")
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError:
        after = None
    found = [user for user in await visit.service.list_users() if user.id.startswith(query)]
    shown, next_cursor = page_of(found, lambda user: (user.created_at, user.id), after, PAGE_SIZE)
    usage = {usage.user_id: usage for usage in await visit.service.usage()}
    keys = Counter(key.user_id for key in await visit.service.list_keys())
    return visit.render(
        "users.html",
        nav="users",
        query=query,
        users=[(user, keys[user.id], usage.get(user.id)) for user in shown],
        next_cursor=next_cursor,
        notice=NOTICES.get(visit.request.query_params.get("done", "")),
    )


@page
async def add_user(visit: Visit) -> Response:
    user = await visit.service.add_user(visit.form.get("user_id", "").strip(), visit.form.get("subscription", "active"))
    return RedirectResponse(f"{user_url(user.id)}?done=added", 303)


async def user_page_context(visit: Visit, user: User, created: CreatedKey | None = None) -> dict[str, Any]:
    """What a user's page shows; ``created``: a key just made (or rotated), shown this once."""
    rotate_after = visit.console.config.portal.rotate_after
    first, last, days = await visit.service.daily_usage(user_id=user.id)
    return {
        "nav": "users",
        "user": user,
        "keys": key_rows(await visit.service.list_keys(user.id), visit.service.now(), rotate_after),
        "rotate_after": rotate_after,
        "days": days,
        "chart": daily_chart(days, first, last, title=f"Requests per day of {user.id}, {first} to {last}"),
        "first": first,
        "last": last,
        "created": created,
        "notice": NOTICES.get(visit.request.query_params.get("done", "")),
    }


@page
async def user_page(visit: Visit) -> Response:
    user = await visit.service.get_user(visit.request.path_params["user_id"])
    return visit.render("user.html", **await user_page_context(visit, user))


@page
async def set_subscription(visit: Visit) -> Response:
    user = await visit.service.set_subscription(
        visit.request.path_params["user_id"], visit.form.get("subscription", "")
    )
    return RedirectResponse(f"{user_url(user.id)}?done=subscription", 303)
