"""Bounded retries of Kafka calls while the broker is unreachable.

kafka-python and librdkafka reconnect by themselves, but a call made while no broker
answers (a commit, a committed-offsets fetch, a metadata or end-offset request) fails
with a *retriable* error (connection refused, timeout, coordinator not available).
:class:`RetryPolicy` retries such calls with exponential backoff, logging each attempt, for at most
``timeout`` seconds; then it raises :class:`~trio_tables.errors.BrokerUnavailable`.
Errors that are not retriable (a rejected commit, an unknown topic) pass at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio
from kafka import errors as kafka_errors

from ..errors import BrokerUnavailable, KafkaClientError

__all__ = ["RetryPolicy", "is_retriable"]

logger = logging.getLogger("trio_tables.transport.kafka")

T = TypeVar("T")


def is_retriable(exc: BaseException) -> bool:
    """Whether ``exc`` says "try again later" (the broker is away or busy): a retriable
    kafka-python error, or a retriable librdkafka error (translated to
    :class:`~trio_tables.errors.KafkaClientError` by :mod:`._librdkafka_errors`)."""
    if isinstance(exc, KafkaClientError):
        return exc.retriable
    return isinstance(exc, kafka_errors.KafkaError) and bool(getattr(exc, "retriable", False))


@attrs.frozen
class RetryPolicy:
    """Retry retriable failures for at most ``timeout`` seconds, waiting ``initial``
    seconds after the first failure and doubling up to ``maximum`` between attempts."""

    servers: str
    timeout: float = 60.0
    initial: float = 0.1
    maximum: float = 5.0

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, retried while it fails with a retriable error.

        Raises :class:`BrokerUnavailable` (chained to the last error) once ``timeout``
        seconds passed since the first failure. Cancellation: cancels the attempt in
        progress or the wait between attempts; nothing else is left running.
        """
        failures = 0
        deadline = 0.0
        delay = self.initial
        while True:
            try:
                result = await call()
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                now = trio.current_time()
                if failures == 0:
                    deadline = now + self.timeout
                failures += 1
                left = deadline - now
                if left <= 0:
                    raise BrokerUnavailable(
                        self.servers,
                        self.timeout,
                        f"{what} failed {failures} times, last with {exc!r}",
                    ) from exc
                wait = min(delay, left)
                logger.warning(
                    "%s failed (%r), broker unreachable? attempt %d, retrying in %.1fs "
                    "(giving up in %.0fs)",
                    what,
                    exc,
                    failures,
                    wait,
                    left,
                )
                await trio.sleep(wait)  # backoff, not synchronisation
                delay = min(delay * 2, self.maximum)
                continue
            if failures:
                logger.warning("%s succeeded after %d retries", what, failures)
            return result
