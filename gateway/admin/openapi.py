"""The admin API's OpenAPI 3.1 document, served at ``/admin/v1/openapi.json`` without the token.

FastAPI writes it from the routes (``api.py``) and the models that check every request and answer
(``models.py``), so the document and the checks cannot disagree. Added here is only what FastAPI
cannot see: the bearer token that ``token.AdminToken`` requires, declared for the whole API and
lifted (``security: []``, no 401) where ``token.needs_token`` says it is not needed, and the tags'
descriptions. CI runs schemathesis against the served document (tests/test_admin_openapi.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.admin.token import needs_token

__all__ = ["TAGS", "document"]

TAGS = [
    {"name": "users", "description": "Users (the operator's own ids), their subscription, limits and credits"},
    {"name": "keys", "description": "API keys: created, listed, revoked, rotated; never shown again after creation"},
    {"name": "usage", "description": "Requests, refusals and credits, per user or per key and UTC day"},
    {"name": "audit", "description": "Every change to users and keys: when, who, how, what, before and after"},
    {"name": "import", "description": "Users and key hashes of an existing deployment, as gateway import reads them"},
    {"name": "health", "description": "Probes for orchestrators: no token needed"},
    {"name": "metrics", "description": "Prometheus metrics, behind the token unless metrics.public"},
]


def document(app: FastAPI, *, public_metrics: bool) -> dict[str, Any]:
    """The document of ``app``'s routes, for a listener whose /metrics is public or not."""
    written = get_openapi(
        title="API key gateway: admin API",
        version="1",
        description='The JSON API of the gateway\'s admin listener (see the README, "The admin API").',
        routes=app.routes,
        tags=TAGS,
    )
    written.setdefault("components", {})["securitySchemes"] = {"adminToken": {"type": "http", "scheme": "bearer"}}
    written["security"] = [{"adminToken": []}]
    for path, operations in written["paths"].items():
        if not needs_token(path, public_metrics=public_metrics):
            for operation in operations.values():
                operation["security"] = []
                operation["responses"].pop("401", None)
    return written
