"""Logging set-up for ``gateway serve``: named channels, one line per record.

Channels: ``gateway.error`` (what went wrong and what the gateway did about it), plus uvicorn's
own ``uvicorn.error``. Never log a request's headers or body: they carry keys.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.errors import UpstreamAborted

__all__ = ["DropUpstreamAborted", "logging_config"]


class DropUpstreamAborted(logging.Filter):
    """Drops uvicorn's traceback for a response the gateway broke off on purpose.

    The proxy raises ``UpstreamAborted`` to make uvicorn close the client connection (the only
    way ASGI offers) and has already logged one line saying why.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        return not (exc_info and isinstance(exc_info[1], UpstreamAborted))


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"drop_aborted": {"()": DropUpstreamAborted}},
        "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
                "filters": ["drop_aborted"],
            }
        },
        "loggers": {
            "gateway": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }
