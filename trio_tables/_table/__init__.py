"""Tables: ``Collection`` (shared machinery) and ``Table``."""

from __future__ import annotations

from ._collection import Collection, RecoveryRequest
from ._table import Table

__all__ = ["Collection", "RecoveryRequest", "Table"]
