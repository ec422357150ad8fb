"""How Trio talks to kafka-python: one owner per client, and the way back from
kafka-python's IO thread into Trio.

kafka-python clients are not thread-safe and block. Every call goes through
:meth:`ClientOwner.run`: a worker thread via :func:`trio.to_thread.run_sync` with a
``CapacityLimiter(1)`` per client (calls never overlap) and ``abandon_on_cancel=False``
(a cancelled call finishes in its thread before :class:`trio.Cancelled` is raised, so the
next call never overlaps an abandoned one).

kafka-python 3 runs each client's network on its own IO thread with a small event loop.
Rebalance listeners run on that loop; they hand work to Trio with
``TrioToken.run_sync_soon`` and wait on a kafka :class:`~kafka.future.Future` that Trio
resolves. Resolving it from another thread needs the loop to be woken up, which is only
reachable through private attributes: :func:`resolve_on_io_loop`,
:func:`commit_on_io_loop`, :func:`fetch_committed` (one request for many partitions),
the fetcher fix :func:`release_parked_records`, the producer
fixes :func:`track_topic` and :func:`end_transaction`, and the group join fixes
:func:`keep_finished_join` and :func:`finish_join_round` are the only places that touch
them. :mod:`._seams` checks every one of them once, when a Kafka transport opens
(a missing or changed one is a typed error, never a silent fallback); one test per seam
pins its behaviour.

Threads: a client is called only from the worker thread of its :class:`ClientOwner`
(one call at a time, holding the owner's limiter), or by kafka-python itself on its IO
thread; the Trio thread reaches the IO loop only through its thread-safe
``call_soon_threadsafe`` (:func:`resolve_on_io_loop`), and the IO thread reaches Trio
only through ``TrioToken.run_sync_soon``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import trio
from kafka import errors as kafka_errors
from kafka.future import Future as KafkaFuture
from kafka.structs import OffsetAndMetadata, TopicPartition

from ...errors import TransportClosed
from .._base import TP

__all__ = [
    "ClientOwner",
    "commit_on_io_loop",
    "end_transaction",
    "finish_join_round",
    "keep_finished_join",
    "release_parked_records",
    "resolve_on_io_loop",
]

logger = logging.getLogger("trio_tables.transport.kafka")

T = TypeVar("T")


class ClientOwner:
    """Serialises every call to one kafka-python client through one worker thread at a
    time; knows whether the client was closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.limiter = trio.CapacityLimiter(1)
        # Written by the worker thread that closes the client (holding the limiter);
        # read there by every later call and on the Trio thread as a shortcut.
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread, after every earlier call on this client.

        Raises :class:`~trio_tables.errors.TransportClosed`, without calling ``fn``, once
        the client is closed (also for a call that was waiting while it closed).

        Cancellation: a call cancelled before its worker thread started raises
        :class:`trio.Cancelled` and ``fn`` never runs. Once started, the call is not
        abandoned: it completes in its thread and returns normally (the cancellation
        is delivered at the caller's next checkpoint). So an exception from ``run``
        means ``fn`` never ran, or ``fn`` itself raised.
        """
        if self.closed:
            raise TransportClosed(f"{self.name} is closed")
        return await trio.to_thread.run_sync(
            self._call, fn, args, limiter=self.limiter, abandon_on_cancel=False
        )

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self.closed:  # closed by the call before this one
            raise TransportClosed(f"{self.name} is closed")
        return fn(*args)

    async def close(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` (the client's close) once, after every earlier call; later calls
        raise :class:`~trio_tables.errors.TransportClosed`. Shielded from cancellation
        (a client is never left half closed); the client counts as closed even if
        ``fn`` raises."""
        with trio.CancelScope(shield=True):
            if self.closed:
                return

            def close() -> None:
                try:
                    fn()
                finally:
                    self.closed = True

            with contextlib.suppress(TransportClosed):  # closed by a call queued earlier
                await self.run(close)


def to_kafka_tp(tp: TP) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def from_kafka_tp(tp: TopicPartition) -> TP:
    return TP(tp.topic, tp.partition)


def to_kafka_offsets(offsets: Mapping[TP, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {to_kafka_tp(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


def _io_loop(consumer: Any) -> Any:
    # kafka-python 3: KafkaConsumer._net is the client's NetworkSelector (its IO loop).
    return consumer._net


def resolve_on_io_loop(consumer: Any, future: KafkaFuture, value: Any) -> None:
    """Complete ``future`` on ``consumer``'s IO loop and wake the loop, from any thread.

    A task of that loop awaiting ``future`` then resumes at once (resolving it directly
    from another thread would leave the loop asleep until its next timeout).
    """
    _io_loop(consumer).call_soon_threadsafe(lambda: future.success(value))


async def commit_on_io_loop(consumer: Any, offsets: Mapping[TP, int]) -> None:
    """Commit ``offsets`` from a coroutine running on ``consumer``'s IO loop (a rebalance
    listener), where the blocking ``consumer.commit()`` would deadlock."""
    future = consumer._coordinator.commit_offsets_async(to_kafka_offsets(offsets))
    await future


def fetch_committed(consumer: Any, tps: Iterable[TP]) -> dict[TP, int | None]:
    """The group's committed offsets of ``tps`` (``None``: never committed), in one
    OffsetFetch request: the public ``consumer.committed()`` sends one per partition
    (eight partitions took ~0.2 s against the embedded broker, between an assignment and
    its recovery). Blocking: the thread that owns ``consumer``."""
    wanted = {to_kafka_tp(tp): tp for tp in tps}
    if not wanted:
        return {}
    found = consumer._coordinator.fetch_committed_offsets(list(wanted))
    return {tp: (found[ktp].offset if ktp in found else None) for ktp, tp in wanted.items()}


def release_parked_records(consumer: Any) -> None:
    """Work around a kafka-python 3 fetcher bug; call before each ``poll``.

    Records already fetched for a partition that gets paused are parked, and handed back
    after ``resume`` only when the fetcher's in-line slot is ``None``. But the slot keeps
    an *exhausted* batch object (falsy, not ``None``) after a poll ends exactly at a
    batch's end, and a parked partition is never fetched again: it stalls for good
    (``test_resumed_partition_delivers_what_was_fetched_while_paused`` shows it). An
    exhausted slot means "nothing in line", so clearing it changes nothing else. Only
    private attributes can do this (checked at start-up by :mod:`._seams`).
    """
    fetcher = consumer._fetcher
    if not fetcher._paused_partition_records:
        return
    current = fetcher._next_partition_records
    if current is not None and not current:
        fetcher._next_partition_records = None


def track_topic(producer: Any, topic: str) -> None:
    """Work around a kafka-python 3 producer bug; call before the first send to a topic.

    The producer's first metadata answer covers every topic, so a send to a topic that
    existed then finds its partitions at once and never adds the topic to the set the
    producer keeps metadata for. A later send to a *new* topic adds that one, and the
    next metadata refresh asks only for the tracked topics: the untracked topic's
    partitions vanish from the producer's view, a batch waiting for one of them has an
    "unknown leader" for good, the sender spins on metadata requests and the batch
    expires after ``delivery_timeout_ms`` (seen: exactly-once outputs never delivered).
    Tracking every topic sent to prevents it. ``Sender.add_topic`` is the producer's own
    thread-safe way in (the sender thread adds the topic); the private ``_sender`` is
    checked at start-up by :mod:`._seams`.
    """
    producer._sender.add_topic(topic)


def end_transaction(producer: Any, *, commit: bool, timeout: float) -> None:
    """``producer.commit_transaction()`` / ``abort_transaction()`` waiting at most
    ``timeout`` seconds (blocking: run it in the producer's worker thread).

    kafka-python waits for the coordinator's answer without a bound and retries a
    request whose connection was closed for ever; a broker that drops the connection
    instead of answering a fenced producer's EndTxn (Tansu does) would block the worker
    for good. Only the private transaction manager and sender expose the wait (checked
    at start-up by :mod:`._seams`).
    """
    manager = producer._transaction_manager
    sender = producer._sender
    if manager is None:
        raise kafka_errors.IllegalStateError("the producer has no transactional_id")
    result = manager.begin_commit() if commit else manager.begin_abort()
    sender.wakeup()
    if not result.wait(timeout_ms=int(timeout * 1000)):
        raise kafka_errors.KafkaTimeoutError(
            f"{'commit' if commit else 'abort'} of the transaction got no answer within "
            f"{timeout:g}s (a broker may not answer a fenced producer at all)"
        )


class _FinishedJoin(KafkaFuture):  # type: ignore[misc]
    """The result of a join that completed while no ``poll`` waited for it, handed to the
    next one: reports "not done" until that poll waits on it (so kafka-python does not
    start another join instead), then is done with the join's result."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self._join_result = value

    def _deliver(self) -> None:
        if not self.is_done:
            self.success(self._join_result)

    def add_callback(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        self._deliver()
        return super().add_callback(f, *args, **kwargs)

    def add_errback(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        self._deliver()
        return super().add_errback(f, *args, **kwargs)

    def _add_cb_eb(self, cb: Any, eb: Any) -> Any:
        self._deliver()
        return super()._add_cb_eb(cb, eb)

    def __await__(self) -> Any:
        self._deliver()
        return super().__await__()


def keep_finished_join(consumer: Any) -> None:
    """Work around a kafka-python 3 group-join bug; call once, on a new group consumer.

    A ``poll`` whose timeout ends while a JoinGroup/SyncGroup round is in flight leaves
    the round running (the next poll waits for it again). But if the round *finishes*
    before the next poll gets to it, that poll sees a done task and sends a new
    JoinGroup, dropping the assignment just received: one more join round (about 3 s on
    Tansu, the group's initial rebalance delay on Kafka). It happened on about a third
    of the benchmark's starts, since the broker holds a join for a whole number of poll
    periods. Wrapped here, on the IO loop where the join runs: a successfully finished
    round is handed to the next poll as if it were still running, which then completes
    the join as usual (a failed one is left alone: the poll handles its error). Only
    private attributes can do this (checked at start-up by :mod:`._seams`).
    """
    coordinator: Any = consumer._coordinator
    join = coordinator.join_group_async

    async def join_group_async(*args: Any, **kwargs: Any) -> Any:
        task = coordinator._join_task
        if (
            isinstance(task, KafkaFuture)
            and not isinstance(task, _FinishedJoin)
            and task.is_done
            and task.exception is None
        ):
            logger.debug("a join round finished between polls: this poll completes it")
            coordinator._join_task = _FinishedJoin(task.value)
        return await join(*args, **kwargs)

    coordinator.join_group_async = join_group_async


def finish_join_round(consumer: Any, timeout: float) -> bool:
    """Before a group consumer leaves: wait at most ``timeout`` seconds for a
    JoinGroup/SyncGroup round of its member that is in flight to end (blocking: run it
    in the consumer's worker thread, right before ``close()``). Whether it waited.

    A member that leaves while its join round is in progress can stay the group's
    elected leader on Tansu (BROKER.md, deviation 7): every later SyncGroup then waits
    forever and the group never assigns again. A member whose round ended leaves a
    stable group, which every broker rebalances correctly. The round runs on the IO
    thread by itself (no ``poll`` needed); its result is dropped (the listener is not
    told of an assignment that the member gives up at once). Real Kafka does not need
    the wait, and it costs at most one join round there. Private attributes (checked at
    start-up by :mod:`._seams`).
    """
    task = consumer._coordinator._join_task
    if task is None or task.is_done:
        return False
    ended = threading.Event()
    # Callbacks are added on the IO loop, the thread that resolves the round.
    consumer._net.call_soon_threadsafe(lambda: task.add_both(lambda _: ended.set()))
    logger.info("stopping in the middle of a group join round: waiting for it to end")
    if not ended.wait(timeout):
        logger.warning(
            "the group join round did not end within %.0fs: leaving the group anyway", timeout
        )
    return True
