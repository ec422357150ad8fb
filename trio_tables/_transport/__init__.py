"""Transports: how trio_tables talks to Kafka (or to the in-process broker).

``open_transport(url)`` picks the implementation from the URL scheme:

* ``kafka://host:port[,host:port...]``: a Kafka cluster through kafka-python;
* ``memory://[name]``: the in-process broker of that name (``memory://`` is the
  process-wide default broker; the same name always means the same broker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..errors import UnsupportedBrokerURL
from ._base import TP, Record, RecordMetadata, Transport

__all__ = ["TP", "Record", "RecordMetadata", "Transport", "open_transport"]


@asynccontextmanager
async def open_transport(url: str, **options: Any) -> AsyncIterator[Transport]:
    """Connect to the broker at ``url`` for the duration of the block.

    ``options`` are transport settings: for Kafka, the fields of
    :class:`~trio_tables._transport._kafka.KafkaSettings` (``connect_timeout``,
    ``client_id``, SASL/TLS options, ``session_timeout_ms``, ...), for memory, those of
    :func:`~trio_tables._transport._memory.open_memory_transport`.

    Raises :class:`~trio_tables.errors.BrokerUnavailable` if no broker answers within
    ``connect_timeout`` and :class:`~trio_tables.errors.UnsupportedBrokerURL` for an
    unknown scheme. Cancellation while connecting leaves nothing open.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UnsupportedBrokerURL(url)
    if scheme == "kafka":
        from ._kafka import open_kafka_transport

        async with open_kafka_transport(rest, **options) as transport:
            yield transport
    elif scheme == "memory":
        from ._memory import open_memory_transport

        async with open_memory_transport(rest or "default", **options) as transport:
            yield transport
    else:
        raise UnsupportedBrokerURL(url)
