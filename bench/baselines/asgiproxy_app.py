"""Published plain-proxy baseline: asgiproxy (PyPI, pinned in bench/requirements.txt), used as is.

Set up exactly as its own CLI (`python -m asgiproxy URL`) does, through its `make_app`:
BaseURLProxyConfigMixin with the Host header rewritten to the upstream's, ProxyContext defaults
(aiohttp client, max_concurrency=20: at most 20 upstream requests in flight, the rest wait on a
semaphore). Note that it buffers responses that have a Content-Length up to 5 MiB.

Run: uvicorn baselines.asgiproxy_app:app --app-dir bench. Env: BENCH_UPSTREAM.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:18080").rstrip("/")

# Imported by name: asgiproxy lives only in bench/.venv, and the project's type check runs in
# the project's own environment, where a plain import would not resolve.
_asgiproxy_cli = importlib.import_module("asgiproxy.__main__")
app: Any
app, _context = _asgiproxy_cli.make_app(upstream_base_url=UPSTREAM + "/")
