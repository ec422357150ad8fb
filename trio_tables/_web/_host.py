"""What the web endpoint reads of a running worker: :class:`WebHost`.

The manager is a ``WebHost``; the endpoint's modules see it only through this protocol
(no import of the manager, so no import circle). Everything named here is read on the
Trio thread, between two checkpoints: a handler never sees half of a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .._assignor import TablesAssignor
from .._commit import CommitCycle
from .._flow import StreamFlow
from .._group import GroupMembership
from .._ledger import PartitionLedger
from .._rebalance import RebalanceSupervisor
from .._table import Collection

__all__ = ["WebHost"]


class WebHost(Protocol):
    """The parts of a ``TableManager`` the endpoint reads."""

    app_id: str
    worker_id: str
    tables: Mapping[str, Collection]
    _ledger: PartitionLedger
    _supervisor: RebalanceSupervisor
    _assignor: TablesAssignor
    _membership: GroupMembership
    _cycle: CommitCycle
    _flow: StreamFlow

    @property
    def actives_ready(self) -> bool: ...

    @property
    def standbys_ready(self) -> bool: ...
