"""Bounded retries of Kafka calls while the broker is away (``_transport/_retry.py``),
under Trio's MockClock: backoff doubles up to the maximum, every attempt is logged, the
budget is a hard bound ending in ``BrokerUnavailable``, other errors pass at once."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from kafka import errors as kafka_errors

from trio_tables._transport._retry import RetryPolicy, is_retriable
from trio_tables.errors import BrokerUnavailable, CommitFailed


class FlakyCall:
    """Fails with ``error`` ``failures`` times, then returns ``"ok"``; records when it
    was called."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.calls) <= self.failures:
            raise self.error
        return "ok"


async def test_retriable_errors_are_retried_with_doubling_backoff_and_logged(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_tables.transport.kafka")
    call = FlakyCall(7, kafka_errors.KafkaConnectionError("111 ECONNREFUSED"))
    policy = RetryPolicy("host:9092", timeout=60.0, initial=0.1, maximum=5.0)
    assert await policy.run("offset commit", call) == "ok"
    waits = [round(b - a, 6) for a, b in zip(call.calls, call.calls[1:], strict=False)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 8  # one per failure, one for the recovery
    assert all("offset commit" in m for m in messages)
    assert "ECONNREFUSED" in messages[0]
    assert "succeeded after 7 retries" in messages[-1]


async def test_the_budget_bounds_the_retries_and_ends_in_a_typed_error(
    autojump_clock: Any,
) -> None:
    call = FlakyCall(10**6, kafka_errors.KafkaTimeoutError("no coordinator"))
    policy = RetryPolicy("host:9092", timeout=30.0)
    start = trio.current_time()
    with pytest.raises(BrokerUnavailable) as info:
        await policy.run("fetching committed offsets", call)
    assert trio.current_time() - start == pytest.approx(30.0)
    assert isinstance(info.value.__cause__, kafka_errors.KafkaTimeoutError)
    message = str(info.value)
    assert "host:9092" in message
    assert "fetching committed offsets" in message
    assert "check that the broker runs" in message


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.CommitFailedError("rebalanced"),
        kafka_errors.RebalanceInProgressError(),
        CommitFailed("rejected"),
        ValueError("a bug"),
    ],
)
async def test_errors_that_are_not_retriable_pass_at_once(
    autojump_clock: Any, error: Exception
) -> None:
    call = FlakyCall(1, error)
    with pytest.raises(type(error)):
        await RetryPolicy("host:9092").run("offset commit", call)
    assert len(call.calls) == 1
    assert not is_retriable(error)


def test_connection_and_coordinator_errors_are_retriable() -> None:
    for error in (
        kafka_errors.KafkaConnectionError(),
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.NodeNotReadyError(),
        kafka_errors.CoordinatorNotAvailableError(),
        kafka_errors.NotCoordinatorError(),
    ):
        assert is_retriable(error), error
