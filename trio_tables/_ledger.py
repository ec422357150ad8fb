"""The partition ledger: where each source partition stands, in one place.

For every source partition owned here the ledger knows

* whether it is *ready* (recovered by every table, handed to the streams);
* the *processed* offset (one past the last event the streams finished);
* the *committed* offset (what the group has, as far as this worker knows);
* the source offsets the stores were last *persisted* with (per partition number, by
  topic), so a commit cycle writes them only when they changed.

It is plain data with no I/O and no awaits: every method is atomic with respect to
cancellation. Threads: only the Trio thread touches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._transport._base import TP

__all__ = ["PartitionLedger"]


class PartitionLedger:
    """Per-partition offsets of one worker (see the module docstring)."""

    def __init__(self) -> None:
        self.processed: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}
        self.ready: set[int] = set()
        self.persisted_sources: dict[int, dict[str, int]] = {}
        # Events finished since the last commit cycle took its changes (the backlog a
        # cycle in flight may let build up, see StreamFlow).
        self.events_since_take = 0
        # Counted per commit cycle, not per event (metrics): events finished before the
        # last take; per partition, the first offset fed to the streams since it was
        # assigned here (set per polled batch) and the offsets processed under earlier
        # assignments.
        self.events_before_take = 0
        self.first_fed: dict[TP, int] = {}
        self.advanced_before: dict[TP, int] = {}

    def event_processed(self, tp: TP, offset: int) -> None:
        """The event at ``offset`` of ``tp`` is finished: ``offset + 1`` may be
        committed once its effects are persisted."""
        self.processed[tp] = offset + 1
        self.events_since_take += 1

    def events_processed(self) -> int:
        """Events finished by this worker since it started (skipped undecodable records
        included)."""
        return self.events_before_take + self.events_since_take

    def changes_taken(self) -> None:
        """A commit cycle took the tables' changes: the backlog counts from here."""
        self.events_before_take += self.events_since_take
        self.events_since_take = 0

    def fed(self, tp: TP, first_offset: int) -> None:
        """A polled batch of ``tp`` starting at ``first_offset`` went to a stream."""
        if tp not in self.first_fed:
            self.first_fed[tp] = first_offset

    def offsets_advanced(self) -> dict[TP, int]:
        """Per source partition, how far this worker's processing moved its offset since
        it started (over every assignment of it): the events processed there, plus the
        offsets of transaction markers in between."""
        advanced = dict(self.advanced_before)
        for tp, first in self.first_fed.items():
            processed = self.processed.get(tp)
            if processed is not None and processed > first:
                advanced[tp] = advanced.get(tp, 0) + processed - first
        return advanced

    def snapshot(self, included: Iterable[int], busy: frozenset[int]) -> dict[TP, int]:
        """The processed offsets of the partitions numbered in ``included`` whose event
        is not in process (``busy``): what a commit cycle that takes the tables' changes
        now may commit once they are persisted."""
        wanted = set(included) - busy
        return {tp: offset for tp, offset in self.processed.items() if tp.partition in wanted}

    def offsets_to_commit(
        self, offsets: Mapping[TP, int], assigned: frozenset[TP] | set[TP]
    ) -> dict[TP, int]:
        """The ``offsets`` of partitions still ``assigned`` that move past the last
        commit."""
        committed = self.committed
        return {
            tp: offset
            for tp, offset in offsets.items()
            if tp in assigned and offset > committed.get(tp, -1)
        }

    def record_committed(self, offsets: Mapping[TP, int]) -> None:
        """``offsets`` are committed in the group."""
        self.committed.update(offsets)

    def learn_committed(self, offsets: Mapping[TP, int | None]) -> None:
        """The group's committed offsets, as read at an assignment."""
        for tp, offset in offsets.items():
            if offset is not None:
                self.committed[tp] = offset

    def changed_sources(self, snapshot: Mapping[TP, int]) -> dict[int, dict[str, int]]:
        """The source offsets of ``snapshot`` by partition number, only for partitions
        whose offsets differ from what the stores were last persisted with."""
        sources: dict[int, dict[str, int]] = {}
        for tp, offset in snapshot.items():
            sources.setdefault(tp.partition, {})[tp.topic] = offset
        return {p: s for p, s in sources.items() if self.persisted_sources.get(p) != s}

    def sources_persisted(self, sources: Mapping[int, dict[str, int]]) -> None:
        self.persisted_sources.update(sources)

    def forget(self, partitions: frozenset[int]) -> None:
        """``partitions`` left this worker: drop everything known about them."""
        self.ready -= partitions
        leaving = [(tp, f) for tp, f in self.first_fed.items() if tp.partition in partitions]
        for tp, first in leaving:
            processed = self.processed.get(tp)
            if processed is not None and processed > first:
                self.advanced_before[tp] = self.advanced_before.get(tp, 0) + processed - first
            del self.first_fed[tp]
        for table in (self.processed, self.committed):
            for tp in [tp for tp in table if tp.partition in partitions]:
                del table[tp]
        for partition in partitions:
            self.persisted_sources.pop(partition, None)
