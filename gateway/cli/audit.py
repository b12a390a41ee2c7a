"""``gateway audit``: who changed what, and when, newest first (the audit trail the service records
for every change, whichever way it was made)."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.common import config_option, emit, json_option, shown, table
from gateway.cli.manage import run
from gateway.manage.audit import AUDIT_ACTIONS
from gateway.manage.documents import audit_document
from gateway.units import parse_instant

__all__ = ["audit"]

COLUMNS = ("at", "actor", "via", "action", "target", "changes")


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter(f"expected a time such as 2026-12-01 or 2026-12-01T08:00:00Z, got {value!r}") from None


def changes_text(document: dict[str, Any]) -> str:
    """What an event changed, as people read it: name: before -> after."""
    before, after = document["before"] or {}, document["after"] or {}
    return ", ".join(
        f"{name}: {shown(before[name])} -> {shown(value)}" if name in before else f"{name}: {shown(value)}"
        for name, value in after.items()
    )


@click.command("audit")
@config_option
@click.option("--since", callback=_since, default=None, help="Only events from this time, e.g. 2026-12-01.")
@click.option("--target", default=None, help="Only events about this user or key id.")
@click.option("--actor", default=None, help="Only events by this actor (an admin token's name, cli:<os user>).")
@click.option("--action", type=click.Choice(sorted(AUDIT_ACTIONS)), default=None, help="Only events of this action.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most this many events.")
@json_option
@click.pass_context
def audit(
    ctx: click.Context,
    since: float | None,
    target: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Every change to users and keys, newest first: when, who, how, what (never a key)."""
    events, _ = run(
        ctx,
        lambda service: service.audit_events(target=target, actor=actor, action=action, since=since, limit=limit),
    )
    documents = [audit_document(event) for event in events]
    rows = [document | {"changes": changes_text(document)} for document in documents]
    emit(as_json, documents, table(rows, COLUMNS) if rows else "no audit events")
