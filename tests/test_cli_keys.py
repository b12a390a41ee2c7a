"""The operator's commands, through click's runner (in process) on a real SQLite store."""

from __future__ import annotations

import getpass
import json
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from gateway.auth.keys import hash_key, is_well_formed
from gateway.cli import main
from gateway.store.schema import SCHEMA_VERSION

Gateway = Callable[..., Result]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path}/gateway.db"}}))
    return path


@pytest.fixture
def gateway(config_path: Path) -> Gateway:
    def run(*args: str) -> Result:
        return CliRunner().invoke(main, [*args, "--config", str(config_path)])

    return run


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def fails_with(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_users(gateway: Gateway) -> None:
    added = ok_json(gateway("users", "add", "alice", "--json"))
    assert isinstance(added, dict)
    assert set(added) == {"id", "subscription", "created_at", "updated_at", "rate_limits"}
    assert added["subscription"] == "active" and added["created_at"].endswith("Z")
    assert (
        gateway("users", "add", "bob", "--subscription", "inactive").stdout
        == "added user bob (subscription inactive)\n"
    )
    fails_with(
        gateway("users", "add", "alice"),
        1,
        "user 'alice' exists already: change its subscription with `gateway users set-subscription alice",
    )
    assert ok_json(gateway("users", "set-subscription", "bob", "active", "--json"))["subscription"] == "active"
    fails_with(
        gateway("users", "set-subscription", "carol", "active"), 1, "add it first with `gateway users add carol`"
    )
    fails_with(gateway("users", "set-subscription", "bob", "paused"), 2, "Invalid value")
    listed = ok_json(gateway("users", "list", "--json"))
    assert [u["id"] for u in listed] == ["alice", "bob"]
    table = gateway("users", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "SUBSCRIPTION", "CREATED_AT", "RATE_LIMITS"]
    assert table[1].split()[:2] == ["alice", "active"] and table[1].split()[3] == "default"


def test_human_output_shows_values_and_keys_list_fits_100_columns(gateway: Gateway) -> None:
    gateway("users", "add", "a-customer-with-a-long-identifier")
    gateway("users", "set-limits", "a-customer-with-a-long-identifier", "5/second,100/hour")
    long_name = "the production key of the mobile app"
    created = ok_json(
        gateway(
            "keys", "create", "--user", "a-customer-with-a-long-identifier", "--name", long_name,
            "--rate-limit", "1000/minute;100000/day;5/second", "--json",
        )
    )  # fmt: skip
    assert isinstance(created, dict)
    listing = gateway("keys", "list").stdout.splitlines()
    assert max(len(line) for line in listing) <= 100, listing
    assert listing[0].split() == ["ID", "PREFIX", "NAME", "USER_ID", "STATUS", "LAST_USED", "RATE_LIMITS"]
    assert listing[1].split()[:2] == [created["id"], created["prefix"]] and "1000/minute;" in listing[1]
    wide = gateway("keys", "list", "--wide").stdout
    assert long_name in wide and "1000/minute;100000/day;5/second" in wide and "REPLACED_BY" in wide
    shown = gateway("keys", "show", created["id"]).stdout
    assert "legacy: no" in shown and "rate_limits: 1000/minute;100000/day;5/second" in shown
    assert "[" not in shown and "False" not in shown and "None" not in shown
    users = gateway("users", "list").stdout
    assert "5/second;100/hour" in users and "[" not in users


def test_deleting_a_user_revokes_its_keys_and_keeps_it_inactive(gateway: Gateway) -> None:
    gateway("users", "add", "alice")
    keys = [ok_json(gateway("keys", "create", "--user", "alice", "--json"))["id"] for _ in range(2)]
    deleted = ok_json(gateway("users", "delete", "alice", "--json"))
    assert (deleted["id"], deleted["subscription"], deleted["revoked_keys"]) == ("alice", "inactive", 2)
    assert [ok_json(gateway("keys", "show", key, "--json"))["status"] for key in keys] == ["revoked", "revoked"]
    assert gateway("users", "delete", "alice").stdout == "user alice: 0 keys revoked, subscription inactive\n"
    fails_with(gateway("users", "delete", "carol"), 1, "no user 'carol'")


def test_user_id_rules(gateway: Gateway) -> None:
    fails_with(gateway("users", "add", "has space"), 1, "printable ASCII characters without spaces")
    fails_with(gateway("users", "add", "x" * 256), 1, "1 to 255")


def test_create_prints_the_key_once(gateway: Gateway, tmp_path: Path) -> None:
    gateway("users", "add", "alice")
    created = ok_json(gateway("keys", "create", "--user", "alice", "--name", "prod", "--expires-in", "30d", "--json"))
    assert isinstance(created, dict)
    assert set(created) == {"id", "key", "prefix", "user_id", "name", "created_at", "expires_at", "rate_limits"}
    assert created["rate_limits"] is None  # rate_limits.default
    key = created["key"]
    assert is_well_formed(key.encode(), b"mk_live_")
    assert created["prefix"] == key[:12] and created["id"].startswith("key_")
    assert (created["user_id"], created["name"]) == ("alice", "prod")
    assert created["expires_at"] is not None

    text = gateway("keys", "create", "--user", "alice").stdout
    assert "This is the only time the key is shown" in text

    for listing in (gateway("keys", "list").stdout, gateway("keys", "list", "--json").stdout):
        assert key not in listing and hash_key(key.encode()) not in listing
        assert created["id"] in listing and created["prefix"] in listing
    listed = ok_json(gateway("keys", "list", "--user", "alice", "--json"))
    assert isinstance(listed, list)
    assert set(listed[0]) == {
        "id", "prefix", "name", "user_id", "status", "created_at", "expires_at", "last_used_at",
        "requests", "rate_limited", "credits", "legacy", "rate_limits", "replaced_by", "metadata",
    }  # fmt: skip
    assert [k["status"] for k in listed] == ["active", "active"]
    with closing(sqlite3.connect(tmp_path / "gateway.db")) as db:
        stored = db.execute("SELECT * FROM api_keys").fetchall()
    assert key not in repr(stored) and hash_key(key.encode()) in repr(stored)


def test_key_errors(gateway: Gateway) -> None:
    fails_with(
        gateway("keys", "create", "--user", "nobody"),
        1,
        "no user 'nobody': add it first with `gateway users add nobody`",
    )
    fails_with(gateway("keys", "create", "--user", "x", "--expires-in", "soon"), 2, "expected a duration")
    fails_with(gateway("keys", "create"), 2, "Missing option '--user'")
    fails_with(gateway("keys", "revoke", "key_nope"), 1, "no key 'key_nope' (see `gateway keys list`)")
    fails_with(gateway("keys", "rotate", "key_nope"), 1, "no key 'key_nope'")
    fails_with(gateway("keys", "list", "--user", "nobody"), 1, "no user 'nobody'")


def test_a_full_key_given_for_an_id_is_never_echoed(gateway: Gateway) -> None:
    gateway("users", "add", "alice")
    key = ok_json(gateway("keys", "create", "--user", "alice", "--json"))["key"]
    for command in ("show", "revoke", "rotate"):
        result = gateway("keys", command, key)
        fails_with(result, 1, "that looks like a full key (mk_live_...), not its id")
        assert key not in result.stderr and key[8:20] not in result.stderr


def test_rotating_twice_is_refused_and_the_replacement_keeps_the_expiry(gateway: Gateway) -> None:
    gateway("users", "add", "alice")
    created = ok_json(gateway("keys", "create", "--user", "alice", "--expires-in", "30d", "--json"))
    assert isinstance(created, dict)
    rotated = ok_json(gateway("keys", "rotate", created["id"], "--grace", "10m", "--json"))
    assert isinstance(rotated, dict) and rotated["expires_at"] == created["expires_at"]
    fails_with(
        gateway("keys", "rotate", created["id"], "--grace", "10m"),
        1,
        f"key {created['id']} was rotated already: its replacement is {rotated['id']}",
    )
    shown = ok_json(gateway("keys", "show", created["id"], "--json"))
    assert isinstance(shown, dict) and shown["replaced_by"] == rotated["id"]
    assert f"replaced_by: {rotated['id']}" in gateway("keys", "show", created["id"]).stdout
    assert len(ok_json(gateway("keys", "list", "--json"))) == 2


def test_a_full_key_is_never_taken_for_a_user_id_nor_echoed(gateway: Gateway) -> None:
    gateway("users", "add", "alice")
    key = ok_json(gateway("keys", "create", "--user", "alice", "--json"))["key"]
    fails_with(gateway("users", "add", key), 1, "that looks like a full key (mk_live_...), not a user id")
    for args in (("keys", "list", "--user", key), ("users", "credits", key), ("usage", "--user", key)):
        result = gateway(*args)
        fails_with(result, 1, "not a user id")
        assert key not in result.stderr and key[8:20] not in result.stderr


def test_numbers_too_large_and_ids_no_user_can_have_are_one_line_errors(gateway: Gateway, tmp_path: Path) -> None:
    gateway("users", "add", "alice")
    fails_with(gateway("users", "credits", "alice", "--add", "9" * 25), 1, "at most 1,000,000,000,000,000 credits")
    fails_with(gateway("users", "credits", "alice\x00"), 1, "no user")
    fails_with(gateway("keys", "show", "key_\x00"), 1, "no key")
    lines = tmp_path / "big.jsonl"
    user = {"type": "user", "id": "bob", "subscription": "active"}
    key = {"type": "key", "user_id": "bob", "prefix": "mk_live_abcd", "sha256": "a" * 64, "requests": 10**23}
    lines.write_text(json.dumps(user) + "\n" + json.dumps(key) + "\n")
    result = gateway("import", str(lines))
    assert result.exit_code == 1 and "Traceback" not in result.stderr + result.stdout
    assert "requests must be a whole number from 0 to" in result.stdout + result.stderr


def test_revoke_twice_and_rotate(gateway: Gateway) -> None:
    gateway("users", "add", "alice")
    created = ok_json(gateway("keys", "create", "--user", "alice", "--name", "ci", "--json"))
    assert isinstance(created, dict)
    rotated = ok_json(gateway("keys", "rotate", created["id"], "--grace", "1h", "--json"))
    assert isinstance(rotated, dict)
    assert rotated["replaces"] == created["id"] and rotated["name"] == "ci" and rotated["key"] != created["key"]
    assert rotated["replaced_key_stops_at"] is not None
    statuses = {k["id"]: k["status"] for k in ok_json(gateway("keys", "list", "--json"))}
    assert statuses == {created["id"]: "active", rotated["id"]: "active"}  # the old one is in its grace period

    first = gateway("keys", "revoke", created["id"])
    assert first.exit_code == 0 and first.stdout == f"revoked key {created['id']}\n"
    second = gateway("keys", "revoke", created["id"])
    assert second.exit_code == 0 and "was already revoked" in second.stdout
    fails_with(gateway("keys", "rotate", created["id"]), 1, f"its replacement is {rotated['id']}")

    text = gateway("keys", "rotate", rotated["id"]).stdout
    assert f"The old key {rotated['id']} stops working now." in text


def test_db_migrate(gateway: Gateway, tmp_path: Path) -> None:
    assert ok_json(gateway("db", "migrate", "--json")) == {"schema_version": SCHEMA_VERSION}
    with closing(sqlite3.connect(tmp_path / "gateway.db")) as db:
        db.execute("PRAGMA user_version = 99")
    message = f"schema version 99, newer than this gateway's {SCHEMA_VERSION}: upgrade the gateway"
    fails_with(gateway("db", "migrate"), 1, message)
    fails_with(gateway("users", "list"), 1, "upgrade the gateway")


def test_missing_store_folder(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path}/nowhere/g.db"}}))
    result = CliRunner().invoke(main, ["users", "list", "--config", str(config)])
    fails_with(result, 1, "does not exist; create it or change store.url")


def test_commands_are_pinned() -> None:
    """The command names are a contract (scripts call them)."""
    assert sorted(main.commands) == ["audit", "db", "export", "import", "keys", "portal", "serve", "usage", "users"]
    groups = {name: sorted(getattr(main.commands[name], "commands", {})) for name in ("db", "keys", "users")}
    assert groups == {
        "db": ["migrate"],
        "keys": ["create", "find", "list", "revoke", "rotate", "set-limits", "show", "update"],
        "users": ["add", "credits", "delete", "list", "set-limits", "set-subscription"],
    }


@pytest.mark.parametrize("group", ["db", "keys", "users"])
def test_each_groups_summary_names_every_subcommand(group: str) -> None:
    result = CliRunner().invoke(main, [group, "--help"])
    summary = result.stdout.split("\n\n")[1]  # the paragraph after the usage line
    assert result.exit_code == 0
    for name in getattr(main.commands[group], "commands", {}):
        assert re.search(rf"\b{re.escape(name)}\b", summary), f"{group} --help does not name {name}: {summary!r}"
    # The top-level help shows that summary for the group.
    assert summary.strip().split(":")[0] in CliRunner().invoke(main, ["--help"]).stdout


def test_rate_limit_options(gateway: Gateway) -> None:
    gateway("users", "add", "alice")
    # A bad value is a usage error, as a bad --expires-in is (exit 2), checked before anything is written.
    fails_with(gateway("keys", "create", "--user", "alice", "--rate-limit", "lots"), 2, "expected limits such as")
    fails_with(gateway("keys", "create", "--user", "alice", "--expires-in", "soon"), 2, "expected a duration")
    fails_with(gateway("keys", "create", "--user", "alice", "--rate-limit", "5/second|1/day"), 2, "expected limits")
    assert ok_json(gateway("keys", "list", "--json")) == []
    created = ok_json(gateway("keys", "create", "--user", "alice", "--rate-limit", "10/minute; 99/day", "--json"))
    assert created["rate_limits"] == ["10/minute", "99/day"]
    # "," separates limits as ";" does: two limits, not one item holding both.
    comma = ok_json(gateway("keys", "create", "--user", "alice", "--rate-limit", "5/second,100/hour", "--json"))
    assert comma["rate_limits"] == ["5/second", "100/hour"]
    user = ok_json(gateway("users", "set-limits", "alice", "50/second, 1000/hour", "--json"))
    assert user["rate_limits"] == ["50/second", "1000/hour"]
    fails_with(gateway("users", "set-limits", "alice", "many"), 2, "expected limits such as")
    fails_with(gateway("keys", "set-limits", created["id"]), 2, "either limits such as")
    fails_with(gateway("keys", "set-limits", created["id"], "5/minute", "--default"), 2, "either limits such as")
    shown = ok_json(gateway("keys", "show", created["id"], "--json"))
    assert (shown["requests"], shown["rate_limited"], shown["credits"]) == (0, 0, 0)
    assert (
        "rate_limits: the default"
        in gateway(
            "keys", "show", ok_json(gateway("keys", "set-limits", created["id"], "--default", "--json"))["id"]
        ).stdout
    )
    fails_with(gateway("usage", "--user", "nobody"), 1, "no user 'nobody'")
    assert ok_json(gateway("usage", "--json")) == [
        {
            "user_id": "alice",
            "requests": 0,
            "rate_limited": 0,
            "credits": 0,
            "last_used_at": None,
            "legacy_keys": 0,
            "legacy_last_used_at": None,
        }
    ]


def test_keys_find_names_a_leaked_keys_owner_without_echoing_it(gateway: Gateway, config_path: Path) -> None:
    gateway("users", "add", "alice")
    created = ok_json(gateway("keys", "create", "--user", "alice", "--name", "ci", "--json"))
    assert isinstance(created, dict)
    result = CliRunner().invoke(
        main, ["keys", "find", "--json", "--config", str(config_path)], input=created["key"] + "\n"
    )
    found = json.loads(result.stdout)
    assert result.exit_code == 0 and (found["id"], found["user_id"]) == (created["id"], "alice")
    assert created["key"] not in result.stdout + result.stderr
    other = CliRunner().invoke(main, ["keys", "find", "--config", str(config_path)], input="mk_live_" + "A" * 46 + "\n")
    fails_with(other, 1, "no stored key is that key")
    assert "AAAA" not in other.stderr


def test_a_key_is_updated_and_every_change_is_in_the_audit(gateway: Gateway) -> None:
    ok_json(gateway("users", "add", "alice", "--json"))
    key_id = ok_json(gateway("keys", "create", "--user", "alice", "--name", "prod", "--json"))["id"]

    updated = ok_json(gateway("keys", "update", key_id, "--metadata", '{"plan": "pro"}', "--name", "web", "--json"))
    assert (updated["name"], updated["metadata"]) == ("web", {"plan": "pro"})
    assert 'metadata: {"plan":"pro"}' in gateway("keys", "show", key_id).stdout
    assert ok_json(gateway("keys", "update", key_id, "--expires-at", "2031-01-01", "--json"))["expires_at"] == (
        "2031-01-01T00:00:00Z"
    )
    cleared = ok_json(gateway("keys", "update", key_id, "--expires-at", "never", "--metadata", "null", "--json"))
    assert (cleared["expires_at"], cleared["metadata"]) == (None, None)

    fails_with(gateway("keys", "update", key_id), 2, "give what to change")
    fails_with(gateway("keys", "update", key_id, "--metadata", "{oops"), 2, "expected a JSON object")
    fails_with(gateway("keys", "update", key_id, "--metadata", "[1]"), 2, "expected a JSON object")
    fails_with(gateway("keys", "update", key_id, "--expires-at", "soon"), 2, "expected a time")

    events = ok_json(gateway("audit", "--target", key_id, "--json"))
    assert [event["action"] for event in events] == ["key.update", "key.update", "key.update", "key.create"]
    assert {event["actor"] for event in events} == {f"cli:{getpass.getuser()}"}
    text = gateway("audit", "--action", "key.update").stdout
    assert "name: prod -> web" in text and 'metadata: - -> {"plan":"pro"}' in text
    fails_with(gateway("audit", "--since", "yesterday"), 2, "expected a time")
