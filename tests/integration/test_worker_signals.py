"""A worker process with ``TableManager(handle_signals=True)`` stopped by SIGTERM in the
middle of a stream, on the embedded broker: it exits 0 with one log line saying what it
committed, its commits are exactly the events it counted, and its partitions move to the
other worker at once (it left the group) and continue from there, nothing lost or
counted twice."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tables import open_transport

from .workers import (
    SETTINGS,
    Worker,
    check_trace,
    merge_dumps,
    printing_worker_logs_on_failure,
    produce,
    scratch_dir,
    wait_caught_up,
    words,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
# The stopped worker's session timeout: had it not left the group, the broker would hand
# its partitions to the other worker only after this long without its heartbeats.
LONG_SESSION_MS = 12_000


async def test_sigterm_stops_a_worker_cleanly_and_its_partitions_move_at_once(
    kafka_broker: Any, unique_name: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTER_APP_TRACE", "1")
    topic, app = unique_name("words"), unique_name("sigterm")
    async with open_transport(kafka_broker.url, **SETTINGS) as transport:
        await transport.create_topic(topic, PARTITIONS)
    workdir = scratch_dir(tmp_path, "sigterm")
    produced = words(2000, 1)
    await produce(kafka_broker, topic, produced)
    long_session = (
        f"kafka://{kafka_broker.bootstrap}?session_timeout_ms={LONG_SESSION_MS}"
        "&heartbeat_interval_ms=1000"
    )
    a = Worker("a", broker=kafka_broker, app=app, topic=topic, workdir=workdir,
               handle_signals=True, broker_url=long_session, commit_interval=0.3)
    b = Worker("b", broker=kafka_broker, app=app, topic=topic, workdir=workdir,
               handle_signals=True, commit_interval=0.3)
    feeding = trio.Event()
    with printing_worker_logs_on_failure(), trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            await a.start(nursery)
            await a.wait_for_line(f"ACTIVE {json.dumps(list(range(PARTITIONS)))}")
            await b.start(nursery)
            held_by_b = json.loads((await b.wait_for_line("ACTIVE [")).split(" ", 1)[1])
            assert 0 < len(held_by_b) < PARTITIONS

            async def feed() -> None:  # records keep coming: the worker is mid-stream
                batch = 0
                while not feeding.is_set():
                    more = words(50, 100 + batch)
                    await produce(kafka_broker, topic, more)
                    produced.extend(more)
                    batch += 1
                    with trio.move_on_after(0.05):  # the feed's pace
                        await feeding.wait()

            nursery.start_soon(feed)
            await wait_caught_up(kafka_broker, app, topic, PARTITIONS, [a, b])
            a.terminate()
            assert a.process is not None
            assert await a.process.wait() == 0, a.log_tail()
            # Within one join round: had `a` not left, its session would expire first.
            with trio.fail_after(LONG_SESSION_MS / 1000):
                await b.wait_for_line(f"ACTIVE {json.dumps(list(range(PARTITIONS)))}")
            feeding.set()
            await wait_caught_up(kafka_broker, app, topic, PARTITIONS, [b])
            b.terminate()
            dump_b = await b.wait_stopped()

    log = a.log_path.read_text()
    assert "Traceback" not in log
    assert "ExceptionGroup" not in log
    [line] = [line for line in log.splitlines() if "stopped (SIGTERM)" in line]
    committed = {
        int(p): int(o) for p, o in re.findall(rf"{re.escape(topic)}\[(\d)\]=(\d+)", line)
    }
    assert line.endswith("; left the group")
    trace_a = check_trace(Path(f"{a.dump_path}.trace"))
    trace_b = check_trace(Path(f"{b.dump_path}.trace"))
    # `a` held every partition from the start: it committed exactly what it counted.
    kept = sorted(set(range(PARTITIONS)) - set(held_by_b))
    assert sorted(committed) == kept
    dump_a = json.loads(a.dump_path.read_text())
    assert dump_a["partitions"] == kept
    for partition in kept:
        assert trace_a[partition] == set(range(committed[partition])), partition
        # `b` went on exactly where `a` stopped: nothing lost, nothing counted twice.
        assert min(trace_b[partition]) == committed[partition], partition
    assert sum(dump_a["counts"].values()) == sum(committed.values())
    assert merge_dumps([dump_b], PARTITIONS) == Counter(produced)
