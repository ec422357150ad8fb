"""Which partition a key belongs to: one rule for every part of trio_tables.

A key is hashed as the bytes :meth:`TableManager.send` sends it as, with Kafka's default
partitioner (murmur2, positive, modulo the partition count, as kafka-python's
``DefaultPartitioner`` and the Java client): ``bytes`` as they are, ``str`` as UTF-8,
anything else as compact JSON (a tuple as a JSON array). So ``table.partition_for_key(k)``,
``manager.metadata_for_key(table, k)``, ``manager.send(topic, k, ...)`` and a Kafka
producer that sends ``k``'s bytes with the default partitioner all pick the same
partition; a ``str``-keyed source topic written by such a producer is co-partitioned
with a ``use_partitioner=True`` table written with the event's key.
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner.default import murmur2

from ._codecs import JsonCodec

__all__ = ["key_bytes", "partition_of"]

_JSON = JsonCodec()


def key_bytes(key: Any) -> bytes:
    """The bytes a record key is sent as (``TypeError`` if it has none)."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if key is None:
        raise TypeError("a None key has no partition (Kafka spreads keyless records)")
    return _JSON.encode(key)


def partition_of(key: Any, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``."""
    digest: int = murmur2(key_bytes(key))
    return (digest & 0x7FFFFFFF) % partitions
