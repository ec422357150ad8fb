"""The group consumer with ``fetch_client="confluent-kafka"`` (the default): kafka-python
keeps the membership, librdkafka fetches the records.

kafka-python stays the group member because the table assignor (which places standbys)
is Python code, which librdkafka cannot call; it also keeps the rebalance bridge and
commits. It never fetches: every partition it is assigned is paused in it at once (its
fetch sizes are one byte, so a fetch sent before the pause costs nothing). A
:class:`~._librdkafka.LibrdkafkaFetcher` reads exactly the partitions the listener was
told this member owns, each from where the group says (the committed offset, else the
reset policy), as :meth:`KafkaGroupConsumer._fix_positions` does for kafka-python.

Threads: as :mod:`._consumer`. The fetcher is touched only by the client's worker
thread (one call at a time); the ownership it follows is read there from the shared
:class:`~._membership.Membership`, whose snapshots the Trio thread's listener task
and ``pause``/``resume`` replace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from .._base import TP, RebalanceListener
from .._retry import RetryPolicy
from ._bridge import ClientOwner
from ._consumer import HighWatermarkProbe, KafkaGroupConsumer
from ._fetcher import Batch, Fetcher

__all__ = ["LibrdkafkaGroupConsumer"]

#: kafka-python fetch sizes for the member that only keeps the membership.
MEMBERSHIP_ONLY_CONFIG = {"fetch_max_bytes": 1, "max_partition_fetch_bytes": 1}

#: The longest kafka-python poll of a member without partitions (see ``_fetch_batch``).
_JOINING_POLL_MS = 20


class LibrdkafkaGroupConsumer(KafkaGroupConsumer):
    """Implements :class:`~trio_tables._transport._base.GroupConsumer`: membership,
    rebalances and commits on kafka-python, records from librdkafka."""

    def __init__(
        self,
        owner: ClientOwner,
        consumer: Any,
        probe: HighWatermarkProbe,
        *,
        fetcher: Fetcher,
        max_poll_records: int,
        listener: RebalanceListener,
        nursery: trio.Nursery,
        reset_to_latest: bool = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            owner,
            consumer,
            probe,
            listener=listener,
            nursery=nursery,
            reset_to_latest=reset_to_latest,
            retry=retry,
        )
        self._fetcher = fetcher
        self._max_poll_records = max(max_poll_records, 1)

    # -- worker-thread side ------------------------------------------------------------
    def _fetch_batch(self, timeout: float, max_records: int | None) -> Batch:
        fetcher = self._fetcher
        # Membership first (rebalances complete here and reach the listener). Without
        # partitions to fetch there is nothing else to wait for.
        # Without partitions, kafka-python's poll is where a join completes; after it,
        # the poll sleeps out what is left of its timeout (up to retry_backoff_ms, 100 ms
        # by default) before the new partitions' recovery can have this client: 20 ms.
        waiting = min(int(timeout * 1000), _JOINING_POLL_MS)
        self._consumer.poll(timeout_ms=0 if fetcher.assignment else waiting)
        self._membership.note_group(self._consumer.group_metadata)
        assigned_now = self._follow_assignment()
        if not fetcher.assignment:
            return {}
        # Partitions the listener revokes (or revokes and assigns again) meanwhile are
        # dropped as the poll returns on the Trio thread (``_deliverable``). Right after
        # an assignment nothing waits here: the new partitions' recovery needs this
        # client next (their committed offsets), and they are withheld until recovered.
        return fetcher.fetch(0 if assigned_now else timeout, max_records or self._max_poll_records)

    def _follow_assignment(self) -> bool:
        """Make the fetcher read what the listener was told this member owns, newly
        assigned partitions from where the group says; keep kafka-python from fetching.
        Whether partitions were newly assigned."""
        ownership = self._membership.take_fresh()  # one consistent view of it
        fresh = ownership.fresh
        try:
            starts = self._group_starts(fresh) if fresh else {}
        except Exception:
            self._membership.retry_fresh(fresh)  # tried again after the next poll
            raise
        if unplaced := {tp: floor for tp, floor in fresh.items() if tp not in starts}:
            # Not in kafka-python's assignment at this moment (a rebalance in progress):
            # not fetched until a later poll places them where the group says.
            self._membership.retry_fresh(unplaced)
        owned = ownership.assigned
        fetcher = self._fetcher
        # A fresh partition never keeps the position it had before it was revoked.
        wanted = {
            tp: offset
            for tp, offset in fetcher.positions.items()
            if tp in owned and tp not in fresh
        }
        wanted.update((tp, offset) for tp, offset in starts.items() if tp in owned)
        if starts or wanted.keys() != fetcher.assignment:
            fetcher.assign(wanted)
        # Pauses asked for before the fetcher had the partition hold from now on.
        fetcher.set_paused(ownership.paused)
        consumer = self._consumer
        if running := consumer.assignment() - consumer.paused():
            consumer.pause(*running)
        return bool(fresh)

    # -- GroupConsumer (poll, close and the rest: KafkaGroupConsumer) -------------------
    def _rewind(self, batch: Batch) -> None:
        self._fetcher.rewind(batch)

    async def seek(self, tp: TP, offset: int) -> None:
        def work() -> None:
            self._follow_assignment()  # a partition the listener just got is seekable
            self._fetcher.seek(tp, offset)

        await self._owner.run(work)

    async def position(self, tp: TP) -> int:
        def work() -> int:
            self._follow_assignment()
            return self._fetcher.position(tp)

        return await self._owner.run(work)

    async def pause(self, tps: Iterable[TP]) -> None:
        """Cancellation: the partitions count as paused at once; the fetcher follows
        in this call or, if it is cancelled before its thread started, after the next
        poll (:meth:`_follow_assignment`)."""
        ownership = self._membership.pause(tps)
        await self._owner.run(self._fetcher.set_paused, ownership.paused)

    async def resume(self, tps: Iterable[TP]) -> None:
        """Cancellation: as :meth:`pause`."""
        ownership = self._membership.resume(tps)
        await self._owner.run(self._fetcher.set_paused, ownership.paused)

    def _close_client(self) -> None:
        try:
            super()._close_client()  # revokes through the listener, leaves the group
        finally:
            self._fetcher.close()
