"""Logging set-up for ``gateway serve``: named channels, one line per record, as text or JSON.

Channels: ``gateway`` (what the gateway is doing: started, stopping, workers), ``gateway.error``
(what went wrong and what the gateway did about it), plus uvicorn's own ``uvicorn.error``, less
the lines each of its servers repeats (see ``DropServerLifecycle``). Never log a request's
headers or body: they carry keys.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from gateway.errors import UpstreamAborted

__all__ = ["DropServerLifecycle", "DropUpstreamAborted", "JsonLines", "logging_config"]


class DropUpstreamAborted(logging.Filter):
    """Drops uvicorn's traceback for a response the gateway broke off on purpose.

    The proxy raises ``UpstreamAborted`` to make uvicorn close the client connection (the only
    way ASGI offers) and has already logged one line saying why.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        return not (exc_info and isinstance(exc_info[1], UpstreamAborted))


# What each uvicorn server of a process says of its start and stop (a process serves two: the
# public and the admin listener): the gateway says it once per process instead (server/signals.py).
_LIFECYCLE = frozenset(
    {
        "Started server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
        "Shutting down",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process [%d]",
    }
)


class DropServerLifecycle(logging.Filter):
    """Drops uvicorn's per-server start and stop lines (``_LIFECYCLE``); its failures stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "uvicorn.error" and record.msg in _LIFECYCLE)


class JsonLines(logging.Formatter):
    """One JSON object per record: ts (UTC, milliseconds, as the access log's), level, logger,
    pid, message, and exception (the traceback) when there is one. Strings are JSON-escaped, so a
    message cannot forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        entry: dict[str, Any] = {
            "ts": f"{stamp}.{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config``: lines as ``log_format``
    (``text`` or ``json``, logging.format) on stderr."""
    formatters: dict[str, Any] = {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": JsonLines},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"drop_aborted": {"()": DropUpstreamAborted}, "drop_lifecycle": {"()": DropServerLifecycle}},
        "formatters": {"line": formatters[log_format]},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
                "filters": ["drop_aborted", "drop_lifecycle"],
            }
        },
        "loggers": {
            "gateway": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }
