"""The private parts of kafka-python that trio_tables relies on ("seams"), checked once.

:mod:`._bridge` reaches into kafka-python in a few places, each to reach its IO
loop or to fix one of its bugs. A kafka-python release that renames or removes one of
them must not silently bring the bug back: :func:`check_kafka_python_seams` verifies them
all when a Kafka transport opens (once per process) and raises
:class:`~trio_tables.errors.KafkaClientIncompatible`, naming the kafka-python version and
the seam, if one is missing or changed. The bridge then uses them directly, without a
fallback.

What is checked is the shape (the attribute is set where it is expected, the method
exists with the expected parameters, the method that the fix wraps still reads the
attribute the fix works on). What each seam is *for* is checked by one test per seam
(listed in :data:`SEAMS`), which fails if the seam's behaviour is gone.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import attrs

from ...errors import KafkaClientIncompatible

__all__ = ["SEAMS", "Seam", "check_kafka_python_seams", "kafka_python_version"]


@attrs.frozen
class Seam:
    """One private part of kafka-python: where it is, what uses it, which test pins
    its behaviour, and the check (``None`` if fine, else what is wrong)."""

    name: str
    used_by: str
    test: str
    check: Callable[[], str | None]


def kafka_python_version() -> str:
    from kafka.version import __version__

    return str(__version__)


def _sets(cls: type, *names: str, where: str = "__init__") -> str | None:
    """``None`` if ``cls.<where>`` sets or reads every attribute of ``names``."""
    function = inspect.unwrap(getattr(cls, where, None))  # type: ignore[arg-type]
    code = getattr(function, "__code__", None)
    if code is None:
        return f"has no {cls.__name__}.{where} any more"
    missing = [name for name in names if name not in code.co_names]
    if missing:
        return f"is no longer used by {cls.__name__}.{where} ({', '.join(missing)} missing)"
    return None


def _method(cls: type, name: str, *params: str, coroutine: bool = False) -> str | None:
    """``None`` if ``cls.<name>`` is a method taking ``params`` (and a coroutine
    function if ``coroutine``)."""
    method = getattr(cls, name, None)
    if not callable(method):
        return f"is missing ({cls.__name__}.{name})"
    if coroutine and not inspect.iscoroutinefunction(method):
        return f"is no longer a coroutine function ({cls.__name__}.{name})"
    accepted = inspect.signature(method).parameters
    missing = [param for param in params if param not in accepted]
    if missing:
        return f"lost its parameter(s) {', '.join(missing)} ({cls.__name__}.{name})"
    return None


def _first(*results: str | None) -> str | None:
    return next((result for result in results if result is not None), None)


def _io_loop() -> str | None:
    from kafka import KafkaConsumer
    from kafka.net.selector import NetworkSelector

    return _first(
        _sets(KafkaConsumer, "_net"),
        _method(NetworkSelector, "call_soon_threadsafe", "callback"),
    )


def _commit_on_io_loop() -> str | None:
    from kafka import KafkaConsumer
    from kafka.coordinator.consumer import ConsumerCoordinator

    return _first(
        _sets(KafkaConsumer, "_coordinator"),
        _method(ConsumerCoordinator, "commit_offsets_async", "offsets"),
    )


def _committed_in_one_request() -> str | None:
    from kafka import KafkaConsumer
    from kafka.coordinator.consumer import ConsumerCoordinator

    return _first(
        _sets(KafkaConsumer, "_coordinator"),
        _method(ConsumerCoordinator, "fetch_committed_offsets", "partitions"),
    )


def _parked_records() -> str | None:
    from kafka import KafkaConsumer
    from kafka.consumer.fetcher import Fetcher

    return _first(
        _sets(KafkaConsumer, "_fetcher"),
        _sets(Fetcher, "_next_partition_records", "_paused_partition_records"),
        _sets(
            Fetcher,
            "_next_partition_records",
            "_paused_partition_records",
            where="fetched_records",
        ),
    )


def _producer_sender() -> str | None:
    from kafka import KafkaProducer
    from kafka.producer.sender import Sender

    return _first(
        _sets(KafkaProducer, "_sender"),
        _method(Sender, "add_topic", "topic"),
        _method(Sender, "wakeup"),
    )


def _transaction_manager() -> str | None:
    from kafka import KafkaProducer
    from kafka.producer.transaction_manager import (
        TransactionalRequestResult,
        TransactionManager,
    )

    return _first(
        _sets(KafkaProducer, "_transaction_manager", "_sender"),
        _method(TransactionManager, "begin_commit"),
        _method(TransactionManager, "begin_abort"),
        _method(TransactionalRequestResult, "wait", "timeout_ms"),
    )


def _join_round() -> str | None:
    from kafka.coordinator.base import BaseCoordinator
    from kafka.future import Future

    return _first(
        _sets(BaseCoordinator, "_join_task"),
        _method(BaseCoordinator, "join_group_async", "timeout_ms", coroutine=True),
        # The fix hands a finished round to the next call through _join_task, which
        # join_group_async must still re-await when it is not done.
        _sets(BaseCoordinator, "_join_task", "is_done", where="join_group_async"),
        _method(Future, "_add_cb_eb", "cb", "eb"),
        _method(Future, "add_both", "f"),
        _method(Future, "__await__"),
    )


#: Every private part of kafka-python used anywhere in trio_tables.
SEAMS: tuple[Seam, ...] = (
    Seam(
        "KafkaConsumer._net (the IO loop) and its call_soon_threadsafe",
        "_bridge.resolve_on_io_loop, finish_join_round",
        "tests/integration/test_kafka_transport.py::"
        "test_resolve_on_io_loop_wakes_a_waiting_coroutine",
        _io_loop,
    ),
    Seam(
        "KafkaConsumer._coordinator.commit_offsets_async",
        "_bridge.commit_on_io_loop (commits on revocation)",
        "tests/integration/test_kafka_transport.py::"
        "test_offsets_the_revocation_listener_returns_are_committed_on_the_io_loop",
        _commit_on_io_loop,
    ),
    Seam(
        "KafkaConsumer._coordinator.fetch_committed_offsets",
        "_bridge.fetch_committed (the committed offsets of many partitions, one request)",
        "tests/contract/test_groups.py::test_commit_round_trip_and_resume_from_commit",
        _committed_in_one_request,
    ),
    Seam(
        "KafkaConsumer._fetcher._next_partition_records / _paused_partition_records",
        "_bridge.release_parked_records",
        "tests/contract/test_groups.py::"
        "test_resumed_partition_delivers_what_was_fetched_while_paused",
        _parked_records,
    ),
    Seam(
        "KafkaProducer._sender (add_topic, wakeup)",
        "_bridge.track_topic, end_transaction",
        "tests/integration/test_kafka_transport.py::"
        "test_the_producer_keeps_metadata_for_every_topic_it_sends_to",
        _producer_sender,
    ),
    Seam(
        "KafkaProducer._transaction_manager (begin_commit, begin_abort, result.wait)",
        "_bridge.end_transaction",
        "tests/contract/test_transactions.py::"
        "test_a_fenced_zombies_commit_fails_instead_of_hanging",
        _transaction_manager,
    ),
    Seam(
        "ConsumerCoordinator.join_group_async (replaced) and _join_task",
        "_bridge.keep_finished_join, finish_join_round",
        "tests/integration/test_kafka_transport.py::"
        "test_a_join_finished_between_polls_is_completed_not_repeated; "
        "tests/integration/test_stop_during_rebalance.py",
        _join_round,
    ),
)


def check_seams(seams: tuple[Seam, ...] = SEAMS) -> None:
    """Verify ``seams``; raise :class:`KafkaClientIncompatible` for the first one that is
    missing or changed."""
    for seam in seams:
        try:
            problem = seam.check()
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            problem = f"cannot be checked ({exc!r})"
        if problem is not None:
            raise KafkaClientIncompatible(kafka_python_version(), seam.name, problem)


@functools.cache
def check_kafka_python_seams() -> None:
    """:func:`check_seams` once per process (a Kafka transport calls it as it opens)."""
    check_seams()
