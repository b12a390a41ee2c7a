"""An API-key authentication gateway in front of an HTTP API."""

from __future__ import annotations

__version__ = "0.1.0"
