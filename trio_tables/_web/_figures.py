"""A worker's figures, gathered for ``/status`` and ``/metrics``: :class:`Figures`.

Most figures are read from what the worker keeps anyway (the ledger, the tables'
recovery and standby progress, the commit cycle's counts); three need I/O and are
refreshed at most once per ``max_age`` seconds, when asked, never on the hot path:

* the end offsets of the assigned source partitions (consumer lag) and of the standby
  copies' changelog partitions (standby lag), through the group consumer's end-offset
  probe (its own client: the consumer's polls are not disturbed);
* the tables' key counts (``sqlite://`` stores count in a worker thread) and store sizes.

Cancellation: a refresh cancelled half-way keeps the figures of the last complete one.
Threads: the Trio thread, and a worker thread per ``sqlite://`` key count (it touches
only the store, whose connections are its own).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import trio

from .._table import Collection
from .._transport._base import TP
from ._host import WebHost

__all__ = ["Figures", "table_sizes"]

logger = logging.getLogger("trio_tables.web")


def _store_bytes(table: Collection) -> int | None:
    path = getattr(table.data, "path", None)
    if not isinstance(path, Path):
        return None
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def table_sizes(table: Collection, partitions: frozenset[int]) -> tuple[dict[int, int], int | None]:
    """Keys per partition of ``table`` in its store (as of its last commit cycle) and the
    store's size in bytes (``None`` for memory stores). Blocking for persistent stores:
    call in a worker thread."""
    data = table.data
    return {p: data.count(p) for p in sorted(partitions)}, _store_bytes(table)


class Figures:
    """The figures of one worker (see the module docstring)."""

    def __init__(self, host: WebHost, *, max_age: float = 1.0, probe_timeout: float = 5.0) -> None:
        self.host = host
        self.max_age = max_age
        self.probe_timeout = probe_timeout
        self.ends: dict[TP, int] = {}
        self._ends_at = -float("inf")
        self.sizes: dict[str, tuple[dict[int, int], int | None]] = {}
        self._sizes_at = -float("inf")
        self._lock = trio.Lock()

    # -- refreshing ------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Refresh the end offsets and table sizes if older than ``max_age``."""
        async with self._lock:
            now = trio.current_time()
            if now - self._ends_at >= self.max_age:
                await self._refresh_ends()
                self._ends_at = trio.current_time()
            if now - self._sizes_at >= max(self.max_age, 5.0):
                await self._refresh_sizes()
                self._sizes_at = trio.current_time()

    def _changelog_tps(self) -> dict[TP, tuple[str, int]]:
        standbys = self.host._supervisor.standbys
        return {
            TP(table.changelog_topic_name, p): (name, p)
            for name, table in self.host.tables.items()
            if not table.is_global
            for p in standbys
        }

    async def _refresh_ends(self) -> None:
        consumer = self.host._membership.consumer
        if consumer is None:
            self.ends = {}
            return
        wanted = set(self.host._supervisor.assigned) | set(self._changelog_tps())
        if not wanted:
            self.ends = {}
            return
        try:
            with trio.move_on_after(self.probe_timeout):
                self.ends = await consumer.end_offsets(wanted)
        except Exception as exc:  # the group is being left or re-joined: keep the last
            logger.debug("%s: end offsets unavailable: %r", self.host.app_id, exc)

    async def _refresh_sizes(self) -> None:
        sizes = {}
        for name, table in list(self.host.tables.items()):
            partitions = (
                frozenset(table.data.partitions()) if table.is_global else table.active_partitions
            )
            if table.data.persistent:
                sizes[name] = await trio.to_thread.run_sync(table_sizes, table, partitions)
            else:
                sizes[name] = table_sizes(table, partitions)
        self.sizes = sizes

    # -- figures ---------------------------------------------------------------------------
    def partitions(self) -> list[dict[str, Any]]:
        """Per assigned source partition: readiness, offsets, lag, events processed."""
        host = self.host
        ledger = host._ledger
        advanced = ledger.offsets_advanced()
        rows = []
        for tp in sorted(host._supervisor.assigned):
            processed = ledger.processed.get(tp)
            committed = ledger.committed.get(tp)
            end = self.ends.get(tp)
            position = processed if processed is not None else committed
            rows.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "ready": tp.partition in ledger.ready,
                    "processed": processed,
                    "committed": committed,
                    "end": end,
                    # Nothing processed or committed yet: the group starts at the
                    # beginning (auto_offset_reset="earliest").
                    "lag": None if end is None else max(end - (position or 0), 0),
                    "events_processed": advanced.get(tp, 0),
                }
            )
        return rows

    def recovery(self) -> dict[str, dict[int, dict[str, int]]]:
        """Per table and partition: the current or last restore's position and target."""
        return {
            name: {
                p: {"position": pos, "target": target, "remaining": max(target - pos, 0)}
                for p, (pos, target) in sorted(table.recovery_progress.items())
            }
            for name, table in self.host.tables.items()
        }

    def standbys(self) -> dict[str, dict[int, dict[str, int | None]]]:
        """Per table and standby partition: the next changelog offset read, the records
        held back until the group commits their events, the changelog's end offset and
        the lag (records not applied yet: end - next + held back)."""
        result: dict[str, dict[int, dict[str, int | None]]] = {}
        for name, table in self.host.tables.items():
            if table.is_global:
                continue
            rows: dict[int, dict[str, int | None]] = {}
            for p, (position, held) in sorted(table.standby_progress.items()):
                end = self.ends.get(TP(table.changelog_topic_name, p))
                lag = None if end is None else max(end - position, 0) + held
                rows[p] = {"position": position, "held_back": held, "end": end, "lag": lag}
            result[name] = rows
        return result

    def tables(self) -> dict[str, dict[str, Any]]:
        sent = self.host._cycle.metrics.changelog_sent
        result = {}
        for name, table in self.host.tables.items():
            keys, size = self.sizes.get(name, ({}, None))
            result[name] = {
                "global": table.is_global,
                "windowed": table._windowing is not None,
                "keys": sum(keys.values()) if keys else 0,
                "keys_by_partition": keys,
                "store_bytes": size,
                "late_updates": table.late_updates,
                "changelog_records_sent": sent.get(name, 0),
                "recovery_records_applied": table.replayed,
                "standby_records_applied": table.standby_applied,
            }
        return result

    def skipped(self) -> dict[str, int]:
        return {topic: stream.skipped for topic, stream in self.host._flow.streams.items()}

    def status(self) -> dict[str, Any]:
        """The ``/status`` document (see docs/operations.md)."""
        host = self.host
        metrics = host._cycle.metrics
        assigned: dict[str, list[int]] = {}
        for tp in sorted(host._supervisor.assigned):
            assigned.setdefault(tp.topic, []).append(tp.partition)
        return {
            "app": host.app_id,
            "worker_id": host.worker_id,
            "host": host._assignor.host,
            "generation": host._supervisor.generation,
            "assignment": assigned,
            "active_partitions": sorted(host._ledger.ready),
            "standby_partitions": sorted(host._supervisor.standbys),
            "actives_ready": host.actives_ready,
            "standbys_ready": host.standbys_ready,
            "events_processed": host._ledger.events_processed(),
            "partitions": self.partitions(),
            # (json.dumps writes the partition numbers of these mappings as strings)
            "recovery": self.recovery(),
            "standbys": self.standbys(),
            "tables": self.tables(),
            "skipped_records": self.skipped(),
            "commits": {
                "cycles": metrics.cycles,
                "failed": metrics.failed,
                "last_latency_seconds": metrics.last_latency,
            },
        }

