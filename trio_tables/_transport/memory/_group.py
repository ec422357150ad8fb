"""Consumer groups of the in-process broker: membership, join rounds, generations,
assignment by the leader's assignor, committed offsets and evictions.

A *round* starts whenever membership changes (a join, a leave, an eviction) or a member
asks for one (the second round of a cooperative rebalance). Every member takes part from
its own ``poll()`` (see :mod:`._transport`): it revokes what the protocol requires, then
*rejoins* with the partitions it still owns. When every member rejoined, the oldest member
(the leader) runs its assignor and the group moves to a new *generation*.

Liveness is measured with :func:`trio.current_time`: a member that is not inside
``poll()`` for ``session_timeout`` seconds, or that has not rejoined ``rebalance_timeout``
seconds after a round started, is evicted. Evictions happen lazily, when a member of the
group looks at it (every waiting ``poll()`` wakes up in time to do so).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs
import trio

from ...errors import CommitFailed
from .._assignment import withhold_moving_partitions
from .._base import TP, Assignor, MemberAssignment, MemberSubscription, RebalanceProtocol

__all__ = ["Member", "MemoryGroup"]


class _Broker(Protocol):
    """What a group needs of its :class:`~._broker.MemoryBroker` (which creates
    the groups: naming the class here would make the two modules import each other)."""

    def notify(self) -> None: ...

    def partition_count(self, name: str) -> int: ...


@attrs.define(eq=False)
class Member:
    """One member's state as the group coordinator sees it."""

    member_id: str
    topics: frozenset[str]
    assignors: Sequence[Assignor]
    protocol: RebalanceProtocol
    session_timeout: float
    rebalance_timeout: float
    run: object  # the Trio run it lives in; members of a finished run are dropped
    last_seen: float
    in_poll: int = 0
    joined_round: int = -1
    owned: frozenset[TP] = frozenset()
    user_data: bytes = b""
    evicted: bool = False


def _current_run() -> object:
    return trio.lowlevel.current_root_task()


class MemoryGroup:
    """The coordinator of one consumer group in a
    :class:`~._broker.MemoryBroker`."""

    def __init__(self, group_id: str, broker: _Broker) -> None:
        self.group_id = group_id
        self._broker = broker
        self.generation = 0
        self.round = 0
        self.rebalancing = False
        self._round_started = 0.0
        self.members: dict[str, Member] = {}  # oldest first: the first one leads
        self.assignment: dict[str, MemberAssignment] = {}
        self.assignor_name = ""
        self.protocol: RebalanceProtocol = "eager"
        self.committed: dict[TP, int] = {}
        self._ids = itertools.count(1)

    # -- membership ----------------------------------------------------------------
    def join(
        self,
        topics: frozenset[str],
        assignors: Sequence[Assignor],
        protocol: RebalanceProtocol,
        *,
        session_timeout: float,
        rebalance_timeout: float,
    ) -> Member:
        member = Member(
            f"{self.group_id}-member-{next(self._ids)}",
            topics,
            assignors,
            protocol,
            session_timeout,
            rebalance_timeout,
            _current_run(),
            trio.current_time(),
        )
        self.members[member.member_id] = member
        self.start_round()
        return member

    def start_round(self) -> None:
        """Ask every member to rejoin (no-op while a round is already open)."""
        if not self.rebalancing:
            self.rebalancing = True
            self.round += 1
            self._round_started = trio.current_time()
        self._broker.notify()

    def rejoin(self, member: Member, owned: frozenset[TP], user_data: bytes) -> None:
        if member.evicted or member.member_id not in self.members:
            return
        member.joined_round = self.round
        member.owned = owned
        member.user_data = user_data
        self._maybe_complete()

    def leave(self, member: Member) -> None:
        if self.members.pop(member.member_id, None) is None:
            return
        self._after_removal()

    def _after_removal(self) -> None:
        if self.members:
            self.start_round()
            self._maybe_complete()
        else:
            self.rebalancing = False
            self.generation += 1
            self.assignment = {}
            self._broker.notify()

    def expire(self) -> None:
        """Evict members that stopped polling, did not rejoin in time, or belong to a
        Trio run that is over."""
        now = trio.current_time()
        run = _current_run()
        gone = [m for m in self.members.values() if m.run is not run or now >= self._expiry(m)]
        for member in gone:
            member.evicted = True
            del self.members[member.member_id]
        if gone:
            self._after_removal()

    def _expiry(self, member: Member) -> float:
        expiry = math.inf
        if not member.in_poll:
            expiry = member.last_seen + member.session_timeout
        if self.rebalancing and member.joined_round < self.round:
            expiry = min(expiry, self._round_started + member.rebalance_timeout)
        return expiry

    def next_expiry(self) -> float:
        """When :meth:`expire` will next have something to do (``inf``: never)."""
        return min((self._expiry(m) for m in self.members.values()), default=math.inf)

    def _maybe_complete(self) -> None:
        if not self.rebalancing or any(m.joined_round < self.round for m in self.members.values()):
            return
        leader = next(iter(self.members.values()))
        assignor = leader.assignors[0]
        subscriptions = {
            m.member_id: MemberSubscription(m.topics, m.user_data, m.owned)
            for m in self.members.values()
        }
        topics = sorted(set().union(*(m.topics for m in self.members.values())))
        counts = {t: self._broker.partition_count(t) for t in topics}
        target = dict(assignor.assign(counts, subscriptions))
        protocol = leader.protocol
        if protocol == "cooperative":
            target = withhold_moving_partitions(target, subscriptions)
        self.assignment = {m: target.get(m, MemberAssignment(frozenset())) for m in self.members}
        self.assignor_name = assignor.name
        self.protocol = protocol
        self.generation += 1
        self.rebalancing = False
        self._broker.notify()

    # -- offsets -------------------------------------------------------------------
    def owner(self, tp: TP) -> str | None:
        for member_id, assignment in self.assignment.items():
            if tp in assignment.partitions:
                return member_id
        return None

    def commit(self, member: Member | None, generation: int, offsets: Mapping[TP, int]) -> None:
        """A member's commit: it must be in the current generation and own every
        partition it commits."""
        if member is None or member.evicted or member.member_id not in self.members:
            raise CommitFailed(
                f"commit of {_names(offsets)} rejected: this consumer is not a member of "
                f"group {self.group_id!r} (not joined yet, or evicted); the partitions' "
                "owner continues from the last commit"
            )
        if generation != self.generation:
            raise CommitFailed(
                f"commit of {_names(offsets)} rejected: group {self.group_id!r} is at "
                f"generation {self.generation}, this member at {generation} (the group "
                "rebalanced; poll() to take part)"
            )
        mine = self.assignment.get(member.member_id, MemberAssignment(frozenset())).partitions
        if not_owned := [tp for tp in offsets if tp not in mine]:
            raise CommitFailed(
                f"commit rejected: this member does not own {_names(not_owned)} in "
                f"generation {self.generation} of group {self.group_id!r}"
            )
        self.store_offsets(offsets)

    def commit_released(self, member: Member, offsets: Mapping[TP, int]) -> None:
        """Commit on revocation: allowed while no other member owns the partitions."""
        if member.evicted or member.member_id not in self.members:
            raise CommitFailed(f"commit of {_names(offsets)} rejected: member was evicted")
        taken = [tp for tp in offsets if self.owner(tp) not in (None, member.member_id)]
        if taken:
            raise CommitFailed(f"commit rejected: {_names(taken)} already have a new owner")
        self.store_offsets(offsets)

    def check_transactional_commit(self, member_id: str, generation: int) -> None:
        """KIP-447: offsets sent to a transaction need a current member and generation."""
        member = self.members.get(member_id)
        if member is None or generation != self.generation:
            raise CommitFailed(
                f"transactional commit for group {self.group_id!r} rejected: member "
                f"{member_id!r} at generation {generation} is stale (the group is at "
                f"generation {self.generation}); abort the transaction and poll()"
            )

    def store_offsets(self, offsets: Mapping[TP, int]) -> None:
        self.committed.update(offsets)
        self._broker.notify()


def _names(tps: Mapping[TP, int] | Sequence[TP]) -> str:
    return ", ".join(sorted(str(tp) for tp in tps))
