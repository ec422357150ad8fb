"""trio_tables: changelog-backed, partitioned key/value tables on Kafka for Trio."""

from __future__ import annotations

from . import errors
from ._asyncio import asyncio_callback
from ._batch import Batch
from ._manager import TableManager
from ._stream import Event, Stream, current_event
from ._table import (
    Collection,
    GlobalSetTable,
    GlobalTable,
    SetTable,
    SetValue,
    Table,
    WindowSet,
    WindowWrapper,
)
from ._transport import open_transport
from ._transport._base import TP, Record, RecordMetadata
from ._types import CollectionT, GlobalTableT, TableManagerT, TableT
from ._windows import HoppingWindow, SlidingWindow, TumblingWindow, Window

__all__ = [
    "TP",
    "Batch",
    "Collection",
    "CollectionT",
    "Event",
    "GlobalSetTable",
    "GlobalTable",
    "GlobalTableT",
    "HoppingWindow",
    "Record",
    "RecordMetadata",
    "SetTable",
    "SetValue",
    "SlidingWindow",
    "Stream",
    "Table",
    "TableManager",
    "TableManagerT",
    "TableT",
    "TumblingWindow",
    "Window",
    "WindowSet",
    "WindowWrapper",
    "asyncio_callback",
    "current_event",
    "errors",
    "open_transport",
]

__version__ = "0.1.0.dev0"
