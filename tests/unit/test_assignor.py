"""The application's assignor: co-partitioning, stickiness, freshness, standbys, hosts."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from trio_tables._assignor import TablesAssignor
from trio_tables._transport._base import TP, MemberAssignment, MemberSubscription

TOPICS = {"words": 6, "clicks": 6}


def _member(
    assignor: TablesAssignor, owned: set[int] = frozenset(), topics: dict[str, int] = TOPICS
) -> MemberSubscription:
    return MemberSubscription(
        frozenset(topics),
        assignor.metadata(frozenset(topics)),
        frozenset(TP(t, p) for t in topics for p in owned),
    )


def _numbers(assignment: MemberAssignment) -> set[int]:
    return {tp.partition for tp in assignment.partitions}


def _with_freshness(fresh: dict[int, int], host: str | None = None) -> TablesAssignor:
    assignor = TablesAssignor(standby_replicas=1, host=host)
    assignor.freshness = lambda: fresh
    return assignor


def test_copartitioned_balanced_and_sticky() -> None:
    leader = TablesAssignor()
    members = {
        "a": _member(leader, {0, 1, 2}),
        "b": _member(leader, {3, 4, 5}),
        "c": _member(leader),
    }
    result = leader.assign(TOPICS, members)
    for assignment in result.values():
        numbers = _numbers(assignment)
        assert assignment.partitions == {TP(t, p) for t in TOPICS for p in numbers}
        assert len(numbers) == 2
    assert _numbers(result["a"]) < {0, 1, 2}
    assert _numbers(result["b"]) < {3, 4, 5}


def test_a_moving_partition_goes_to_the_member_with_the_freshest_copy() -> None:
    # Nobody owns anything (say every worker restarted): the local copies decide.
    members = {
        "a": _member(_with_freshness({0: 10, 1: 500})),
        "b": _member(_with_freshness({1: 900, 2: 50})),
        "c": _member(_with_freshness({0: 400})),
    }
    result = TablesAssignor().assign({"words": 3}, members)
    assert {m: _numbers(a) for m, a in result.items()} == {"a": {2}, "b": {1}, "c": {0}}


def test_standbys_go_to_other_members_preferring_fresh_copies() -> None:
    members = {
        "a": _member(_with_freshness({}, "a:1"), {0, 1}),
        "b": _member(_with_freshness({0: 70, 1: 70}, "b:1"), {2, 3}),
        "c": _member(_with_freshness({}, "c:1")),
    }
    leader = TablesAssignor(standby_replicas=1)
    result = leader.assign({"words": 4}, members)
    views = {}
    for member_id, assignment in result.items():
        receiver = TablesAssignor()
        receiver.on_assignment(assignment, generation=7)
        views[member_id] = receiver.view
    owner = {n: m for m, a in result.items() for n in _numbers(a)}
    for n in range(4):
        holders = [m for m, v in views.items() if n in v.standbys]
        assert len(holders) == 1
        assert holders[0] != owner[n]
    # b already holds copies of 0 and 1 (it owned them before), so it keeps them warm.
    assert {0, 1} - set(_numbers(result["b"])) <= views["b"].standbys
    # Everyone sees the same layout, with hosts.
    layout = views["a"]
    assert layout.generation == 7
    assert all(v.active_hosts == layout.active_hosts for v in views.values())
    assert layout.active_hosts == {n: f"{owner[n]}:1" for n in range(4)}
    assert all(len(layout.standby_hosts[n]) == 1 for n in range(4))


def test_no_standby_without_another_member() -> None:
    result = TablesAssignor(standby_replicas=2).assign(
        {"words": 3}, {"a": _member(TablesAssignor())}
    )
    assert _numbers(result["a"]) == {0, 1, 2}
    assert json.loads(result["a"].user_data)["standby"] == []


def test_foreign_user_data_counts_as_nothing_local() -> None:
    members = {
        "a": MemberSubscription(frozenset({"words"}), b"\x00garbage"),
        "b": MemberSubscription(frozenset({"words"}), b'{"v": 99}'),
    }
    result = TablesAssignor(standby_replicas=1).assign({"words": 2}, members)
    assert sorted(len(_numbers(a)) for a in result.values()) == [1, 1]


@given(
    st.integers(1, 12),
    st.lists(st.dictionaries(st.integers(0, 11), st.integers(0, 10**6)), min_size=1, max_size=5),
    st.integers(0, 3),
)
def test_every_partition_once_balanced_and_standbys_distinct(
    count: int, freshness: list[dict[int, int]], replicas: int
) -> None:
    members = {
        f"m{i}": _member(_with_freshness(f), topics={"t": count})
        for i, f in enumerate(freshness)
    }
    result = TablesAssignor(standby_replicas=replicas).assign({"t": count}, members)
    numbers = [n for a in result.values() for n in _numbers(a)]
    assert sorted(numbers) == list(range(count))
    loads = [len(_numbers(a)) for a in result.values()]
    assert max(loads) - min(loads) <= 1
    owner = {n: m for m, a in result.items() for n in _numbers(a)}
    for n in range(count):
        holders = [m for m, a in result.items() if n in json.loads(a.user_data)["standby"]]
        assert owner[n] not in holders
        assert len(holders) == min(replicas, len(members) - 1)
