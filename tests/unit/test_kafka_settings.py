"""One settings surface (issue 15 point 3): every ``KafkaSettings`` field says which
client it reaches, and it reaches exactly those: the kafka-python configuration
(``for_client``) and the librdkafka one (``librdkafka_config``) built from the settings
carry it, translated, or leave it out. SASL/TLS settings reach both clients."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from trio_tables._transport.kafka._librdkafka import (
    REPLAY,
    librdkafka_config,
    librdkafka_connection,
)
from trio_tables._transport.kafka._librdkafka_producer import producer_config
from trio_tables._transport.kafka._transport import KafkaSettings

CLIENTS = {"kafka-python", "librdkafka", "both", "trio_tables"}

#: A value other than the default for each field (the defaults are compared with it).
CHANGED: dict[str, Any] = {
    "client_id": "other-id",
    "connect_timeout": 3.5,
    "reconnect_timeout": 5.0,
    "request_timeout_ms": 12_345,
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_500,
    "max_poll_interval_ms": 100_000,
    "end_transaction_timeout": 3.0,
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "alice",
    "sasl_plain_password": "secret",
    "ssl_cafile": "/etc/ca.pem",
    "ssl_certfile": "/etc/cert.pem",
    "ssl_keyfile": "/etc/key.pem",
    "ssl_password": "keypass",
    "extra": {"retry_backoff_ms": 250},
    "fetch_client": "kafka-python",
    "produce_client": "kafka-python",
    "confluent_config": {"statistics.interval.ms": 5000},
}


def _librdkafka(settings: KafkaSettings) -> dict[str, Any]:
    # As the transport builds it for its fetchers.
    return librdkafka_config(
        settings, isolation_level="read_committed", sizes=REPLAY, extra=settings.confluent_config
    )


def _kafka_python(settings: KafkaSettings) -> list[dict[str, Any]]:
    return [settings.for_client(c) for c in (KafkaConsumer, KafkaProducer, KafkaAdminClient)]


def test_every_setting_says_which_client_it_reaches() -> None:
    for field in attrs.fields(KafkaSettings):
        assert field.metadata.get("reaches") in CLIENTS, field.name
        assert f"``{field.name}``" in (KafkaSettings.__doc__ or ""), field.name
    assert set(CHANGED) == {f.name for f in attrs.fields(KafkaSettings)} - {"bootstrap_servers"}


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_setting_reaches_exactly_the_clients_it_names(name: str) -> None:
    base = KafkaSettings(bootstrap_servers="host:9092")
    changed = attrs.evolve(base, **{name: CHANGED[name]})
    reaches = attrs.fields_dict(KafkaSettings)[name].metadata["reaches"]
    # The group member's settings are passed by the transport, not by for_client.
    group_only = name in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms")
    librdkafka_changed = _librdkafka(base) != _librdkafka(changed)
    kafka_python_changed = _kafka_python(base) != _kafka_python(changed)
    assert librdkafka_changed == (reaches in ("librdkafka", "both"))
    if reaches in ("kafka-python", "both") and not group_only and name != "end_transaction_timeout":
        assert kafka_python_changed
    if reaches in ("librdkafka", "trio_tables"):
        assert not kafka_python_changed


def test_sasl_and_tls_settings_reach_librdkafka() -> None:
    settings = KafkaSettings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="alice",
        sasl_plain_password="secret",
        ssl_cafile="/etc/ca.pem",
        ssl_certfile="/etc/cert.pem",
        ssl_keyfile="/etc/key.pem",
        ssl_password="keypass",
    )
    config = _librdkafka(settings)
    assert config["bootstrap.servers"] == "b1:9093,b2:9093"
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    assert config["sasl.username"] == "alice"
    assert config["sasl.password"] == "secret"
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    assert config["ssl.certificate.location"] == "/etc/cert.pem"
    assert config["ssl.key.location"] == "/etc/key.pem"
    assert config["ssl.key.password"] == "keypass"
    # And kafka-python gets the same, under its own names.
    for config in _kafka_python(settings):
        assert config["security_protocol"] == "SASL_SSL"
        assert config["sasl_mechanism"] == "SCRAM-SHA-256"
        assert config["sasl_plain_username"] == "alice"
        assert config["ssl_cafile"] == "/etc/ca.pem"
        assert config["ssl_password"] == "keypass"


def test_librdkafka_accepts_the_translated_sasl_settings() -> None:
    """The names are librdkafka's: a consumer is created with them (librdkafka rejects
    an unknown or misspelt property at once; connecting is lazy)."""
    settings = KafkaSettings(
        bootstrap_servers="127.0.0.1:9",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="alice",
        sasl_plain_password="secret",
    )
    consumer = Consumer({**_librdkafka(settings), "log_level": 0})
    consumer.close()
    # The producer gets the same connection settings, and librdkafka takes its own.
    config = producer_config(
        librdkafka_connection(settings), linger=0.005, max_in_flight=10_000, extra={}
    )
    assert config["sasl.username"] == "alice"
    producer = Producer({**config, "log_level": 0})
    producer.close()
