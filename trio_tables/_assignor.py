"""The application's group assignor: co-partitioned, sticky, standby-aware.

Every member tells the leader, in its subscription user data, how fresh its local copy
of each partition is (the changelog offsets its stores hold) and the ``host:port`` it
advertises. The leader then

* keeps partitions with their owners while the load stays balanced (sticky), and gives a
  partition that must move to the member with the freshest local copy;
* picks ``standby_replicas`` other members per partition to keep a warm copy, preferring
  those that already hold one;
* sends every member, in its assignment user data, its standby partitions and the map of
  which host serves which partition (for :meth:`TableManager.metadata_for_key`).

kafka-python calls :meth:`metadata` and :meth:`on_assignment` on its IO thread; the
manager publishes its local offsets and reads the latest assignment through attributes
that are replaced whole, never mutated, so no lock is needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence

import attrs

from ._transport._assignment import copartitioned, sticky_balanced
from ._transport._base import MemberAssignment, MemberSubscription, RebalanceProtocol

__all__ = ["GroupView", "KeyMetadata", "TablesAssignor"]

logger = logging.getLogger("trio_tables.assignor")

_VERSION = 1


@attrs.frozen
class KeyMetadata:
    """Where a key lives: its partition, the host of the member that owns it (``None`` if
    that member advertises none or nobody owns it yet) and the hosts holding standbys."""

    partition: int
    active_host: str | None
    standby_hosts: tuple[str, ...] = ()


@attrs.frozen
class GroupView:
    """This member's share of the latest assignment, and the whole group's layout."""

    generation: int = -1
    standbys: frozenset[int] = frozenset()
    active_hosts: Mapping[int, str | None] = attrs.field(factory=dict)
    standby_hosts: Mapping[int, tuple[str, ...]] = attrs.field(factory=dict)


def _decode_member(user_data: bytes) -> tuple[str | None, dict[int, int]]:
    """(advertised host, freshness per partition) from a member's user data; members
    that send something else (another version) count as having nothing local."""
    if not user_data:
        return None, {}
    try:
        raw = json.loads(user_data)
        if raw.get("v") != _VERSION:
            return None, {}
        host = raw.get("host")
        fresh = {int(p): int(n) for p, n in raw.get("fresh", {}).items()}
    except (ValueError, TypeError, AttributeError):
        logger.warning("ignoring unreadable assignor user data %r", user_data[:64])
        return None, {}
    return (str(host) if host else None), fresh


class TablesAssignor:
    """See the module docstring. ``standby_replicas`` is the leader's setting (every
    member of an app is expected to use the same one)."""

    name = "trio-tables"
    rebalance_protocols: Sequence[RebalanceProtocol] = ("cooperative", "eager")

    def __init__(self, *, standby_replicas: int = 0, host: str | None = None) -> None:
        if standby_replicas < 0:
            raise ValueError(f"standby_replicas must be >= 0, not {standby_replicas}")
        self.standby_replicas = standby_replicas
        self.host = host
        # partition -> how much of it this member holds locally (sum over tables of
        # persisted changelog offset + 1); set by the manager, read at each join.
        self.freshness: Callable[[], Mapping[int, int]] = dict
        self.view = GroupView()

    # -- member side -----------------------------------------------------------------
    def metadata(self, topics: frozenset[str]) -> bytes:
        fresh = self.freshness()
        return json.dumps(
            {"v": _VERSION, "host": self.host, "fresh": {str(p): n for p, n in fresh.items()}},
            separators=(",", ":"),
        ).encode()

    def on_assignment(self, assignment: MemberAssignment, generation: int) -> None:
        try:
            raw = json.loads(assignment.user_data) if assignment.user_data else {}
            view = GroupView(
                generation,
                frozenset(int(p) for p in raw.get("standby", ())),
                {int(p): h for p, h in raw.get("active_hosts", {}).items()},
                {int(p): tuple(hs) for p, hs in raw.get("standby_hosts", {}).items()},
            )
        except (ValueError, TypeError, AttributeError):
            logger.warning("ignoring unreadable assignment user data")
            view = GroupView(generation)
        self.view = view

    # -- leader side -----------------------------------------------------------------
    def assign(
        self, partitions: Mapping[str, int], members: Mapping[str, MemberSubscription]
    ) -> Mapping[str, MemberAssignment]:
        member_ids = sorted(members)
        if not member_ids:
            return {}
        numbers = range(max(partitions.values(), default=0))
        decoded = {m: _decode_member(members[m].user_data) for m in member_ids}
        hosts = {m: decoded[m][0] for m in member_ids}
        fresh = {m: decoded[m][1] for m in member_ids}
        owner = sticky_balanced(
            numbers,
            member_ids,
            {m: {tp.partition for tp in members[m].owned} for m in member_ids},
            preference=lambda number, m: fresh[m].get(number, 0),
        )
        standbys = self._standbys(numbers, member_ids, owner, fresh)
        layout = {
            "active_hosts": {str(n): hosts[owner[n]] for n in numbers},
            "standby_hosts": {
                str(n): sorted(h for m in standbys.get(n, ()) if (h := hosts[m])) for n in numbers
            },
        }
        result: dict[str, MemberAssignment] = {}
        for member, tps in copartitioned(owner, partitions, members).items():
            mine = sorted(n for n, ms in standbys.items() if member in ms)
            data = json.dumps({"standby": mine, **layout}, separators=(",", ":")).encode()
            result[member] = MemberAssignment(tps, data)
        return result

    def _standbys(
        self,
        numbers: range,
        member_ids: Sequence[str],
        owner: Mapping[int, str],
        fresh: Mapping[str, Mapping[int, int]],
    ) -> dict[int, list[str]]:
        """Up to ``standby_replicas`` members per partition besides its owner: the ones
        with the freshest copy first, then the least loaded."""
        load = dict.fromkeys(member_ids, 0)
        chosen: dict[int, list[str]] = {}
        wanted = min(self.standby_replicas, len(member_ids) - 1)
        if wanted <= 0:
            return chosen
        for number in numbers:
            candidates = sorted(
                (m for m in member_ids if m != owner[number]),
                key=lambda m: (-fresh[m].get(number, 0), load[m], m),
            )
            picked = candidates[:wanted]
            for m in picked:
                load[m] += 1
            chosen[number] = picked
        return chosen
