"""trio_tables: changelog-backed, partitioned key/value tables on Kafka for Trio."""

from __future__ import annotations

from . import errors
from ._transport import open_transport
from ._transport._base import TP, Record, RecordMetadata

__all__ = ["TP", "Record", "RecordMetadata", "errors", "open_transport"]

__version__ = "0.1.0.dev0"
