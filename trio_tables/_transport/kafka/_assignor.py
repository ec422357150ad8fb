"""Our :class:`~trio_tables._transport._base.Assignor` as a kafka-python assignor.

Threads: kafka-python calls every method on the consumer's IO thread (the leader's
``assign`` too); ``owned`` is written and read only there. ``on_join`` is set on the
Trio thread before the client subscribes, and only read afterwards.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from kafka.coordinator.assignors.abstract import (
    AbstractPartitionAssignor,
)
from kafka.coordinator.assignors.abstract import (
    RebalanceProtocol as KafkaRebalanceProtocol,
)
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from .._assignment import withhold_moving_partitions
from .._base import TP, Assignor, MemberAssignment, MemberSubscription, RebalanceProtocol

__all__ = ["KafkaAssignorAdapter"]

# Subscription v1 carries the partitions each member owns (needed by the cooperative
# protocol, and useful to sticky assignors under the eager one as well).
_SUBSCRIPTION_VERSION = 1
_ASSIGNMENT_VERSION = 1


def _by_topic(tps: Iterable[TP]) -> list[tuple[str, list[int]]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for tp in tps:
        grouped[tp.topic].append(tp.partition)
    return sorted((topic, sorted(parts)) for topic, parts in grouped.items())


class KafkaAssignorAdapter(AbstractPartitionAssignor):  # type: ignore[misc]
    """Runs an :class:`Assignor` inside kafka-python's group protocol.

    Under the cooperative protocol it applies the two-round rule
    (:func:`withhold_moving_partitions`), so the wrapped assignor only computes targets.
    """

    def __init__(self, assignor: Assignor, protocol: RebalanceProtocol) -> None:
        if protocol not in assignor.rebalance_protocols:
            raise ValueError(f"assignor {assignor.name!r} does not support {protocol!r}")
        self.assignor = assignor
        self.protocol = protocol
        self.owned: frozenset[TP] = frozenset()
        #: Called first at every completed join (the group consumer refreshes its
        #: membership snapshot: the generation changed).
        self.on_join: Callable[[], None] | None = None

    @property
    def name(self) -> str:
        return self.assignor.name

    def supported_protocols(self) -> list[KafkaRebalanceProtocol]:
        if self.protocol == "cooperative":
            return [KafkaRebalanceProtocol.COOPERATIVE]
        return [KafkaRebalanceProtocol.EAGER]

    def metadata(self, topics: Iterable[str]) -> Any:
        subscription_tp = ConsumerProtocolSubscription.TopicPartition
        return ConsumerProtocolSubscription(
            version=_SUBSCRIPTION_VERSION,
            topics=sorted(topics),
            user_data=self.assignor.metadata(frozenset(topics)),
            owned_partitions=[
                subscription_tp(topic=topic, partitions=parts)
                for topic, parts in _by_topic(self.owned)
            ],
        )

    def assign(self, cluster: Any, members: Any) -> dict[str, Any]:
        subscriptions: dict[str, MemberSubscription] = {}
        for member in members:
            meta = member.metadata
            owned = frozenset(
                TP(entry.topic, partition)
                for entry in (getattr(meta, "owned_partitions", None) or ())
                for partition in entry.partitions
            )
            subscriptions[member.member_id] = MemberSubscription(
                frozenset(meta.topics), bytes(meta.user_data or b""), owned
            )
        topics = {topic for sub in subscriptions.values() for topic in sub.topics}
        partitions = {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in topics}
        target = self.assignor.assign(partitions, subscriptions)
        if self.protocol == "cooperative":
            target = withhold_moving_partitions(target, subscriptions)
        return {
            member_id: ConsumerProtocolAssignment(
                _ASSIGNMENT_VERSION,
                _by_topic(target.get(member_id, MemberAssignment(frozenset())).partitions),
                target.get(member_id, MemberAssignment(frozenset())).user_data,
            )
            for member_id in subscriptions
        }

    def on_assignment(self, assignment: Any, generation: int) -> None:
        if self.on_join is not None:
            self.on_join()
        partitions = frozenset(TP(tp.topic, tp.partition) for tp in assignment.partitions())
        self.owned = partitions
        self.assignor.on_assignment(
            MemberAssignment(partitions, bytes(assignment.user_data or b"")), generation
        )

    def on_generation_assignment(self, generation: int) -> None:
        pass
