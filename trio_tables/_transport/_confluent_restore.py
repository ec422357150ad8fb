"""The restore consumer on librdkafka (``fetch_client="confluent-kafka"``, the default):
changelog replay for recovery, standby copies, global tables and the CLI.

Threads: the fetcher's state changes only in the client's worker thread (every
read-modify-write of it, ``assign``/``pause``/``resume`` included, runs there in one
call); the Trio thread only reads its ``assignment`` and ``paused`` (immutable sets
replaced whole).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._base import TP
from ._kafka_bridge import ClientOwner
from ._kafka_consumer import HighWatermarkProbe, _KafkaFetching
from ._librdkafka import Batch, LibrdkafkaFetcher
from ._retry import RetryPolicy

__all__ = ["ConfluentRestoreConsumer"]


class ConfluentRestoreConsumer(_KafkaFetching):
    """Implements :class:`~trio_tables._transport._base.RestoreConsumer` on librdkafka.

    Polling, cancellation and closing are the kafka-python consumer's; every call runs
    in a worker thread through the client's :class:`ClientOwner`, one at a time (state
    changes too: never while a poll is in its thread). End offsets come from the
    kafka-python high-watermark probe, right on every broker (BROKER.md).
    """

    def __init__(
        self,
        owner: ClientOwner,
        fetcher: LibrdkafkaFetcher,
        probe: HighWatermarkProbe,
        *,
        max_poll_records: int,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(owner, fetcher.consumer, probe, retry=retry)
        self._fetcher = fetcher
        self._max_poll_records = max(max_poll_records, 1)

    def _fetch_batch(self, timeout: float, max_records: int | None) -> Batch:
        return self._fetcher.fetch(timeout, max_records or self._max_poll_records)

    def _rewind(self, batch: Batch) -> None:
        self._fetcher.rewind(batch)

    def _close_client(self) -> None:
        self._fetcher.close()

    async def seek(self, tp: TP, offset: int) -> None:
        await self._owner.run(self._fetcher.seek, tp, offset)

    async def position(self, tp: TP) -> int:
        return await self._owner.run(self._fetcher.position, tp)

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = sorted(set(tps))
        if not wanted:
            return {}
        return await self._retry.run(
            "fetching beginning offsets",
            lambda: self._owner.run(self._fetcher.low_watermarks, wanted),
        )

    async def assign(self, tps: Iterable[TP]) -> None:
        """Replace the assignment: kept partitions keep their position, new ones start at
        their beginning (asks the broker: retried while it is unreachable; a failed
        attempt changes nothing). Cancellation: one thread hop, so all or nothing."""
        wanted = frozenset(tps)
        fetcher = self._fetcher

        def work() -> None:
            new = sorted(wanted - fetcher.assignment)
            starts = fetcher.low_watermarks(new) if new else {}
            kept = {tp: fetcher.positions[tp] for tp in wanted if tp in fetcher.positions}
            fetcher.assign({**kept, **starts})

        await self._retry.run("assigning partitions", lambda: self._owner.run(work))

    def assignment(self) -> frozenset[TP]:
        return self._fetcher.assignment

    async def pause(self, tps: Iterable[TP]) -> None:
        """Cancellation: one thread hop, so all or nothing."""
        wanted = frozenset(tps)
        fetcher = self._fetcher
        await self._owner.run(lambda: fetcher.set_paused(fetcher.paused | wanted))

    async def resume(self, tps: Iterable[TP]) -> None:
        """Cancellation: one thread hop, so all or nothing."""
        wanted = frozenset(tps)
        fetcher = self._fetcher
        await self._owner.run(lambda: fetcher.set_paused(fetcher.paused - wanted))

    def paused(self) -> frozenset[TP]:
        return self._fetcher.paused
