"""Group assignment shared by every transport: the default assignor and the cooperative
two-round rule.

The default assignor is co-partitioned (partition ``p`` of every subscribed topic goes to
the same member, so a table partition and its source partition meet on one worker) and
sticky (a partition stays with the member that owned it while the load stays balanced).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ._base import TP, MemberAssignment, MemberSubscription, RebalanceProtocol

__all__ = [
    "CoPartitionedAssignor",
    "copartitioned",
    "sticky_balanced",
    "withhold_moving_partitions",
]


class CoPartitionedAssignor:
    """Co-partitioned, sticky, balanced assignment of partition numbers to members.

    Partition numbers (``0..max(partitions)-1``) are the unit: each goes to one member with
    every topic that has that partition. Members differ by at most one partition number.
    """

    name = "trio-tables-copartitioned"
    rebalance_protocols: Sequence[RebalanceProtocol] = ("cooperative", "eager")

    def metadata(self, topics: frozenset[str]) -> bytes:
        return b""

    def on_assignment(self, assignment: MemberAssignment, generation: int) -> None:
        pass

    def assign(
        self, partitions: Mapping[str, int], members: Mapping[str, MemberSubscription]
    ) -> Mapping[str, MemberAssignment]:
        numbers = range(max(partitions.values(), default=0))
        member_ids = sorted(members)
        if not member_ids:
            return {}
        owner = sticky_balanced(
            numbers,
            member_ids,
            {m: {tp.partition for tp in members[m].owned} for m in member_ids},
        )
        return {
            m: MemberAssignment(tps) for m, tps in copartitioned(owner, partitions, members).items()
        }


def copartitioned(
    owner: Mapping[int, str],
    partitions: Mapping[str, int],
    members: Mapping[str, MemberSubscription],
) -> dict[str, frozenset[TP]]:
    """Each member's topic-partitions when partition number ``n`` of every topic it
    subscribes to goes to ``owner[n]``."""
    result: dict[str, set[TP]] = {m: set() for m in members}
    for number, member in owner.items():
        for topic, count in partitions.items():
            if number < count and topic in members[member].topics:
                result[member].add(TP(topic, number))
    return {m: frozenset(tps) for m, tps in result.items()}


def sticky_balanced(
    numbers: range,
    member_ids: Sequence[str],
    owned: Mapping[str, set[int]],
    *,
    preference: Callable[[int, str], int] | None = None,
) -> dict[int, str]:
    """Give each number to one member: keep previous owners up to the balanced quota,
    then hand the rest out among members below their quota, the one with the highest
    ``preference(number, member)`` first (then the least loaded, then by member id)."""
    base, extra = divmod(len(numbers), len(member_ids))
    # The members allowed one more than `base`: prefer those that already own more.
    by_load = sorted(member_ids, key=lambda m: (-len(owned.get(m, ())), m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_load)}
    owner: dict[int, str] = {}
    load = dict.fromkeys(member_ids, 0)
    for member in by_load:
        for number in sorted(owned.get(member, ())):
            if number in numbers and number not in owner and load[member] < quota[member]:
                owner[number] = member
                load[member] += 1
    for number in numbers:
        if number not in owner:
            room = [m for m in member_ids if load[m] < quota[m]]

            def rank(m: str, number: int = number) -> tuple[int, int, str]:
                wish = preference(number, m) if preference is not None else 0
                return (-wish, load[m] - quota[m], m)

            member = min(room, key=rank)
            owner[number] = member
            load[member] += 1
    return owner


def withhold_moving_partitions(
    target: Mapping[str, MemberAssignment], members: Mapping[str, MemberSubscription]
) -> dict[str, MemberAssignment]:
    """First round of a cooperative rebalance: a partition that another member still owns
    is not given to its new owner yet. The old owner sees it disappear, revokes it and
    asks for another rebalance, in which it is unowned and assigned."""
    current_owner = {tp: m for m, sub in members.items() for tp in sub.owned}
    return {
        member: MemberAssignment(
            frozenset(
                tp for tp in assignment.partitions if current_owner.get(tp, member) == member
            ),
            assignment.user_data,
        )
        for member, assignment in target.items()
    }
