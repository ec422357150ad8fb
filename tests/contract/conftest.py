"""Fixtures of the transport contract suite: every test runs against the in-process
broker (``memory``) and the embedded Kafka-protocol broker (``kafka``, Tansu).

Tests that need transaction semantics Tansu lacks (aborted records hidden from
``read_committed``, the last stable offset) carry ``@pytest.mark.full_transactions``:
their ``kafka`` variant is marked ``real_kafka`` and runs only against a real Kafka
cluster (``TRIO_TABLES_REAL_KAFKA=host:port``), never counted as passing on Tansu.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from trio_tables._transport import open_transport
from trio_tables._transport._base import Transport
from trio_tables._transport.memory._transport import (
    MemoryBroker,
    get_memory_broker,
    reset_memory_broker,
)

KAFKA_SETTINGS: dict[str, Any] = {
    # Real Kafka's minimum (group.min.session.timeout.ms); the embedded broker's URL
    # carries its own settings, which take precedence.
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "connect_timeout": 10,
}
REAL_KAFKA = os.environ.get("TRIO_TABLES_REAL_KAFKA", "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "full_transactions: needs complete Kafka transactions (not Tansu's): the kafka "
        "variant runs only on a real Kafka cluster",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not (_kind(item) or "").startswith("kafka"):
            continue
        if item.get_closest_marker("full_transactions") is not None:
            item.add_marker(pytest.mark.real_kafka)
            if not REAL_KAFKA:
                item.add_marker(
                    pytest.mark.skip(
                        reason="Tansu delivers aborted records to read_committed and has no "
                        "last stable offset (BROKER.md); set TRIO_TABLES_REAL_KAFKA=host:port"
                    )
                )


def _kind(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("transport_kind")


@pytest.fixture(
    params=[
        "memory",
        # Records fetched and (without a transaction) produced with librdkafka (the
        # defaults), then both with kafka-python.
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("kafka-python", marks=pytest.mark.kafka),
    ]
)
def transport_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def broker_url(request: pytest.FixtureRequest, transport_kind: str) -> str:
    """A fresh uniquely named memory broker, or the session's Kafka broker."""
    if transport_kind == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    if REAL_KAFKA:
        return f"kafka://{REAL_KAFKA}"
    url: str = request.getfixturevalue("kafka_broker").url
    return url


@pytest.fixture
async def transport(broker_url: str, transport_kind: str) -> AsyncIterator[Transport]:
    options: dict[str, Any] = {}
    if transport_kind == "kafka":
        options = KAFKA_SETTINGS
    elif transport_kind == "kafka-python":
        both = {"fetch_client": "kafka-python", "produce_client": "kafka-python"}
        options = {**KAFKA_SETTINGS, **both}
    try:
        async with open_transport(broker_url, **options) as opened:
            yield opened
    finally:
        if broker_url.startswith("memory://"):
            reset_memory_broker(broker_url.removeprefix("memory://"))


@attrs.define
class Names:
    """Unique topic and group names for one test, and topic creation."""

    transport: Transport
    unique: Callable[[str], str]

    def group(self) -> str:
        return self.unique("group")

    async def topic(self, partitions: int = 1, prefix: str = "topic") -> str:
        name = self.unique(prefix)
        await self.transport.create_topic(name, partitions)
        return name

    @property
    def is_memory(self) -> bool:
        return self.transport.url.startswith("memory://")

    def memory_broker(self) -> MemoryBroker:
        return get_memory_broker(self.transport.url.removeprefix("memory://"))


@pytest.fixture
def names(transport: Transport, unique_name: Callable[[str], str]) -> Names:
    return Names(transport, unique_name)
