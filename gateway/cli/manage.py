"""``gateway users``, ``gateway keys`` and ``gateway db``: the operator's commands.

Each opens the store named by the config, migrating it forward if needed, does one thing through
the service layer (``manage/service.py``), and closes it. A full key is printed once, by ``keys create``
and ``keys rotate``, and never again.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from gateway.cli.common import config_option, emit, fields, json_option, load, shown, table
from gateway.manage.audit import acting, cli_actor
from gateway.manage.documents import (
    DAILY_FIELDS,
    KEY_FIELDS,
    USAGE_FIELDS,
    created_document,
    daily_usage_document,
    iso,
    key_document,
    usage_document,
    user_document,
)
from gateway.manage.portal import mint_link
from gateway.manage.rules import InvalidField, ServiceError, check_limits
from gateway.manage.service import UNCHANGED, AlreadyExists, CreatedKey, ManagementService, NotFound, open_service
from gateway.store import ApiKey, StoreError
from gateway.store.base import is_store_failure
from gateway.units import parse_duration, parse_instant

__all__ = ["db", "keys", "usage", "users"]

T = TypeVar("T")

USER_COLUMNS = ("id", "subscription", "created_at", "rate_limits")
# `keys list` fits a 100-column terminal: these columns, names cut short, dates without the time
# (`--wide`: every field in full; `keys show`: one key's).
KEY_COLUMNS = ("id", "prefix", "name", "user_id", "status", "last_used", "rate_limits")
KEY_WIDEST = {"name": 10, "user_id": 12, "rate_limits": 14}
USAGE_COLUMNS = USAGE_FIELDS


def run(ctx: click.Context, action: Callable[[ManagementService], Awaitable[T]], *, hint: str = "") -> T:
    """Open the store, run ``action`` with a service on it, close; errors become one line."""
    config = load(ctx)

    async def main() -> T:
        # An operator would rather wait a little for Redis than see a command fail.
        async with open_service(config, redis_timeout=max(config.redis.timeout, 5.0)) as service:
            with acting(cli_actor(), "cli"):  # the audit trail's "who"
                return await action(service)

    try:
        return asyncio.run(main())
    except AlreadyExists as exc:
        raise click.ClickException(f"{exc}{hint}") from None
    except NotFound as exc:
        # The hint names the id given: not when that id was a full key (never echoed).
        raise click.ClickException(f"{exc}{'' if 'looks like a full key' in str(exc) else hint}") from None
    except (ServiceError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        if not is_store_failure(exc):
            raise
        # Locked, read-only, disk full: each write is one transaction, so nothing was written.
        raise click.ClickException(
            f"the key store could not be used ({exc}); nothing was changed: fix the store and run the command again"
        ) from None


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(f"expected {exc}, got {value!r}") from None


def rate_limits(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Limits as the config and the admin API take them (``;`` or ``,`` between them), checked
    before the store is opened: a bad value is a usage error (exit 2), as a bad duration is."""
    if value is None:
        return None
    try:
        return check_limits(value)
    except InvalidField:
        raise click.BadParameter(f'expected limits such as "1000/minute;100000/day", got {value!r}') from None


def limits_text(key: ApiKey) -> str:
    return key.rate_limits or "the default (rate_limits.default)"


def created_text(created: CreatedKey, what: str) -> str:
    record = created.record
    return (
        f"{what} key {record.id} for user {record.user_id}"
        f" (name: {record.name or '-'}, expires: {iso(record.expires_at) or 'never'},"
        f" rate limits: {limits_text(record)}):\n\n"
        f"    {created.key}\n\n"
        "This is the only time the key is shown: give it to its user now."
    )


# ------------------------------------------------------------------------------------ users


@click.group()
@config_option
def users() -> None:
    """Users (the operator's own ids): add, list, set-subscription, set-limits, credits, delete."""


@users.command("add")
@config_option
@click.argument("user_id")
@click.option("--subscription", type=click.Choice(["active", "inactive"]), default="active", show_default=True)
@json_option
@click.pass_context
def users_add(ctx: click.Context, user_id: str, subscription: str, as_json: bool) -> None:
    """Add a user."""
    hint = f": change its subscription with `gateway users set-subscription {user_id} active|inactive`"
    user = run(ctx, lambda service: service.add_user(user_id, subscription), hint=hint)
    emit(as_json, user_document(user), f"added user {user.id} (subscription {user.subscription})")


@users.command("set-subscription")
@config_option
@click.argument("user_id")
@click.argument("subscription", type=click.Choice(["active", "inactive"]))
@json_option
@click.pass_context
def users_set_subscription(ctx: click.Context, user_id: str, subscription: str, as_json: bool) -> None:
    """Set a user's subscription to active or inactive (counts on the next request)."""
    hint = f": add it first with `gateway users add {user_id}`"
    user = run(ctx, lambda service: service.set_subscription(user_id, subscription), hint=hint)
    emit(as_json, user_document(user), f"user {user.id}: subscription {user.subscription}")


def _limits_or_default(rate_limits: str | None, use_default: bool) -> None:
    """A set-limits command is given limits or --default: exactly one of them."""
    if (rate_limits is None) == (not use_default):
        raise click.UsageError('give either limits such as "1000/minute;100000/day" or --default')


@users.command("set-limits")
@config_option
@click.argument("user_id")
@click.argument("rate_limits", required=False, callback=rate_limits)
@click.option("--default", "use_default", is_flag=True, help="Go back to rate_limits.per_user.")
@json_option
@click.pass_context
def users_set_limits(
    ctx: click.Context, user_id: str, rate_limits: str | None, use_default: bool, as_json: bool
) -> None:
    """Give a user its own rate limits over all its keys ("1000/minute;100000/day"), or --default."""
    _limits_or_default(rate_limits, use_default)
    hint = f": add it first with `gateway users add {user_id}`"
    user = run(ctx, lambda service: service.set_user_rate_limits(user_id, rate_limits), hint=hint)
    shown = user.rate_limits or "the default (rate_limits.per_user)"
    emit(as_json, user_document(user), f"user {user.id}: rate limits {shown}")


@users.command("credits")
@config_option
@click.argument("user_id")
@click.option("--add", "add", type=int, default=None, help="Add N credits (negative: take them off).")
@click.option("--set", "set_to", type=click.IntRange(min=0), default=None, help="Set the balance to N.")
@json_option
@click.pass_context
def users_credits(ctx: click.Context, user_id: str, add: int | None, set_to: int | None, as_json: bool) -> None:
    """A user's credit balance (credits.wallet), or --add N / --set N; every change is recorded."""
    if add is not None and set_to is not None:
        raise click.UsageError("give --add N or --set N, not both")
    hint = f": add it first with `gateway users add {user_id}`"
    balance = run(ctx, lambda service: service.credits(user_id, add=add, set_to=set_to), hint=hint)
    emit(as_json, {"user_id": user_id, "balance": balance}, f"user {user_id}: {balance} credits")


@users.command("delete")
@config_option
@click.argument("user_id")
@json_option
@click.pass_context
def users_delete(ctx: click.Context, user_id: str, as_json: bool) -> None:
    """Revoke all of a user's keys at once and set it inactive; its record and usage stay."""
    user, revoked = run(ctx, lambda service: service.retire_user(user_id))
    document = user_document(user) | {"revoked_keys": revoked}
    emit(as_json, document, f"user {user.id}: {revoked} keys revoked, subscription {user.subscription}")


@users.command("list")
@config_option
@json_option
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """List the users."""
    found = run(ctx, lambda service: service.list_users())
    documents = [user_document(user) for user in found]
    rows = [document | {"rate_limits": document["rate_limits"] or "default"} for document in documents]
    emit(as_json, documents, table(rows, USER_COLUMNS))


# ------------------------------------------------------------------------------------- keys


@click.group()
@config_option
def keys() -> None:
    """API keys: create, list, show, find, update, revoke, rotate, set-limits."""


@keys.command("create")
@config_option
@click.option("--user", "user_id", required=True, help="The user the key belongs to.")
@click.option("--name", default=None, help="A label for people, e.g. 'production'.")
@click.option("--expires-in", callback=duration, default=None, help="Lifetime, e.g. 30d or 12h  [default: never]")
@click.option(
    "--rate-limit",
    "rate_limits",
    default=None,
    callback=rate_limits,
    help='Its own limits, e.g. "1000/minute;100000/day"  [default: rate_limits.default]',
)
@json_option
@click.pass_context
def keys_create(
    ctx: click.Context,
    user_id: str,
    name: str | None,
    expires_in: float | None,
    rate_limits: str | None,
    as_json: bool,
) -> None:
    """Create a key and print it, the one time it is ever shown."""
    hint = f": add it first with `gateway users add {user_id}`"
    created = run(
        ctx,
        lambda service: service.create_key(user_id, name=name, expires_in=expires_in, rate_limits=rate_limits),
        hint=hint,
    )
    emit(as_json, created_document(created), created_text(created, "Created"))


@keys.command("list")
@config_option
@click.option("--user", "user_id", default=None, help="Only this user's keys.")
@click.option("--wide", is_flag=True, help="Every field, in full (wider than 100 columns).")
@json_option
@click.pass_context
def keys_list(ctx: click.Context, user_id: str | None, wide: bool, as_json: bool) -> None:
    """List keys (by id and prefix; never the key)."""
    found = run(ctx, lambda service: service.list_keys(user_id), hint=" (see `gateway users list`)")
    now = time.time()
    documents = [key_document(key, now) for key in found]
    if wide or as_json:
        emit(as_json, documents, table(documents, KEY_FIELDS))
        return
    rows = [
        document
        | {
            "last_used": (document["last_used_at"] or "-")[:10],
            "rate_limits": shown(document["rate_limits"]) if document["rate_limits"] else "default",
        }
        for document in documents
    ]
    emit(as_json, documents, table(rows, KEY_COLUMNS, widest=KEY_WIDEST))


@keys.command("find")
@config_option
@json_option
@click.pass_context
def keys_find(ctx: click.Context, as_json: bool) -> None:
    """The key whose full key is read from stdin (find a leaked key's owner); never echoed."""
    try:
        key = sys.stdin.readline().strip(" \t\r\n")  # the line as a file or a shell gives it
    except UnicodeDecodeError:
        raise click.UsageError("the key on stdin is not text; give the full key as it was shown") from None
    if not key:
        raise click.UsageError("give the full key on stdin, e.g. gateway keys find < leaked.txt")
    _show_key(run(ctx, lambda service: service.find_key(key)), as_json)


@keys.command("show")
@config_option
@click.argument("key_id")
@json_option
@click.pass_context
def keys_show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """One key, with its usage and rate limits (never the key)."""
    _show_key(run(ctx, lambda service: service.get_key(key_id), hint=" (see `gateway keys list`)"), as_json)


def _show_key(key: ApiKey, as_json: bool) -> None:
    """One stored key, as `keys show` and `keys find` print it (never the key)."""
    document = key_document(key, time.time())
    emit(as_json, document, fields(document | {"rate_limits": limits_text(key)}))


def _instant(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """--expires-at: an ISO 8601 time (UTC unless it says), or "never"."""
    if value is None:
        return UNCHANGED
    if value == "never":
        return None
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter(f'expected a time such as 2027-01-01T00:00:00Z, or "never", got {value!r}') from None


def _metadata(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """--metadata: a JSON object, or "null" to clear it."""
    if value is None:
        return UNCHANGED
    try:
        metadata = json.loads(value)
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("not an object")
        return metadata
    except ValueError:
        raise click.BadParameter(
            f'expected a JSON object such as \'{{"plan": "pro"}}\', or null, got {value!r}'
        ) from None


@keys.command("update")
@config_option
@click.argument("key_id")
@click.option("--name", default=None, help='A new label for people ("" clears it).')
@click.option(
    "--expires-at", callback=_instant, default=None, help='When it stops, e.g. 2027-01-01T00:00:00Z, or "never".'
)
@click.option("--expires-in", callback=duration, default=None, help="When it stops, from now, e.g. 30d.")
@click.option(
    "--metadata",
    callback=_metadata,
    default=None,
    help='A JSON object of notes, e.g. \'{"plan": "pro"}\' (null clears).',
)
@json_option
@click.pass_context
def keys_update(
    ctx: click.Context,
    key_id: str,
    name: str | None,
    expires_at: Any,
    expires_in: float | None,
    metadata: Any,
    as_json: bool,
) -> None:
    """Change a key's name, expiry or metadata (shown by keys show and the API, never sent upstream)."""
    if expires_in is not None and expires_at is not UNCHANGED:
        raise click.UsageError("give --expires-at or --expires-in, not both")
    if expires_in is not None:
        expires_at = time.time() + expires_in
    changes = {
        "name": UNCHANGED if name is None else (name or None),
        "expires_at": expires_at,
        "metadata": metadata,
    }
    if all(value is UNCHANGED for value in changes.values()):
        raise click.UsageError("give what to change: --name, --expires-at, --expires-in or --metadata")
    key = run(ctx, lambda service: service.update_key(key_id, **changes), hint=" (see `gateway keys list`)")
    _show_key(key, as_json)


@keys.command("set-limits")
@config_option
@click.argument("key_id")
@click.argument("rate_limits", required=False, callback=rate_limits)
@click.option("--default", "use_default", is_flag=True, help="Go back to rate_limits.default.")
@json_option
@click.pass_context
def keys_set_limits(ctx: click.Context, key_id: str, rate_limits: str | None, use_default: bool, as_json: bool) -> None:
    """Give a key its own rate limits ("1000/minute;100000/day"), or --default; counts on its next request."""
    _limits_or_default(rate_limits, use_default)
    key = run(ctx, lambda service: service.set_rate_limits(key_id, rate_limits), hint=" (see `gateway keys list`)")
    emit(as_json, key_document(key, time.time()), f"key {key.id}: rate limits {limits_text(key)}")


@keys.command("revoke")
@config_option
@click.argument("key_id")
@json_option
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Revoke a key: it fails on the very next request."""
    key, already = run(ctx, lambda service: service.revoke_key(key_id), hint=" (see `gateway keys list`)")
    document = key_document(key, time.time()) | {"already_revoked": already}
    text = f"key {key.id} was already revoked (at {iso(key.revoked_at)})" if already else f"revoked key {key.id}"
    emit(as_json, document, text)


@keys.command("rotate")
@config_option
@click.argument("key_id")
@click.option("--grace", callback=duration, default=None, help="How long the old key keeps working  [default: 0]")
@json_option
@click.pass_context
def keys_rotate(ctx: click.Context, key_id: str, grace: float | None, as_json: bool) -> None:
    """Replace a key with a new one for the same user and name; print the new key once."""
    created, old = run(ctx, lambda service: service.rotate_key(key_id, grace=grace), hint=" (see `gateway keys list`)")
    stops_at = old.revoked_at if old.revoked_at is not None else old.expires_at
    document = created_document(created) | {"replaces": old.id, "replaced_key_stops_at": iso(stops_at)}
    when = "now" if old.revoked_at is not None else f"at {iso(stops_at)}"
    emit(as_json, document, created_text(created, "Rotated: new") + f"\nThe old key {old.id} stops working {when}.")


# ------------------------------------------------------------------------------------ usage


@click.command("usage")
@config_option
@click.option("--user", "user_id", default=None, help="Only this user.")
@click.option("--key", "key_id", default=None, help="One key's usage per day (with --daily).")
@click.option("--daily", is_flag=True, help="Per UTC day, of --key or --user.")
@click.option("--from", "since", default=None, metavar="DATE", help="First day (with --daily)  [default: 29 days ago]")
@click.option("--to", "until", default=None, metavar="DATE", help="Last day (with --daily)  [default: today]")
@json_option
@click.pass_context
def usage(
    ctx: click.Context,
    user_id: str | None,
    key_id: str | None,
    daily: bool,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Usage summed per user (requests, rate_limited, credits, last_used_at), or with --daily one
    key's or one user's per UTC day."""
    if not daily:
        if key_id is not None or since is not None or until is not None:
            raise click.UsageError("--key, --from and --to go with --daily")
        found = run(ctx, lambda service: service.usage(user_id), hint=" (see `gateway users list`)")
        documents = [usage_document(u) for u in found]
        emit(as_json, documents, table(documents, USAGE_COLUMNS))
        return
    if (key_id is None) == (user_id is None):
        raise click.UsageError("--daily needs either --key KEY_ID or --user USER_ID")
    first, last, days = run(
        ctx,
        lambda service: service.daily_usage(key_id=key_id, user_id=user_id, since=since, until=until),
        hint=" (see `gateway keys list` or `gateway users list`)",
    )
    owner = {"key_id": key_id} if key_id is not None else {"user_id": user_id or ""}
    document = daily_usage_document(owner, first, last, days)
    totals = ", ".join(f"{name} {value}" for name, value in document["totals"].items())
    text = table(document["days"], DAILY_FIELDS) + f"\n{first} to {last}: {totals}"
    emit(as_json, document, text)


# --------------------------------------------------------------------------------------- db


@click.group()
@config_option
def db() -> None:
    """The key store: migrate."""


@db.command("migrate")
@config_option
@json_option
@click.pass_context
def db_migrate(ctx: click.Context, as_json: bool) -> None:
    """Bring the store's schema up to date (the server also does this at start-up)."""
    version = run(ctx, lambda service: service.store.migrate())
    emit(as_json, {"schema_version": version}, f"store schema at version {version}")


# ------------------------------------------------------------------------------------ portal


@click.group()
@config_option
def portal() -> None:
    """The self-service key portal: one-time links that open it for a user."""


@portal.command("link")
@config_option
@click.argument("user_id")
@click.option("--return-url", help="where the portal links back to (a host of portal.return_url_hosts)")
@json_option
@click.pass_context
def portal_link(ctx: click.Context, user_id: str, return_url: str | None, as_json: bool) -> None:
    """A link that opens USER_ID's portal once, within portal.link_ttl (kept hashed in the key store)."""
    config = load(ctx).portal
    url, expires_at = run(ctx, lambda service: mint_link(service, config, user_id, return_url))
    emit(as_json, {"url": url, "expires_at": iso(expires_at)}, url)
