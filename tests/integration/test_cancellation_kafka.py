"""Cancellation never loses or wedges, on the embedded broker: the commit cycle and a
restore cancelled at each of their checkpoints, then a restart checked against the
oracle and the changelog (scenarios in tests/cancellation.py; the same run on the
memory transport in tests/unit/test_cancellation.py). The runs of one scenario are
independent apps, several at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cancellation import (
    App,
    commit_scenario,
    every_checkpoint,
    recovery_scenario,
    sqlite_store,
)

pytestmark = pytest.mark.kafka

SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


async def test_commit_cancelled_at_every_checkpoint(kafka_broker: Any) -> None:
    steps = await every_checkpoint(
        commit_scenario, lambda: App(kafka_broker.url, "memory://", SETTINGS), parallel=8
    )
    assert steps >= 3


async def test_restore_cancelled_at_every_checkpoint(kafka_broker: Any, tmp_path: Path) -> None:
    new_store = sqlite_store(tmp_path)
    steps = await every_checkpoint(
        recovery_scenario,
        lambda: App(kafka_broker.url, new_store(), SETTINGS, coalesce_changelog=False),
        parallel=8,
    )
    assert steps >= 3
