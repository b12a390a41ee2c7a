"""The admin API against its own OpenAPI document, with schemathesis: every operation, valid and
invalid inputs, over a real socket. No answer may be a 500, and every answer must match the
document (status, content type, schema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({}, admin=True)


def test_the_document_is_served_without_the_token(gw: GatewayProcess) -> None:
    document = httpx.get(f"{gw.admin_url}/admin/v1/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {"/admin/v1/users", "/admin/v1/keys", "/admin/v1/keys/{key_id}/rotate"}


def test_schemathesis_finds_no_server_error_and_no_mismatch(gw: GatewayProcess, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    done = subprocess.run(
        [
            st,
            "run",
            f"{gw.admin_url}/admin/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {GatewayProcess.ADMIN_TOKEN}",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Traceback" not in gw.log


TAGS = {"users", "keys", "usage", "audit", "import", "health", "metrics"}


def test_every_operation_has_a_summary_a_tag_and_its_errors_in_the_envelope(gw: GatewayProcess) -> None:
    document = httpx.get(f"{gw.admin_url}/admin/v1/openapi.json").json()
    assert {tag["name"] for tag in document["tags"]} == TAGS
    operations = [(path, op) for path, ops in document["paths"].items() for op in ops.values()]
    assert len(operations) == 26
    for path, operation in operations:
        assert operation["summary"] and len(operation["tags"]) == 1 and operation["tags"][0] in TAGS, path
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")) and path != "/readyz":
                schema = answer["content"]["application/json"]["schema"]
                assert "Error" in str(schema), (path, status)
    assert len({op["operationId"] for _, op in operations}) == len(operations)
    # FastAPI's own 422 format is never answered, so never documented.
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    assert document["components"]["securitySchemes"] == {"adminToken": {"type": "http", "scheme": "bearer"}}
    assert document["security"] == [{"adminToken": []}]


def test_the_probes_and_metrics_are_in_the_document(gw: GatewayProcess, gateway_factory: GatewayFactory) -> None:
    paths = httpx.get(f"{gw.admin_url}/admin/v1/openapi.json").json()["paths"]
    for probe in ("/healthz", "/readyz"):
        assert paths[probe]["get"]["security"] == [] and "401" not in paths[probe]["get"]["responses"]
    metrics = paths["/metrics"]["get"]
    assert "security" not in metrics and "401" in metrics["responses"]  # the token, as for the API
    assert metrics["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    public = gateway_factory({"metrics": {"public": True}}, admin=True)
    public_metrics = httpx.get(f"{public.admin_url}/admin/v1/openapi.json").json()["paths"]["/metrics"]["get"]
    assert public_metrics["security"] == [] and "401" not in public_metrics["responses"]
    assert httpx.get(f"{public.admin_url}/metrics").status_code == 200


def test_the_subscription_is_documented_by_its_name_and_status_as_deprecated(gw: GatewayProcess) -> None:
    schemas = httpx.get(f"{gw.admin_url}/admin/v1/openapi.json").json()["components"]["schemas"]
    change = schemas["SubscriptionChange"]["properties"]
    assert change["subscription"]["enum"] == ["active", "inactive"] and "deprecated" not in change["subscription"]
    assert change["status"]["deprecated"] is True
    assert schemas["User"]["properties"]["subscription"]["enum"] == ["active", "inactive"]


def test_no_page_loads_assets_from_another_host(gw: GatewayProcess) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{gw.admin_url}{path}").status_code == 404
