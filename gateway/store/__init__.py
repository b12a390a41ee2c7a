"""Where users and keys are kept: the contract (``base``), the backends (``sqlite``,
``postgres``) with their ``schema``, ``changes`` and ``staging``, and the chooser (``connect``).

The contract and ``open_store`` are re-exported here, as ``gateway.store``."""

from __future__ import annotations

from gateway.store.base import *  # noqa: F403
from gateway.store.base import __all__ as _base_all
from gateway.store.connect import open_store

__all__ = [*_base_all, "open_store"]
