"""The admin API's JSON bodies are small documents: one past 1 MiB is refused with 413 in the
error envelope before it is held whole, and the OpenAPI document says so where a body is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.accounting.metrics import Metrics
from gateway.admin.api import create_admin_app
from gateway.admin.routing import MAX_JSON_BODY
from gateway.config import load_config
from tests.inprocess import Lifespan

TOKEN = "bodies-admin-token-0123456789"


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path}/g.db"}}))
    app = create_admin_app(load_config(tmp_path / "gateway.yaml", environ={"GATEWAY_ADMIN_TOKEN": TOKEN}), Metrics())
    lifespan = Lifespan(app)
    await lifespan.start()
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a", headers=headers) as c:
        yield c
    await lifespan.stop()


async def test_a_json_body_past_the_limit_is_a_413_in_the_envelope(admin: httpx.AsyncClient) -> None:
    padding = " " * MAX_JSON_BODY
    refused = await admin.post("/admin/v1/users", content=f'{{"id": "alice"{padding}}}')
    assert refused.status_code == 413
    assert refused.json() == {
        "error": {
            "code": "payload_too_large",
            "message": "the request body is larger than 1024 KiB, the most a JSON body of this API may be",
        }
    }
    assert (await admin.get("/admin/v1/users/alice")).status_code == 404  # nothing was made
    # Just under it, the same document is read (JSON allows the whitespace).
    within = " " * (MAX_JSON_BODY - 20)
    assert (await admin.post("/admin/v1/users", content=f'{{"id": "alice"{within}}}')).status_code == 201


async def test_an_import_streams_past_the_limit(admin: httpx.AsyncClient) -> None:
    lines = "".join(f'{{"type": "user", "id": "user-{n:07d}", "subscription": "active"}}\n' for n in range(25_000))
    assert len(lines) > MAX_JSON_BODY
    answer = await admin.post("/admin/v1/import?dry_run=true", content=lines)
    assert answer.status_code == 200, answer.text


async def test_the_document_names_the_413_where_a_body_is_read(admin: httpx.AsyncClient) -> None:
    paths = (await admin.get("/admin/v1/openapi.json")).json()["paths"]
    assert "413" in paths["/admin/v1/users"]["post"]["responses"]
    assert "413" in paths["/admin/v1/keys/{key_id}"]["patch"]["responses"]
    assert "413" not in paths["/admin/v1/users"]["get"]["responses"]
