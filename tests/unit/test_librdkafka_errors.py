"""librdkafka's errors are ours (issue 15 point 3): ``_transport/kafka/_librdkafka_errors.py``
translates them to typed errors, and the retry policy retries the retriable ones exactly
as it retries kafka-python's. The last tests use a real librdkafka consumer against a
port where no broker listens."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from confluent_kafka import Consumer, KafkaError, KafkaException
from kafka import errors as kafka_errors

from trio_tables._transport._retry import RetryPolicy, is_retriable
from trio_tables._transport.kafka._bridge import ClientOwner
from trio_tables._transport.kafka._librdkafka import LibrdkafkaFetcher, _raise_or_log
from trio_tables._transport.kafka._librdkafka_errors import librdkafka_call, translate
from trio_tables._transport.kafka._restore import FetcherRestoreConsumer
from trio_tables.errors import BrokerUnavailable, KafkaClientError, UnknownTopic

from .test_retry import FlakyCall

NOWHERE = "127.0.0.1:9"  # the discard port: nothing listens there


def _raised(code: int, message: str = "boom", **flags: Any) -> BaseException:
    return translate(KafkaException(KafkaError(code, message, **flags)), "an operation")


def test_unknown_topics_and_partitions_become_unknown_topic() -> None:
    for code in (
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
    ):
        assert isinstance(_raised(code), UnknownTopic)


@pytest.mark.parametrize(
    "code",
    [KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
     KafkaError.NOT_COORDINATOR, KafkaError.REQUEST_TIMED_OUT],
)
def test_the_broker_being_away_is_a_retriable_typed_error(code: int) -> None:
    error = _raised(code)
    assert isinstance(error, KafkaClientError)
    assert error.retriable
    assert is_retriable(error)
    assert error.client == "librdkafka"
    assert error.operation == "an operation"
    assert error.code == code
    assert "retried" in str(error)


def test_librdkafkas_own_retriable_flag_counts_unless_the_error_is_fatal() -> None:
    assert is_retriable(_raised(KafkaError.OFFSET_NOT_AVAILABLE, retriable=True))
    assert not is_retriable(_raised(KafkaError._TRANSPORT, fatal=True))


def test_other_errors_are_typed_not_retriable_and_say_what_to_do() -> None:
    auth = _raised(KafkaError.SASL_AUTHENTICATION_FAILED, "bad password")
    assert isinstance(auth, KafkaClientError)
    assert not is_retriable(auth)
    assert "bad password" in str(auth)
    assert "sasl_" in str(auth)
    config = _raised(KafkaError._INVALID_ARG)
    assert isinstance(config, KafkaClientError)
    assert "confluent_config" in str(config)
    other = ValueError("not librdkafka's")
    assert translate(other, "x") is other


def test_the_decorator_raises_the_typed_error_chained_to_librdkafkas() -> None:
    original = KafkaException(KafkaError(KafkaError._STATE, "Erroneous state"))

    @librdkafka_call("seek")
    def call() -> None:
        raise original

    with pytest.raises(KafkaClientError, match="seek failed with _STATE") as info:
        call()
    assert info.value.__cause__ is original


def test_an_error_in_a_consumed_message_is_typed() -> None:
    with pytest.raises(UnknownTopic, match="'gone'"):
        _raise_or_log(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "x"), "gone")
    with pytest.raises(KafkaClientError) as info:
        _raise_or_log(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"), "t")
    assert not info.value.retriable
    # librdkafka reconnects by itself: a transport error in a message is only logged.
    _raise_or_log(KafkaError(KafkaError._TRANSPORT, "down"), "t")


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.KafkaConnectionError("111 ECONNREFUSED"),
        _raised(KafkaError._ALL_BROKERS_DOWN, "All broker connections are down"),
    ],
    ids=["kafka-python", "librdkafka"],
)
async def test_librdkafka_errors_are_retried_exactly_as_kafka_pythons(
    autojump_clock: Any, error: Exception
) -> None:
    call = FlakyCall(5, error)
    policy = RetryPolicy("host:9092", timeout=60.0, initial=0.1, maximum=5.0)
    assert await policy.run("fetching beginning offsets", call) == "ok"
    waits = [round(b - a, 6) for a, b in zip(call.calls, call.calls[1:], strict=False)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6]
    gives_up = RetryPolicy("host:9092", timeout=10.0)
    with pytest.raises(BrokerUnavailable) as info:
        await gives_up.run("fetching beginning offsets", FlakyCall(10**6, error))
    assert info.value.__cause__ is error


def test_a_real_librdkafka_call_that_fails_raises_the_typed_error() -> None:
    from trio_tables._transport.kafka._librdkafka import new_librdkafka_consumer

    with pytest.raises(KafkaClientError) as info:
        new_librdkafka_consumer(
            {"bootstrap.servers": NOWHERE, "group.id": "g", "no.such.property": "1"}
        )
    assert not info.value.retriable  # a configuration error: retrying cannot help
    assert isinstance(info.value.__cause__, KafkaException)


class _BrokerGone(LibrdkafkaFetcher):
    """A real librdkafka fetcher whose fetches meet the error librdkafka raises when
    every broker is down (translated, as ``fetch`` translates it)."""

    calls = 0

    def fetch(self, timeout: float, max_records: int) -> Any:
        self.calls += 1
        raise translate(
            KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down")), "fetch"
        )


async def test_a_librdkafka_fetch_error_is_retried_then_broker_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_tables.transport.kafka")
    fetcher = _BrokerGone(
        Consumer({"bootstrap.servers": NOWHERE, "group.id": "unused", "log_level": 0}),
        timeout=0.3,
    )
    consumer = FetcherRestoreConsumer(
        ClientOwner("librdkafka restore consumer"),
        fetcher,
        probe=None,  # type: ignore[arg-type]  # offsets are not asked for here
        max_poll_records=100,
        retry=RetryPolicy(NOWHERE, timeout=0.5, initial=0.1),
    )
    try:
        with pytest.raises(BrokerUnavailable) as info:
            await consumer.poll(timeout=0.1)
        assert isinstance(info.value.__cause__, KafkaClientError)
        assert fetcher.calls >= 2  # retried before giving up
        assert any("poll failed" in r.message for r in caplog.records)
    finally:
        with trio.CancelScope(shield=True):
            await consumer.close()
