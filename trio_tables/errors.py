"""Typed errors of trio_tables.

Every error says what went wrong and what to do about it. All derive from
:class:`TrioTablesError`, so ``except trio_tables.errors.TrioTablesError`` catches
everything this library raises on purpose.
"""

from __future__ import annotations

__all__ = [
    "AsyncioCodeNotMarked",
    "BrokerUnavailable",
    "CommitFailed",
    "DeliveryFailed",
    "InvalidBrokerURL",
    "KafkaClientError",
    "KafkaClientIncompatible",
    "MissingExtra",
    "NoWindowTimestamp",
    "PartitionCountMismatch",
    "PartitionNotOwned",
    "ProducerFenced",
    "RecordDecodeError",
    "RecoveryFailed",
    "TableKeyTypeError",
    "TableTypeError",
    "TableValueTypeError",
    "TableWriteOutsideStream",
    "TransactionAborted",
    "TransactionError",
    "TransportClosed",
    "TrioTablesError",
    "UnknownTableOption",
    "UnknownTopic",
    "UnsupportedBrokerURL",
    "UnsupportedOperation",
    "WorkerFenced",
]


class TrioTablesError(Exception):
    """Base class of every error trio_tables raises on purpose."""


class UnsupportedBrokerURL(TrioTablesError, ValueError):
    """The broker URL has a scheme trio_tables does not know."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"unsupported broker URL {url!r}: use 'kafka://host:port[,host:port...]' "
            "for a Kafka cluster or 'memory://[name]' for the in-process broker"
        )
        self.url = url


class InvalidBrokerURL(TrioTablesError, ValueError):
    """A broker URL is malformed, or carries a setting that does not exist or whose
    value does not fit (``kafka://host:port?session_timeout_ms=6000&...``: the names are
    :class:`KafkaSettings` fields; the message lists them)."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"broker URL {url!r}: {problem}")
        self.url = url
        self.problem = problem


class BrokerUnavailable(TrioTablesError):
    """No broker answered within the connect timeout (or the connection was lost)."""

    def __init__(self, servers: str, timeout: float, detail: str = "") -> None:
        message = (
            f"no Kafka broker reachable at {servers} within {timeout:g}s"
            + (f" ({detail})" if detail else "")
            + ": check that the broker runs and that the address and port are right "
            "(for development, `python -m trio_tables broker` starts one)"
        )
        super().__init__(message)
        self.servers = servers
        self.timeout = timeout


class KafkaClientError(TrioTablesError):
    """A Kafka client reported an error that no more specific error of this module
    describes (librdkafka's errors arrive as this; kafka-python's keep their own types).

    ``retriable`` errors (the broker is away or busy) are retried with backoff for
    ``reconnect_timeout`` seconds, then become :class:`BrokerUnavailable`; the others
    reach the caller at once. ``client`` names the client (``"librdkafka"``),
    ``operation`` the call that failed, ``code`` and ``name`` the client's error code.
    """

    def __init__(
        self,
        *,
        client: str,
        operation: str,
        code: int,
        name: str,
        detail: str,
        retriable: bool,
        hint: str,
    ) -> None:
        super().__init__(f"{client}: {operation} failed with {name} ({code}): {detail}. {hint}")
        self.client = client
        self.operation = operation
        self.code = code
        self.name = name
        self.detail = detail
        self.retriable = retriable


class KafkaClientIncompatible(TrioTablesError, RuntimeError):
    """The installed kafka-python lacks, or changed, a private part ("seam") that
    trio_tables relies on to fix one of its bugs or to reach its IO loop. Checked once
    when a Kafka transport opens, so the worker fails at start-up instead of silently
    losing the fix."""

    def __init__(self, version: str, seam: str, problem: str) -> None:
        super().__init__(
            f"kafka-python {version} is not compatible with trio_tables: {seam} {problem}. "
            "trio_tables relies on this private part of kafka-python (see "
            "docs/architecture.md, 'kafka-python seams'); install the kafka-python version "
            "trio_tables declares (pip install 'kafka-python>=3.0.12,<3.1')"
        )
        self.version = version
        self.seam = seam
        self.problem = problem


class UnknownTopic(TrioTablesError):
    """A topic that the operation needs does not exist on the broker."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"topic {topic!r} does not exist: create it first (trio_tables never relies on "
            "broker auto-creation), or check the name"
        )
        self.topic = topic


class PartitionCountMismatch(TrioTablesError):
    """A topic exists with a different number of partitions than required."""

    def __init__(self, topic: str, *, expected: int, actual: int, reason: str = "") -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"topic {topic!r} has {actual} partitions but {expected} are required{why}: "
            f"delete and recreate {topic!r} with {expected} partitions, or use another topic name"
        )
        self.topic = topic
        self.expected = expected
        self.actual = actual


class DeliveryFailed(TrioTablesError):
    """The broker did not acknowledge a produced record."""

    def __init__(self, topic: str, partition: int | None, cause: BaseException) -> None:
        where = topic if partition is None else f"{topic}[{partition}]"
        super().__init__(f"record to {where} was not acknowledged by the broker: {cause!r}")
        self.topic = topic
        self.partition = partition


class CommitFailed(TrioTablesError):
    """An offset commit was rejected, usually because the group rebalanced meanwhile."""


class TransactionError(TrioTablesError):
    """A transactional operation failed; the current transaction must be aborted."""


class ProducerFenced(TransactionError):
    """Another producer with the same transactional id took over (a zombie was fenced).

    This worker must stop: its work is now owned by the newer instance.
    """


class WorkerFenced(ProducerFenced):
    """An ``exactly_once`` worker was fenced: a newer instance with the same
    transactional id (same ``app_id`` and ``worker_id``) started, or the group moved this
    worker's partitions on. The worker stops; nothing of its open transaction is
    committed, and the newer owner processes those events again."""

    def __init__(self, transactional_id: str, detail: str = "") -> None:
        super().__init__(
            f"this worker (transactional id {transactional_id!r}) was fenced by a newer "
            "producer with the same transactional id: another instance with the same "
            "app_id and worker_id started (or this one was presumed dead). It stops now "
            "without committing its open transaction; the newer instance owns its work and "
            "processes those events again. Give every concurrently running worker its own "
            "worker_id" + (f" ({detail})" if detail else "")
        )
        self.transactional_id = transactional_id


class TransactionAborted(TransactionError):
    """An ``exactly_once`` commit failed and its transaction was aborted: the changelog
    records, outputs and source offsets of the interval are discarded (locally too) and
    the worker stops; a restart (or the partitions' next owner) processes the interval's
    events again from the last committed offsets."""

    def __init__(self, transactional_id: str, cause: BaseException) -> None:
        super().__init__(
            f"the transaction of {transactional_id!r} could not commit and was aborted "
            f"({cause!r}); its changelog records, outputs and offsets are discarded and this "
            "worker stops. Restart it: processing resumes exactly from the last committed "
            "transaction"
        )
        self.transactional_id = transactional_id


class TransportClosed(TrioTablesError):
    """The client was closed (or closed itself after an unrecoverable error)."""


class TableWriteOutsideStream(TrioTablesError, RuntimeError):
    """A table was written with no current event and no explicit partition."""

    def __init__(self, table: str) -> None:
        super().__init__(
            f"write to table {table!r} outside of a stream event: trio_tables cannot tell "
            f"which partition the change belongs to. Write while processing an event (in a "
            f"`stream.take()` batch: inside `for event in batch:`), or "
            f"choose the partition explicitly with `with table.partition(p): ...`, or create "
            f"the table with use_partitioner=True to partition by key"
        )
        self.table = table


class PartitionNotOwned(TrioTablesError, RuntimeError):
    """A table partition was used that this worker does not own (or not yet recovered)."""

    def __init__(self, table: str, partition: int) -> None:
        super().__init__(
            f"partition {partition} of table {table!r} is not active on this worker "
            "(it is owned by another worker, or still recovering): use "
            "manager.metadata_for_key() to find its owner, or wait_until_recovered()"
        )
        self.table = table
        self.partition = partition


class RecordDecodeError(TrioTablesError):
    """A source record's key or value could not be decoded."""

    def __init__(self, topic: str, partition: int, offset: int, what: str, cause: Exception):
        super().__init__(
            f"cannot decode the {what} of {topic}[{partition}] at offset {offset}: {cause}. "
            "Fix the producer or the stream's key_type/value_type/serializers; to skip such "
            "records instead, open the stream with on_decode_error='skip'"
        )
        self.topic = topic
        self.partition = partition
        self.offset = offset


class AsyncioCodeNotMarked(TrioTablesError, TypeError):
    """A callback ran asyncio code without being marked as asyncio code."""

    def __init__(self, callback: object) -> None:
        name = getattr(callback, "__qualname__", None) or repr(callback)
        super().__init__(
            f"callback {name} runs asyncio code, which needs an asyncio event loop: mark it "
            "with @trio_tables.asyncio_callback (trio_tables then runs it on a trio-asyncio "
            "loop), or call the asyncio part with `await manager.run_asyncio(fn, *args)`"
        )
        self.callback = callback


class NoWindowTimestamp(TrioTablesError, RuntimeError):
    """A windowed table was used with no timestamp to pick the window by."""

    def __init__(self, table: str) -> None:
        super().__init__(
            f"windowed table {table!r} needs a timestamp to choose the window: use it while "
            f"processing a stream event (relative_to_stream, the default), pass event=..., "
            f"use `with table.at(timestamp_ms): ...`, or make it relative_to_now()"
        )
        self.table = table


class TableTypeError(TrioTablesError, TypeError):
    """A table write of a key or value that the table cannot keep: the wrong type, or
    one that would not come back equal from the changelog. Raised at the write;
    nothing reaches the table or the changelog. ``what`` is ``"key"`` or ``"value"``."""

    what = "key or value"

    def __init__(self, table: str, value: object, *, expected: str, problem: str, fix: str):
        actual = type(value).__qualname__
        super().__init__(
            f"table {table!r}: bad {self.what} {value!r}: expected {expected}, got {actual}"
            + (f"; it {problem}" if problem else "")
            + f". Fix: {fix}"
        )
        self.table = table
        self.value = value
        self.expected = expected
        self.actual = actual
        self.problem = problem
        self.fix = fix


class TableKeyTypeError(TableTypeError):
    """A table write with a key of the wrong type, or one that would not come back
    equal from the changelog (see :class:`TableTypeError`)."""

    what = "key"


class TableValueTypeError(TableTypeError):
    """A table write with a value of the wrong type, or one that would not come back
    equal from the changelog (see :class:`TableTypeError`)."""

    what = "value"


class UnknownTableOption(TrioTablesError, TypeError):
    """A table was created with a keyword it does not know."""

    def __init__(self, table_class: str, unknown: list[str], accepted: list[str]) -> None:
        super().__init__(
            f"{table_class}() got unknown keyword argument(s) {', '.join(sorted(unknown))}: "
            f"the accepted ones are {', '.join(accepted)}"
        )
        self.unknown = sorted(unknown)
        self.accepted = accepted


class UnsupportedOperation(TrioTablesError, NotImplementedError):
    """A Faust method that trio_tables deliberately does not implement; the message
    names what to use instead."""

    def __init__(self, operation: str, alternative: str) -> None:
        super().__init__(f"{operation} is not supported by trio_tables: {alternative}")
        self.operation = operation
        self.alternative = alternative


class RecoveryFailed(TrioTablesError):
    """Restoring a table from its changelog failed: the worker stops (the manager
    raises the cause) and waiters of the recovery get this error instead of a
    half-restored table."""

    def __init__(self, table: str, partitions: list[int], cause: BaseException) -> None:
        super().__init__(
            f"recovery of partitions {partitions} of table {table!r} failed ({cause!r}): "
            "the worker stops. Fix the cause (an undecodable changelog record means the "
            "table's key_type/value_type or serializers do not match what was written) "
            "and restart"
        )
        self.table = table
        self.partitions = partitions
        self.cause = cause


class MissingExtra(TrioTablesError, ImportError):
    """A feature needs packages of an optional extra that are not installed."""

    def __init__(self, extra: str, module: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the {extra!r} extra (module {module!r} is not installed): "
            f"pip install 'trio-tables[{extra}]'"
        )
        self.extra = extra
        self.module = module
