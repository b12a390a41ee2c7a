"""The ``gateway`` command line: the entry point, the operator's commands, import and export."""

from __future__ import annotations

from gateway.cli.entry import main

__all__ = ["main"]
