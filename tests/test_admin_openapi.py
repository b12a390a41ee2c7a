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
