"""Tables: ``Collection`` (shared machinery) and ``Table``."""

from __future__ import annotations

from ._collection import Collection, RecoveryRequest, StandbyUpdate
from ._global import GlobalTable
from ._partition import PersistBatch
from ._set import GlobalSetTable, SetTable, SetValue
from ._table import Table
from ._windowed import WindowSet, WindowWrapper

__all__ = [
    "Collection",
    "GlobalSetTable",
    "GlobalTable",
    "PersistBatch",
    "RecoveryRequest",
    "SetTable",
    "SetValue",
    "StandbyUpdate",
    "Table",
    "WindowSet",
    "WindowWrapper",
]
