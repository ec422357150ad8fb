"""Kafka settings carried in a broker URL (``kafka://host:port?name=value&...``)."""

from __future__ import annotations

import attrs
import pytest

import trio_tables
from trio_tables._embedded import BROKER_SETTINGS, EmbeddedBroker
from trio_tables._transport._url import kafka_url, split_kafka_url, split_memory_url
from trio_tables._transport.kafka._transport import KafkaSettings
from trio_tables.errors import InvalidBrokerURL


def test_settings_are_converted_to_the_fields_types() -> None:
    servers, settings = split_kafka_url(
        "kafka://a:9092,b:9093?session_timeout_ms=6000&heartbeat_interval_ms=1000"
        "&connect_timeout=2.5&client_id=me&fetch_client=kafka-python"
    )
    assert servers == "a:9092,b:9093"
    assert settings == {
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "connect_timeout": 2.5,
        "client_id": "me",
        "fetch_client": "kafka-python",
    }
    assert KafkaSettings(bootstrap_servers=servers, **settings).session_timeout_ms == 6000


def test_a_url_without_settings_has_none() -> None:
    assert split_kafka_url("kafka://127.0.0.1:9092") == ("127.0.0.1:9092", {})


def test_an_unknown_name_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(InvalidBrokerURL) as info:
        split_kafka_url("kafka://h:1?session_timeout=6000")
    message = str(info.value)
    assert "unknown setting 'session_timeout'" in message
    assert "did you mean 'session_timeout_ms'?" in message
    known = [
        f.name
        for f in attrs.fields(KafkaSettings)
        if f.name not in ("bootstrap_servers", "extra", "confluent_config")
    ]
    assert f"a URL can carry these KafkaSettings: {', '.join(sorted(known))}" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("session_timeout_ms=six", "setting session_timeout_ms='six' is not a whole number"),
        ("connect_timeout=soon", "setting connect_timeout='soon' is not a number"),
        ("session_timeout_ms=1&session_timeout_ms=2", "'session_timeout_ms' is given twice"),
        ("extra=x", "'extra' cannot be given in a URL (it is a mapping"),
        ("bootstrap_servers=x:1", "the servers are the URL's host part"),
        ("fetch_client=java", "'fetch_client' must be in"),
        ("session_timeout_ms", "must read NAME=VALUE"),
    ],
)
def test_bad_settings_say_what_is_wrong(query: str, problem: str) -> None:
    with pytest.raises(InvalidBrokerURL, match=r"broker URL 'kafka://h:1\?") as info:
        split_kafka_url(f"kafka://h:1?{query}")
    assert problem in str(info.value)


def test_a_url_without_servers_is_rejected() -> None:
    with pytest.raises(InvalidBrokerURL, match="no servers"):
        split_kafka_url("kafka://?session_timeout_ms=1")


def test_memory_urls_carry_no_settings() -> None:
    assert split_memory_url("memory://") == "default"
    assert split_memory_url("memory://x") == "x"
    with pytest.raises(InvalidBrokerURL, match="memory:// URLs carry no settings"):
        split_memory_url("memory://x?a=1")


async def test_open_transport_rejects_bad_settings_before_connecting() -> None:
    with pytest.raises(InvalidBrokerURL, match="unknown setting 'nope'"):
        async with trio_tables.open_transport("kafka://127.0.0.1:1?nope=1"):
            pass  # pragma: no cover


def test_the_embedded_brokers_url_carries_its_settings() -> None:
    broker = EmbeddedBroker("127.0.0.1", 9092, 1)
    assert broker.url == (
        "kafka://127.0.0.1:9092?session_timeout_ms=4000&heartbeat_interval_ms=1000"
    )
    assert split_kafka_url(broker.url) == ("127.0.0.1:9092", dict(BROKER_SETTINGS))
    assert kafka_url("h:1", {}) == "kafka://h:1"
