"""Transports: how trio_tables talks to Kafka (or to the in-process broker).

``open_transport(url)`` picks the implementation from the URL scheme:

* ``kafka://host:port[,host:port...][?name=value&...]``: a Kafka cluster through
  kafka-python; the query sets :class:`~.kafka._transport.KafkaSettings` fields (e.g.
  ``?session_timeout_ms=6000&heartbeat_interval_ms=1000``, see :mod:`._url`);
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
    :class:`~trio_tables._transport.kafka._transport.KafkaSettings` (``connect_timeout``,
    ``client_id``, SASL/TLS options, ``session_timeout_ms``, ...), for memory, those of
    :func:`~trio_tables._transport.memory._transport.open_memory_transport`. Settings in a
    ``kafka://`` URL's query take precedence over ``options`` (the URL is usually what
    the deployment configures).

    Raises :class:`~trio_tables.errors.BrokerUnavailable` if no broker answers within
    ``connect_timeout``, :class:`~trio_tables.errors.UnsupportedBrokerURL` for an
    unknown scheme and :class:`~trio_tables.errors.InvalidBrokerURL` for settings in
    the URL that do not exist or do not fit. Cancellation while connecting leaves
    nothing open.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise UnsupportedBrokerURL(url)
    if scheme == "kafka":
        from ._url import split_kafka_url
        from .kafka._transport import open_kafka_transport

        servers, settings = split_kafka_url(url)
        async with open_kafka_transport(servers, **{**options, **settings}) as transport:
            yield transport
    elif scheme == "memory":
        from ._url import split_memory_url
        from .memory._transport import open_memory_transport

        async with open_memory_transport(split_memory_url(url), **options) as transport:
            yield transport
    else:
        raise UnsupportedBrokerURL(url)
