"""What the threads of a Kafka group member share: the partitions its rebalance listener
was told it owns, and a snapshot of its group membership.

Threads: three threads touch a group consumer's state. The *Trio thread* runs the
listener task (assignments, revocations) and ``pause``/``resume``; the client's *worker
thread* (one call at a time, holding the client's limiter) reads the ownership after each
poll and takes the newly assigned partitions to position them; kafka-python's *IO
thread* completes joins and runs the rebalance listener bridge. The rule: every shared
attribute here holds an immutable value that is replaced whole under a lock, and is read
without the lock (one reference read gives one consistent value).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .._base import TP, GroupMetadata

__all__ = ["Membership", "Ownership"]


@attrs.frozen
class Ownership:
    """One consistent view of what this member owns (never mutated: replaced)."""

    #: Partitions the listener was last told this member owns.
    assigned: frozenset[TP] = frozenset()
    #: Partitions paused by the application (a subset of ``assigned``).
    paused: frozenset[TP] = frozenset()
    #: Assigned partitions whose start the worker thread has not fixed yet: for a
    #: "latest" reset the true end offset at assignment (the floor), else ``None``.
    #: A new mapping for every change; never mutated.
    fresh: Mapping[TP, int | None] = attrs.field(factory=dict)


class Membership:
    """The shared state of one group consumer (see the module docstring)."""

    def __init__(self) -> None:
        # Written by the Trio thread (listener task, pause/resume) and the worker thread
        # (take_fresh/retry_fresh), read by both: replaced whole under _lock.
        self._lock = threading.Lock()
        self.ownership = Ownership()
        # Written by the worker thread (after each poll) and kafka-python's IO thread (at
        # joins and listener calls), read by the Trio thread: replaced whole under
        # _group_lock, which makes "read the client's state, store it" one step.
        self._group_lock = threading.Lock()
        self.group = GroupMetadata(group_id="", generation_id=-1, member_id="")

    def _change(self, change: Callable[[Ownership], Ownership]) -> Ownership:
        with self._lock:
            self.ownership = new = change(self.ownership)
        return new

    # -- Trio thread -------------------------------------------------------------------
    def assign(self, floors: Mapping[TP, int | None]) -> None:
        """The listener was told ``floors``' partitions are assigned; their start is
        fixed by the worker thread after the next poll (:meth:`take_fresh`)."""
        self._change(
            lambda o: attrs.evolve(
                o, assigned=o.assigned | frozenset(floors), fresh={**o.fresh, **floors}
            )
        )

    def release(self, tps: frozenset[TP]) -> None:
        """The listener was told ``tps`` are revoked or lost."""
        self._change(
            lambda o: Ownership(
                o.assigned - tps,
                o.paused - tps,
                {tp: floor for tp, floor in o.fresh.items() if tp not in tps},
            )
        )

    def pause(self, tps: Iterable[TP]) -> Ownership:
        wanted = frozenset(tps)
        return self._change(lambda o: attrs.evolve(o, paused=o.paused | wanted))

    def resume(self, tps: Iterable[TP]) -> Ownership:
        wanted = frozenset(tps)
        return self._change(lambda o: attrs.evolve(o, paused=o.paused - wanted))

    # -- worker thread -------------------------------------------------------------------
    def take_fresh(self) -> Ownership:
        """The current ownership; its ``fresh`` partitions are the caller's to position
        now (they are removed from the shared state in the same step)."""
        with self._lock:
            current = self.ownership
            if current.fresh:
                self.ownership = attrs.evolve(current, fresh={})
        return current

    def retry_fresh(self, fresh: Mapping[TP, int | None]) -> None:
        """Positioning ``fresh`` failed: hand them back for the next poll (those still
        assigned; a newer floor of the same partition wins)."""
        self._change(
            lambda o: attrs.evolve(
                o,
                fresh={
                    **{tp: f for tp, f in fresh.items() if tp in o.assigned},
                    **o.fresh,
                },
            )
        )

    # -- worker thread or kafka-python's IO thread ---------------------------------------
    def note_group(self, read: Callable[[], Any]) -> None:
        """Store ``read()`` (kafka-python's ``group_metadata()``) as the snapshot. Called
        only by the threads that own the client's state: its worker thread holding the
        limiter, or its IO thread during a rebalance."""
        with self._group_lock:
            raw = read()
            self.group = GroupMetadata(
                raw.group_id, raw.generation_id, raw.member_id, raw.group_instance_id
            )
