"""Adopting an existing deployment: users and the key hashes of an earlier system imported with
`gateway import`, then every old key authenticates through a real gateway, as it did before."""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth.keys import is_well_formed
from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, cli_json, gateway_cli
from tests.services import postgres_schema

ALPHABET = string.ascii_letters + string.digits
LEGACY = {"keys": {"legacy_prefixes": ["mk_live_", "mpa_"]}}


def old_key(prefix: str, length: int) -> str:
    """A key as the earlier systems made them: a prefix and random characters, no checksum."""
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))


def key_line(key: str, user_id: str, **fields: Any) -> dict[str, Any]:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return {"type": "key", "user_id": user_id, "sha256": digest, "prefix": key[: key.index("_", 3) + 5]} | fields


def write_lines(path: Path, records: list[dict[str, Any]], bad: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(record) for record in records]
    for index, text in (bad or {}).items():
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def import_file(gw: GatewayProcess, path: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return gateway_cli(gw.config_path, "import", str(path), *args)


def identity(gw: GatewayProcess, key: str) -> tuple[int, str | None, str | None]:
    answer = httpx.get(f"{gw.url}/__stub/echo", headers={"Authorization": f"Bearer {key}"})
    if answer.status_code != 200:
        return answer.status_code, None, None
    headers = dict((name.lower(), value) for name, value in answer.json()["headers"])
    return 200, headers["x-user-id"], headers["x-api-key-id"]


@pytest.fixture
def old_system(tmp_path: Path) -> dict[str, Any]:
    """An earlier deployment's users and keys, in both old formats."""
    keys = {
        "acme": old_key("mk_live_", 32),
        "bolt": old_key("mpa_", 40),
        "revoked": old_key("mk_live_", 32),
        "lapsed": old_key("mpa_", 40),
    }
    records = [
        {"type": "user", "id": "acme", "subscription": "active", "created_at": "2024-03-01T09:00:00Z"},
        {"type": "user", "id": "bolt", "subscription": "active"},
        {"type": "user", "id": "gone", "subscription": "inactive"},
        key_line(keys["acme"], "acme", name="ci", requests=120, credits=7, last_used_at="2026-11-01T00:00:00Z"),
        key_line(keys["bolt"], "bolt", id="k_bolt_1", created_at=1700000000),
        key_line(keys["revoked"], "acme", revoked_at="2026-01-01T00:00:00Z"),
        key_line(keys["lapsed"], "gone"),
    ]
    return {"keys": keys, "records": records, "file": write_lines(tmp_path / "old.jsonl", records)}


def test_every_old_key_works_after_the_import(gateway_factory: GatewayFactory, old_system: dict[str, Any]) -> None:
    gw = gateway_factory(LEGACY)
    dry = import_file(gw, old_system["file"], "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["written"] is False
    assert identity(gw, old_system["keys"]["acme"])[0] == 401  # nothing was written

    done = import_file(gw, old_system["file"], "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["users"] == {"created": 3, "updated": 0, "unchanged": 0}
    assert report["keys"] == {"created": 4, "updated": 0, "unchanged": 0}
    assert report["written"] is True and report["errors"] == []

    keys = old_system["keys"]
    status, user, acme_id = identity(gw, keys["acme"])
    assert (status, user) == (200, "acme") and acme_id is not None
    assert identity(gw, keys["bolt"]) == (200, "bolt", "k_bolt_1")
    # One character changed, anywhere: the invalid-key answer.
    for i in (len("mk_live_"), len(keys["acme"]) - 1):
        changed = keys["acme"][:i] + ("a" if keys["acme"][i] != "a" else "b") + keys["acme"][i + 1 :]
        assert identity(gw, changed)[0] == 401
    assert identity(gw, keys["revoked"])[0] == 401
    lapsed = httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {keys['lapsed']}"})
    assert lapsed.status_code == 403 and lapsed.json()["error"]["code"] == "subscription_inactive"

    # Usage counts on from the imported figures.
    gw.stop()  # writes what it counted
    shown = cli_json(gw, "keys", "show", acme_id)
    assert shown["requests"] == 120 + 1 and shown["credits"] == 7
    listed = {key["id"]: key for key in cli_json(gw, "keys", "list", "--user", "acme")}
    assert listed[acme_id]["legacy"] is True and listed[acme_id]["prefix"] == keys["acme"][:12]
    assert "LEGACY" in gateway_cli(gw.config_path, "keys", "list", "--wide").stdout.splitlines()[0]
    # Which old keys are still in use: acme's one that is not revoked, used just now.
    [acme_usage] = cli_json(gw, "usage", "--user", "acme")
    assert acme_usage["legacy_keys"] == 1 and acme_usage["legacy_last_used_at"] is not None
    [alice_usage] = cli_json(gw, "usage", "--user", gw.user_id)
    assert alice_usage["legacy_keys"] == 0 and alice_usage["legacy_last_used_at"] is None

    # The same file again changes nothing, and loses nothing counted since.
    again = import_file(gw, old_system["file"], "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["keys"] == {"created": 0, "updated": 0, "unchanged": 4}
    assert json.loads(again.stdout)["users"] == {"created": 0, "updated": 0, "unchanged": 3}
    assert cli_json(gw, "keys", "show", acme_id)["requests"] == 121

    # Rotating an old key mints one of ours, checksum and all.
    rotated = cli_json(gw, "keys", "rotate", "k_bolt_1")
    assert is_well_formed(rotated["key"].encode(), b"mk_live_")
    assert cli_json(gw, "keys", "show", rotated["id"])["legacy"] is False


def test_what_changed_since_is_updated(
    gateway_factory: GatewayFactory, old_system: dict[str, Any], tmp_path: Path
) -> None:
    gw = gateway_factory(LEGACY)
    assert import_file(gw, old_system["file"]).returncode == 0
    records = [dict(record) for record in old_system["records"]]
    records[0]["subscription"] = "inactive"  # acme's subscription lapsed since
    records[4]["revoked_at"] = "2026-11-20T00:00:00Z"  # bolt's key was revoked since
    done = import_file(gw, write_lines(tmp_path / "later.jsonl", records), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["users"] == {"created": 0, "updated": 1, "unchanged": 2}
    assert report["keys"] == {"created": 0, "updated": 1, "unchanged": 3}
    assert identity(gw, old_system["keys"]["bolt"])[0] == 401
    assert identity(gw, old_system["keys"]["acme"])[0] == 403


def test_one_bad_line_writes_nothing_and_is_named(
    gateway_factory: GatewayFactory, old_system: dict[str, Any], tmp_path: Path
) -> None:
    gw = gateway_factory(LEGACY)
    records = old_system["records"] + [key_line(old_key("mpa_", 40), "nobody")]
    bad = {2: '{"type": "key", "user_id": "acme", "sha256": "XYZ", "prefix": "mpa_abcd"}'}
    path = write_lines(tmp_path / "bad.jsonl", records, bad)
    done = import_file(gw, path)
    assert done.returncode == 1
    assert "line 3: sha256 must be 64 lowercase hexadecimal characters" in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("nothing was written: fix them and run the import again")
    assert [user["id"] for user in cli_json(gw, "users", "list")] == [gw.user_id]

    # The whole-file checks: an unknown user and a duplicate, each named by its line.
    records = old_system["records"] + [
        key_line(old_system["keys"]["bolt"], "bolt"),
        key_line(old_key("mpa_", 40), "nobody"),
    ]
    done = import_file(gw, write_lines(tmp_path / "bad2.jsonl", records))
    assert done.returncode == 1
    assert "line 8: duplicate: a key with this sha256 is on line 5 already" in done.stderr
    assert "line 9: user 'nobody' is neither in the file nor in the store" in done.stderr
    assert [user["id"] for user in cli_json(gw, "users", "list")] == [gw.user_id]


def test_an_unknown_field_and_stdin(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(LEGACY)
    line = json.dumps({"type": "user", "id": "x", "subscription": "active", "plan": "gold"}) + "\n"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "import", "-", "--config", str(gw.config_path)],
        input=line,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "line 1: unknown field 'plan' for a user" in done.stderr


def test_export_from_sqlite_into_postgres(gateway_factory: GatewayFactory, old_system: dict[str, Any]) -> None:
    source = gateway_factory(LEGACY)
    assert import_file(source, old_system["file"]).returncode == 0
    assert gateway_cli(source.config_path, "users", "set-limits", "acme", "7/minute;500/day").returncode == 0
    metadata = gateway_cli(source.config_path, "keys", "update", "k_bolt_1", "--metadata", '{"plan": "pro"}')
    assert metadata.returncode == 0, metadata.stderr
    exported = gateway_cli(source.config_path, "export")
    assert '"rate_limits":"7/minute;500/day"' in exported.stdout  # a user's own limits travel too
    assert '"metadata":{"plan":"pro"}' in exported.stdout  # and a key's metadata
    assert exported.returncode == 0 and "exported 4 users and 5 keys" in exported.stderr

    with postgres_schema() as url:
        target = gateway_factory(LEGACY | {"store": {"url": url}})
        moved = subprocess.run(
            [sys.executable, "-m", "gateway", "import", "-", "--json", "--config", str(target.config_path)],
            input=exported.stdout,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert moved.returncode == 0, moved.stderr
        # The target had a user alice of its own, with a key: the source's alice is unchanged.
        assert json.loads(moved.stdout)["keys"]["created"] == 5
        # A round trip leaves the store equal: what it exports is what came in (alice aside).
        # Before any request: usage counted afterwards would rightly differ.
        again = gateway_cli(target.config_path, "export").stdout.splitlines()
        assert sorted(line for line in again if "alice" not in line) == sorted(
            line for line in exported.stdout.splitlines() if "alice" not in line
        )
        for name in ("acme", "bolt"):
            assert identity(target, old_system["keys"][name])[:2] == (200, name)
        assert identity(target, old_system["keys"]["revoked"])[0] == 401
        target.stop()


def test_the_admin_api_imports_the_same_lines(gateway_factory: GatewayFactory, old_system: dict[str, Any]) -> None:
    gw = gateway_factory(LEGACY, admin=True)
    admin = {"Authorization": f"Bearer {gw.ADMIN_TOKEN}", "Content-Type": "application/x-ndjson"}
    body = old_system["file"].read_bytes()
    bad = body + b'{"type": "user", "id": "late"}\n'
    refused = httpx.post(f"{gw.admin_url}/admin/v1/import", content=bad, headers=admin)
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{"line": 8, "message": "a subscription is active or inactive"}]
    assert refused.json()["written"] is False
    assert identity(gw, old_system["keys"]["bolt"])[0] == 401

    checked = httpx.post(f"{gw.admin_url}/admin/v1/import?dry_run=true", content=body, headers=admin)
    assert checked.status_code == 200 and checked.json()["keys"]["created"] == 4 and not checked.json()["written"]

    # Streamed in pieces that split lines anywhere.
    pieces = (body[i : i + 100] for i in range(0, len(body), 100))
    done = httpx.post(f"{gw.admin_url}/admin/v1/import", content=pieces, headers=admin)
    assert done.status_code == 200, done.text
    assert done.json()["keys"] == {"created": 4, "updated": 0, "unchanged": 0} and done.json()["written"]
    assert identity(gw, old_system["keys"]["bolt"]) == (200, "bolt", "k_bolt_1")


def test_an_import_never_gives_back_what_the_store_took_away(
    gateway_factory: GatewayFactory, old_system: dict[str, Any], tmp_path: Path
) -> None:
    gw = gateway_factory(LEGACY)
    assert import_file(gw, old_system["file"]).returncode == 0
    # Its own export, imported again, changes nothing: dates go out exactly as stored.
    exported = tmp_path / "export.jsonl"
    exported.write_text(gateway_cli(gw.config_path, "export").stdout)
    again = json.loads(import_file(gw, exported, "--json").stdout)
    assert again["keys"]["updated"] == 0 and again["users"]["updated"] == 0

    # A rotation with grace gives the old key an expiry; the old file, imported again, has none.
    rotated = cli_json(gw, "keys", "rotate", "k_bolt_1", "--grace", "1h")
    assert rotated["replaced_key_stops_at"] is not None
    assert import_file(gw, old_system["file"]).returncode == 0
    assert cli_json(gw, "keys", "show", "k_bolt_1")["expires_at"] == rotated["replaced_key_stops_at"]

    # A key never changes owner; dates in milliseconds are refused, not taken for the year 50000.
    records = [dict(record) for record in old_system["records"]]
    records[4]["user_id"] = "acme"
    records[3]["last_used_at"] = 1_700_000_000_000
    done = import_file(gw, write_lines(tmp_path / "moved.jsonl", records))
    assert done.returncode == 1
    assert "line 4: last_used_at is not between 1970 and 9999 (milliseconds instead of seconds?)" in done.stderr
    records[3].pop("last_used_at")
    done = import_file(gw, write_lines(tmp_path / "moved.jsonl", records))
    assert "line 5: this key belongs to user 'bolt' in the store; a key never changes owner" in done.stderr


def test_metadata_is_checked_and_a_line_without_it_keeps_the_stored(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_factory(LEGACY)
    key = old_key("mk_live_", 32)
    users = [{"type": "user", "id": "acme", "subscription": "active"}]
    first = write_lines(tmp_path / "first.jsonl", [*users, key_line(key, "acme", id="k1", metadata={"plan": "pro"})])
    assert import_file(gw, first).returncode == 0
    again = write_lines(tmp_path / "again.jsonl", [*users, key_line(key, "acme", id="k1")])
    assert import_file(gw, again).returncode == 0
    assert cli_json(gw, "keys", "show", "k1")["metadata"] == {"plan": "pro"}
    bad = write_lines(
        tmp_path / "bad.jsonl",
        [
            *users,
            key_line(old_key("mk_live_", 32), "acme", metadata=["not", "an", "object"]),
            key_line(old_key("mk_live_", 32), "acme", metadata={"leaked": "Bearer " + old_key("mk_live_", 32)}),
        ],
    )
    refused = import_file(gw, bad)
    assert refused.returncode != 0
    assert "line 2: metadata is a JSON object" in refused.stderr
    assert "line 3: metadata must not hold a key" in refused.stderr


def test_every_bad_line_is_counted(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = gateway_factory(LEGACY)
    user = {"type": "user", "id": "same", "subscription": "active"}
    done = import_file(gw, write_lines(tmp_path / "many.jsonl", [user] * 30), "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["error_count"] == 29 and len(report["errors"]) == 20
    assert report["errors"][0] == {"line": 2, "message": "duplicate: the user is on line 1 already"}
