"""Cancellation never loses or wedges (memory transport): a commit cycle cancelled at
each of its checkpoints, and a restore cancelled at each of its checkpoints, then a
restart; the table equals the oracle and the changelog replay equals the table. The
same scenarios run on the embedded broker in tests/integration/test_cancellation_kafka.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cancellation import (
    App,
    commit_scenario,
    every_checkpoint,
    recovery_scenario,
    sqlite_store,
)


def _memory_url() -> str:
    return f"memory://cancel-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_commit_cancelled_at_every_checkpoint(store_kind: str, tmp_path: Path) -> None:
    url = _memory_url()
    new_store = sqlite_store(tmp_path) if store_kind == "sqlite" else (lambda: "memory://")
    steps = await every_checkpoint(commit_scenario, lambda: App(url, new_store(), {}))
    assert steps >= 3  # the cycle has checkpoints to cancel at


async def test_restore_cancelled_at_every_checkpoint(tmp_path: Path) -> None:
    url = _memory_url()
    new_store = sqlite_store(tmp_path)
    steps = await every_checkpoint(
        recovery_scenario, lambda: App(url, new_store(), {}, coalesce_changelog=False)
    )
    assert steps >= 3
