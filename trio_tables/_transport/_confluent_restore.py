"""The restore consumer on librdkafka (``fetch_client="confluent-kafka"``, the default):
changelog replay for recovery, standby copies, global tables and the CLI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import trio

from ._base import TP, Record
from ._kafka_bridge import ClientOwner
from ._kafka_consumer import HighWatermarkProbe
from ._librdkafka import Batch, LibrdkafkaFetcher

__all__ = ["ConfluentRestoreConsumer"]


class ConfluentRestoreConsumer:
    """Implements :class:`~trio_tables._transport._base.RestoreConsumer` on librdkafka.

    Every call runs in a worker thread through the client's :class:`ClientOwner`, one at
    a time (state changes too: never while a poll is in its thread). End offsets come
    from the kafka-python high-watermark probe, right on every broker (BROKER.md).
    """

    def __init__(
        self,
        owner: ClientOwner,
        fetcher: LibrdkafkaFetcher,
        probe: HighWatermarkProbe,
        *,
        max_poll_records: int,
    ) -> None:
        self._owner = owner
        self._fetcher = fetcher
        self._probe = probe
        self._max_poll_records = max(max_poll_records, 1)

    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        box: list[Batch] = []
        fetcher = self._fetcher

        def work() -> None:
            box.append(fetcher.fetch(timeout, max_records or self._max_poll_records))

        try:
            await self._owner.run(work)
            # As the kafka-python consumer: a cancellation that arrived while the thread
            # ran is delivered here, with the records handed back.
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            if box and box[0]:
                fetcher.rewind(box[0])
            raise
        return box[0]

    async def seek(self, tp: TP, offset: int) -> None:
        await self._owner.run(self._fetcher.seek, tp, offset)

    async def position(self, tp: TP) -> int:
        return await self._owner.run(self._fetcher.position, tp)

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = sorted(set(tps))
        if not wanted:
            return {}
        return await self._owner.run(self._fetcher.low_watermarks, wanted)

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        return await self._probe.end_offsets(tps)

    async def assign(self, tps: Iterable[TP]) -> None:
        """Replace the assignment: kept partitions keep their position, new ones start at
        their beginning."""
        wanted = frozenset(tps)
        fetcher = self._fetcher
        starts = await self.beginning_offsets(wanted - fetcher.assignment)

        def work() -> None:
            kept = {tp: fetcher.positions[tp] for tp in wanted if tp in fetcher.positions}
            fetcher.assign({**kept, **starts})

        await self._owner.run(work)

    def assignment(self) -> frozenset[TP]:
        return self._fetcher.assignment

    async def pause(self, tps: Iterable[TP]) -> None:
        await self._owner.run(self._fetcher.pause, list(tps))

    async def resume(self, tps: Iterable[TP]) -> None:
        await self._owner.run(self._fetcher.resume, list(tps))

    def paused(self) -> frozenset[TP]:
        return frozenset(self._fetcher.paused)

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            if not self._owner.closed:
                await self._owner.run(self._fetcher.close)
                self._owner.closed = True
