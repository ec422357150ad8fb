"""Helpers shared by the contract tests: a recording rebalance listener and bounded
polling loops (hang guards, never timing assertions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import trio

from trio_tables._transport._base import TP, GroupConsumer, Record, RestoreConsumer

# Generous: rebalances on Tansu take a few seconds (join rounds of half a session timeout).
HANG_GUARD = 60.0

Consumer = GroupConsumer | RestoreConsumer


class RecordingListener:
    """Records every call; on revocation returns ``offsets_for(revoked)``."""

    def __init__(
        self, offsets_for: Callable[[frozenset[TP]], Mapping[TP, int] | None] | None = None
    ) -> None:
        self.events: list[tuple[str, frozenset[TP]]] = []
        self._offsets_for = offsets_for

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> Mapping[TP, int] | None:
        self.events.append(("revoked", revoked))
        return self._offsets_for(revoked) if self._offsets_for else None

    async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
        self.events.append(("assigned", assigned))

    async def on_partitions_lost(self, lost: frozenset[TP]) -> None:
        self.events.append(("lost", lost))

    def all(self, kind: str) -> frozenset[TP]:
        return frozenset().union(*(tps for k, tps in self.events if k == kind))


def flatten(batch: Mapping[TP, Sequence[Record]]) -> list[Record]:
    return [record for records in batch.values() for record in records]


async def poll_until(
    consumer: Consumer,
    done: Callable[[list[Record]], bool],
    *,
    max_records: int | None = None,
) -> list[Record]:
    """Poll (at least once: a consumer learns about rebalances in poll), collecting
    records, until ``done(collected)``."""
    collected: list[Record] = []
    with trio.fail_after(HANG_GUARD):
        while True:
            batch = await consumer.poll(timeout=0.2, max_records=max_records)
            for tp, records in batch.items():
                offsets = [r.offset for r in records]
                assert offsets == sorted(offsets), f"{tp} out of order: {offsets}"
                assert all(r.tp == tp for r in records)
            collected.extend(flatten(batch))
            if done(collected):
                return collected


async def poll_count(consumer: Consumer, count: int) -> list[Record]:
    return await poll_until(consumer, lambda got: len(got) >= count)


async def wait_for_assignment(consumer: GroupConsumer, wanted: Iterable[TP]) -> list[Record]:
    """Poll until the consumer owns exactly ``wanted``; returns records polled meanwhile."""
    target = frozenset(wanted)
    return await poll_until(consumer, lambda _: consumer.assignment() == target)


async def read_to_end(consumer: Consumer, tps: Iterable[TP]) -> list[Record]:
    """Poll until every position reaches the end offset taken now."""
    wanted = list(tps)
    ends = await consumer.end_offsets(wanted)
    collected: list[Record] = []
    with trio.fail_after(HANG_GUARD):
        while True:
            positions = {tp: await consumer.position(tp) for tp in wanted}
            if all(positions[tp] >= ends[tp] for tp in wanted):
                return collected
            collected.extend(flatten(await consumer.poll(timeout=0.2)))
