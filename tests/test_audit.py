"""The audit trail in-process: the service on each store (SQLite, PostgreSQL) with a fake clock,
every change recorded with who made it and what it changed, never a key or a hash; and what an
operator may set on a key afterwards (name, expiry, metadata)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.manage.audit import acting, cli_actor
from gateway.manage.documents import audit_document, key_document
from gateway.manage.rules import InvalidField
from gateway.manage.service import ManagementService
from gateway.store import KeyStore
from tests.fakes import Clock

PREFIX = "mk_live_"
DAY = 86400.0


@pytest.fixture
def store_url(each_store_url: str) -> str:
    return each_store_url


@pytest.fixture
def service(store: KeyStore, clock: Clock) -> ManagementService:
    return ManagementService(store, key_prefix=PREFIX, clock=clock, audit_retention_days=30)


async def events(service: ManagementService, **filters: Any) -> list[dict[str, Any]]:
    found, _ = await service.audit_events(**filters)
    return [audit_document(event) for event in found]


async def test_every_change_is_recorded_with_who_made_it_and_what_it_changed(
    service: ManagementService, clock: Clock
) -> None:
    with acting("ops", "api", "req-1"):
        await service.add_user("alice")
        created = await service.create_key("alice", name="prod", rate_limits="10/minute")
    clock.tick(1)
    with acting("cli:carol", "cli"):
        await service.set_subscription("alice", "inactive")
        await service.set_subscription("alice", "inactive")  # no change: no event
        await service.set_rate_limits(created.record.id, "5/second,100/hour")
        await service.update_key(created.record.id, name="staging", metadata={"plan": "pro"})
        await service.credits("alice", add=7)
        rotated, _ = await service.rotate_key(created.record.id, grace=60)
        await service.revoke_key(rotated.record.id)
        await service.revoke_key(rotated.record.id)  # revoked already: no event
        await service.retire_user("alice")

    found = await events(service)
    assert [(e["actor"], e["via"], e["action"], e["target"]) for e in reversed(found)] == [
        ("ops", "api", "user.add", "alice"),
        ("ops", "api", "key.create", created.record.id),
        ("cli:carol", "cli", "user.subscription", "alice"),
        ("cli:carol", "cli", "key.rate_limits", created.record.id),
        ("cli:carol", "cli", "key.update", created.record.id),
        ("cli:carol", "cli", "user.credits", "alice"),
        ("cli:carol", "cli", "key.rotate", created.record.id),
        ("cli:carol", "cli", "key.create", rotated.record.id),
        ("cli:carol", "cli", "key.revoke", rotated.record.id),
        ("cli:carol", "cli", "user.delete", "alice"),
    ]
    by_action = {(e["action"], e["target"]): e for e in found}
    assert by_action[("user.add", "alice")]["request_id"] == "req-1"
    assert by_action[("user.subscription", "alice")]["before"] == {"subscription": "active"}
    assert by_action[("user.subscription", "alice")]["after"] == {"subscription": "inactive"}
    assert by_action[("key.rate_limits", created.record.id)]["after"] == {"rate_limits": ["5/second", "100/hour"]}
    update = by_action[("key.update", created.record.id)]
    assert (update["before"], update["after"]) == (
        {"name": "prod", "metadata": None},
        {"name": "staging", "metadata": {"plan": "pro"}},
    )
    assert by_action[("key.create", rotated.record.id)]["after"]["rotated_from"] == created.record.id
    assert by_action[("user.credits", "alice")]["after"] == {"add": 7, "credits": 7}
    # Never a key, never a hash, in any event.
    text = json.dumps(found)
    for secret in (created.key, rotated.key, created.record.key_hash, rotated.record.key_hash):
        assert secret not in text


async def test_a_change_outside_any_actor_is_recorded_as_unknown(service: ManagementService) -> None:
    await service.add_user("bob")
    (event,) = await events(service)
    assert (event["actor"], event["via"]) == ("unknown", "unknown")


async def test_events_are_filtered_and_paged_newest_first(service: ManagementService, clock: Clock) -> None:
    with acting("ops", "api"):
        for number in range(5):
            clock.tick(10)
            await service.add_user(f"user-{number}")
    with acting("ci", "api"):
        clock.tick(10)
        await service.set_subscription("user-0", "inactive")

    assert [e["target"] for e in await events(service, actor="ops")] == [f"user-{n}" for n in (4, 3, 2, 1, 0)]
    assert [e["action"] for e in await events(service, target="user-0")] == ["user.subscription", "user.add"]
    assert [e["actor"] for e in await events(service, action="user.subscription")] == ["ci"]
    assert [e["target"] for e in await events(service, since=clock.now - 25)] == ["user-0", "user-4", "user-3"]

    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await service.audit_events(limit=4, cursor=cursor)
        seen += [event.target for event in page]
        if cursor is None:
            break
    assert seen == ["user-0", "user-4", "user-3", "user-2", "user-1", "user-0"]
    with pytest.raises(InvalidField, match="cursor"):
        await service.audit_events(cursor="' OR 1=1 --")


async def test_events_older_than_the_retention_are_dropped(service: ManagementService, clock: Clock) -> None:
    await service.add_user("old")
    clock.tick(31 * DAY)  # past audit.retention_days (30), and past the hourly sweep
    await service.add_user("new")
    assert [e["target"] for e in await events(service)] == ["new"]


async def test_what_an_operator_sets_on_a_key(service: ManagementService, clock: Clock) -> None:
    await service.add_user("alice")
    created = await service.create_key("alice", name="prod")
    key_id = created.record.id

    key = await service.update_key(key_id, metadata={"team": "web", "tier": 2, "tags": ["a", None]})
    assert key_document(key, clock.now)["metadata"] == {"team": "web", "tier": 2, "tags": ["a", None]}
    assert (await service.get_key(key_id)).name == "prod"  # fields not given stay
    key = await service.update_key(key_id, name=None, metadata=None)
    assert (key.name, key.metadata) == (None, None)

    key = await service.update_key(key_id, expires_at=clock.now - 1)  # a past time stops it now
    assert key.status(clock.now) == "expired"
    key = await service.update_key(key_id, expires_at=None)
    assert key.status(clock.now) == "active"

    refused: list[tuple[dict[str, Any], str]] = [
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"big": "x" * 3000}}, "metadata"),
        ({"metadata": {"nan": float("nan")}}, "metadata"),
        ({"metadata": {"leaked": created.key}}, "metadata"),
        ({"name": "x" * 201}, "name"),
        ({"expires_at": clock.now + 101 * 365 * DAY}, "expires_at"),
        ({"expires_at": True}, "expires_at"),
        ({}, "name"),
    ]
    for changes, field in refused:
        with pytest.raises(InvalidField) as refusal:
            await service.update_key(key_id, **changes)
        assert refusal.value.field == field, changes
        assert created.key not in str(refusal.value)

    await service.revoke_key(key_id)
    with pytest.raises(InvalidField, match="revoked"):
        await service.update_key(key_id, expires_at=None)  # a revocation stands


async def test_a_rotated_keys_end_stands_against_a_write_that_read_it_before(
    service: ManagementService, store: KeyStore, clock: Clock
) -> None:
    await service.add_user("alice")
    created = await service.create_key("alice")
    await service.rotate_key(created.record.id, grace=60)
    # What an update racing the rotation would write, having read the key before it: refused.
    assert await store.update_key(created.record.id, {"expires_at": clock.now + 365 * DAY}) is None
    assert (await service.get_key(created.record.id)).expires_at == clock.now + 60
    with pytest.raises(InvalidField, match="rotated: its end stands"):
        await service.update_key(created.record.id, expires_at=None)
    # Its name may still change.
    assert (await service.update_key(created.record.id, name="old")).name == "old"


async def test_what_no_event_can_hold_is_refused_or_finds_nothing(service: ManagementService) -> None:
    await service.add_user("alice")
    created = await service.create_key("alice")
    for name in (created.key, f"prod {created.key}"):
        with pytest.raises(InvalidField) as refusal:
            await service.update_key(created.record.id, name=name)
        assert refusal.value.field == "name" and created.key not in str(refusal.value)
    with pytest.raises(InvalidField):
        await service.create_key("alice", name=created.key)
    with pytest.raises(InvalidField, match="JSON values"):
        await service.update_key(created.record.id, metadata={"a": "\ud800"})
    assert await service.audit_events(target="a\x00b") == ([], None)
    assert await service.audit_events(actor="\x00") == ([], None)
    assert await service.audit_events(action="key.\x00") == ([], None)


def test_the_cli_actor_is_printable_whatever_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "ops\x1b[31mRED\nfake line")
    assert cli_actor() == "cli:ops?[31mRED?fake?line"
