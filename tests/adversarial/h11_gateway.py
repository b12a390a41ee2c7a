"""The gateway's app for a plain ``uvicorn --http h11 --factory`` run: the framing suite runs
against uvicorn's other parser too, to show why the gateway ships httptools."""

from __future__ import annotations

from gateway.config import load_config
from gateway.http.app import GatewayApp, create_app


def create() -> GatewayApp:
    return create_app(load_config())  # the file named by GATEWAY_CONFIG
