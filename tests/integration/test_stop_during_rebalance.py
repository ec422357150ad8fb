"""Stopping a worker while its member is in a join round must not wedge the group on the
embedded broker (BROKER.md, Tansu deviation 7; issue 15 point 6).

Tansu keeps a member that sent LeaveGroup while a join round was in progress as the
group's elected leader: every later SyncGroup waits forever and the group never assigns
again. The sequence that showed it: two workers stopped one after the other, the second
while the first's departure was still rebalancing; a new worker of the same app then
never got partitions.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tables import open_transport

from .workers import (
    SETTINGS,
    Worker,
    group_settled,
    merge_dumps,
    printing_worker_logs_on_failure,
    produce,
    scratch_dir,
    wait_caught_up,
    words,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def _trace_lines(worker: Worker) -> list[str]:
    path = Path(f"{worker.dump_path}.trace")
    return path.read_text().splitlines() if path.exists() else []


async def _wait_for_trace(worker: Worker, kind: str, after: int) -> None:
    """Wait until ``worker``'s event log has a ``kind`` line past its first ``after``."""
    while not any(line.startswith(kind) for line in _trace_lines(worker)[after:]):
        worker.check_alive()
        await trio.sleep(0.02)  # another process's progress can only be polled


async def test_a_worker_stopped_in_a_join_round_leaves_the_group_usable(
    kafka_broker: Any, unique_name: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTER_APP_TRACE", "1")
    topic, app = unique_name("words"), unique_name("stopjoin")
    async with open_transport(kafka_broker.url, **SETTINGS) as transport:
        await transport.create_topic(topic, PARTITIONS)
    workdir = scratch_dir(tmp_path, "stopjoin")
    produced = words(2000, 1)
    await produce(kafka_broker, topic, produced)

    def worker(name: str) -> Worker:
        return Worker(name, broker=kafka_broker, app=app, topic=topic, workdir=workdir)

    with printing_worker_logs_on_failure(), trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            w1, w2 = worker("w1"), worker("w2")
            await w1.start(nursery)
            await w1.wait_for_line("ACTIVE [")
            await w2.start(nursery)
            while not group_settled([w1, w2], PARTITIONS):
                w1.check_alive()
                w2.check_alive()
                await trio.sleep(0.1)  # another process's progress can only be polled
            await wait_caught_up(kafka_broker, app, topic, PARTITIONS, [w1, w2])

            # w1 leaves: the group rebalances, w2 revokes (eager) and sends JoinGroup.
            seen = len(_trace_lines(w2))
            w1.terminate()
            await _wait_for_trace(w2, "revoked", seen)
            # w2 stops while its member is in that join round.
            w2.terminate()
            await w1.wait_stopped()
            await w2.wait_stopped()
            # The sequence happened: w2 was stopped in its join round (and waited for it).
            assert "stopping in the middle of a group join round" in w2.log_tail(500)

            more = words(500, 2)
            produced += more
            await produce(kafka_broker, topic, more)

            # A fresh worker of the same app gets every partition (on the wedged group
            # its SyncGroup is never answered) and its table is exact.
            w3 = worker("w3")
            await w3.start(nursery)
            with trio.fail_after(90):
                await w3.wait_for_line(f"ACTIVE {json.dumps(list(range(PARTITIONS)))}")
            await wait_caught_up(kafka_broker, app, topic, PARTITIONS, [w3])
            w3.terminate()
            dump = await w3.wait_stopped()

    assert merge_dumps([dump], PARTITIONS) == Counter(produced)
