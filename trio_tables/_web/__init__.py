"""A worker's HTTP endpoint: metrics, status and table queries (the ``web`` extra).

Imported only when a manager serves it (``TableManager(web_port=...)`` or
``manager.serve_web()``), so the core runs without prometheus-client and hypercorn;
:func:`load` raises :class:`~trio_tables.errors.MissingExtra` naming the extra when
they are not installed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtra

__all__ = ["load"]


def load() -> ModuleType:
    """The serving module (:mod:`._serve`), after checking the extra's packages."""
    for module in ("prometheus_client", "hypercorn", "h11"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtra("web", module, "the worker's HTTP endpoint") from exc
    return importlib.import_module("trio_tables._web._serve")
