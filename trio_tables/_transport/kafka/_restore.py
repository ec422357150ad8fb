"""The Kafka transport's restore consumer: a :class:`~._fetcher.Fetcher` (librdkafka
or kafka-python) driven from Trio, with beginning and end offsets from the transport's
high-watermark probe. The worker's changelog reader (:mod:`._changelog_reader`) serves
every table's restores, standby copies and global tables from one of these.

Threads: the fetcher's state changes only in the client's worker thread (every
read-modify-write of it, ``assign``/``pause``/``resume`` included, runs there in one
call, through the :class:`~._bridge.ClientOwner`); the Trio thread only reads its
``assignment`` and ``paused`` (immutable sets replaced whole).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence

import trio

from ...errors import TransportClosed
from .._base import TP, Record
from .._retry import RetryPolicy
from ._bridge import ClientOwner
from ._consumer import HighWatermarkProbe
from ._fetcher import Batch, Fetcher

__all__ = ["FetcherRestoreConsumer"]


class FetcherRestoreConsumer:
    """Implements :class:`~trio_tables._transport._base.RestoreConsumer` on a fetcher.

    Every fetcher call runs in a worker thread through ``owner``, one at a time (so a
    state change never runs while a poll is in its thread). Cancellation: see each
    method; a call whose thread started completes there.
    """

    def __init__(
        self,
        owner: ClientOwner,
        fetcher: Fetcher,
        probe: HighWatermarkProbe,
        *,
        max_poll_records: int,
        retry: RetryPolicy,
    ) -> None:
        self._owner = owner
        self._fetcher = fetcher
        self._probe = probe
        self._max_poll_records = max(max_poll_records, 1)
        self._retry = retry

    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        """Retried while the broker is unreachable. Cancellation: the records fetched
        are handed back (the fetcher rewinds to them), so none is lost."""
        box: list[Batch] = []  # filled by the worker thread, read after its hop returned
        limit = max_records or self._max_poll_records

        def work() -> None:
            box.append(self._fetcher.fetch(timeout, limit))

        try:
            await self._retry.run("poll", lambda: self._owner.run(work))
            # A cancellation that arrived while the thread ran is delivered here, with
            # the records handed back.
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            if box and box[0]:
                with trio.CancelScope(shield=True), contextlib.suppress(TransportClosed):
                    await self._owner.run(self._fetcher.rewind, box[0])
            raise
        return box[0]

    async def seek(self, tp: TP, offset: int) -> None:
        await self._owner.run(self._fetcher.seek, tp, offset)

    async def position(self, tp: TP) -> int:
        return await self._owner.run(self._fetcher.position, tp)

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        return await self._probe.beginning_offsets(tps)

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        return await self._probe.end_offsets(tps)

    async def assign(self, tps: Iterable[TP]) -> None:
        """Replace the assignment: kept partitions keep their position, new ones start
        at their beginning. Cancellation: nothing changes unless the last thread hop
        started, which then completes (all or nothing)."""
        wanted = frozenset(tps)
        fetcher = self._fetcher
        starts = await self.beginning_offsets(wanted - fetcher.assignment)

        def work() -> None:
            kept = {tp: fetcher.positions[tp] for tp in wanted if tp in fetcher.positions}
            new = {tp: starts[tp] for tp in wanted if tp not in kept}
            fetcher.assign({**kept, **new})

        await self._owner.run(work)

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

    async def close(self) -> None:
        """Close the client (shielded from cancellation); later calls raise
        :class:`~trio_tables.errors.TransportClosed`."""
        await self._owner.close(self._fetcher.close)
