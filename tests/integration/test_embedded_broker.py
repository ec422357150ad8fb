"""The embedded broker launcher (trio_tables.testing): start, readiness, stop, kill.

These test the launcher, not our transport: Kafka access goes through kafka-python's
admin client directly.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from kafka.admin import KafkaAdminClient, NewTopic

from trio_tables.testing import (
    EmbeddedBroker,
    EmbeddedBrokerError,
    embedded_broker,
    open_embedded_broker,
    start_embedded_broker,
    stop_embedded_broker,
)

pytestmark = pytest.mark.kafka


def _process_exists(pid: int) -> bool:
    """True while ``pid`` exists at all (a zombie counts: stopping must also reap)."""
    return Path(f"/proc/{pid}").exists() if Path("/proc").is_dir() else _signalable(pid)


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own (the session broker must not be stopped)."""
    broker = start_embedded_broker()
    try:
        yield broker
    finally:
        stop_embedded_broker(broker, kill=True)


def test_broker_serves_a_kafka_client(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    assert kafka_broker.host == "127.0.0.1"
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert kafka_broker.url == (
        f"kafka://127.0.0.1:{kafka_broker.port}"
        "?session_timeout_ms=4000&heartbeat_interval_ms=1000"
    )
    topic = unique_name("launcher")
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_picks_a_free_port_for_each_broker(kafka_broker: EmbeddedBroker) -> None:
    with embedded_broker() as other:
        assert other.port != kafka_broker.port
        assert other.pid != kafka_broker.pid
        assert _accepts(other.port)


def test_stop_by_pid_leaves_no_process_and_no_log(own_broker: EmbeddedBroker) -> None:
    assert _process_exists(own_broker.pid)
    assert Path(own_broker.log_path).exists()
    stop_embedded_broker(own_broker)
    assert not _process_exists(own_broker.pid)
    assert not _accepts(own_broker.port)
    assert not Path(own_broker.log_path).exists()
    stop_embedded_broker(own_broker)  # stopping again is harmless


def test_kill_stops_at_once(own_broker: EmbeddedBroker) -> None:
    stop_embedded_broker(own_broker, kill=True)
    assert not _process_exists(own_broker.pid)
    assert not _accepts(own_broker.port)


def test_restart_on_the_same_port(own_broker: EmbeddedBroker) -> None:
    """A crash test restarts the broker where clients expect it."""
    stop_embedded_broker(own_broker, kill=True)
    with embedded_broker(port=own_broker.port) as again:
        assert again.port == own_broker.port
        assert _accepts(again.port)


def test_busy_port_fails_with_a_clear_error(own_broker: EmbeddedBroker) -> None:
    with pytest.raises(EmbeddedBrokerError, match=rf"port {own_broker.port} .* in use"):
        start_embedded_broker(port=own_broker.port)
    assert _accepts(own_broker.port)  # the running broker is unharmed


def test_a_broker_that_dies_at_start_reports_its_log() -> None:
    with pytest.raises(EmbeddedBrokerError, match=r"exited with code .*log ends with"):
        start_embedded_broker(storage="no-such-engine://x/")


async def test_open_embedded_broker_under_trio() -> None:
    async with open_embedded_broker() as broker:
        assert _process_exists(broker.pid)
        stream = await trio.open_tcp_stream(broker.host, broker.port)
        await stream.aclose()
    assert not _process_exists(broker.pid)


async def test_open_embedded_broker_stops_the_broker_when_cancelled() -> None:
    started: list[EmbeddedBroker] = []
    with trio.CancelScope() as scope:
        async with open_embedded_broker() as broker:
            started.append(broker)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert not _process_exists(started[0].pid)
