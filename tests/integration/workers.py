"""Running counter_app.py workers as real processes, and observing the group from outside."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import trio
from kafka import KafkaConsumer, TopicPartition

from trio_tables import open_transport
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._base import TP, OutgoingRecord

APP = Path(__file__).parent / "apps" / "counter_app.py"
SETTINGS: dict[str, Any] = {**BROKER_SETTINGS}


STARTED: list[Worker] = []
"""Every worker created in this test process (their logs are printed when a test fails)."""


@contextlib.contextmanager
def printing_worker_logs_on_failure() -> Iterator[None]:
    """Print the log tail of every worker created in the block if the block fails."""
    first = len(STARTED)
    try:
        yield
    except BaseException:
        for worker in STARTED[first:]:
            print(f"----- {worker.name} (exit {worker.returncode()}) -----")
            print(worker.log_tail(200))
        raise


class Worker:
    """One counter_app.py process; its stdout lines are collected as they come."""

    def __init__(
        self,
        name: str,
        *,
        broker: Any,
        app: str,
        topic: str,
        workdir: Path,
        store: str = "memory://",
        kill_point: str | None = None,
        standby_replicas: int = 0,
        guarantee: str = "at_least_once",
        worker_id: str | None = None,
        transport_options: dict[str, Any] | None = None,
        commit_interval: float | None = None,
        handle_signals: bool = False,
        broker_url: str | None = None,
        web: bool = False,
        event_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.dump_path = workdir / f"{name}.json"
        self.log_path = workdir / f"{name}.log"
        self.command = [
            sys.executable, str(APP),
            "--broker", broker_url or broker.url, "--app", app, "--topic", topic,
            "--store", store, "--dump", str(self.dump_path),
        ]
        if kill_point:
            self.command += ["--kill-point", kill_point]
        if standby_replicas:
            self.command += ["--standby-replicas", str(standby_replicas)]
        if guarantee != "at_least_once":
            self.command += ["--guarantee", guarantee]
        if worker_id is not None:
            self.command += ["--worker-id", worker_id]
        if commit_interval is not None:
            self.command += ["--commit-interval", str(commit_interval)]
        if handle_signals:
            self.command += ["--handle-signals"]
        if web:
            self.command += ["--web"]
        if event_delay:
            self.command += ["--event-delay", str(event_delay)]
        for option, value in (transport_options or {}).items():
            self.command += ["--transport-option", f"{option}={json.dumps(value)}"]
        self.lines: list[str] = []
        self._changed = trio.Event()
        self.process: trio.Process | None = None
        STARTED.append(self)

    async def start(self, nursery: trio.Nursery) -> None:
        self.dump_path.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.process = await trio.lowlevel.open_process(
            self.command, stdout=subprocess.PIPE, stderr=log,
        )
        log.close()
        nursery.start_soon(self._read_lines, self.process)

    async def _read_lines(self, process: trio.Process) -> None:
        assert process.stdout is not None
        pending = b""
        async with process.stdout:
            async for chunk in process.stdout:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    self.lines.append(line.decode())
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for_line(self, prefix: str) -> str:
        """The first line starting with ``prefix`` (waits for it)."""
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if line.startswith(prefix):
                    return line
            seen = len(self.lines)
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited before printing {prefix!r}: "
                                     f"{self.log_tail()}")
            with trio.move_on_after(1):  # re-check the exit status now and then
                await self._changed.wait()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def check_alive(self) -> None:
        """Fail at once, with the log, if the worker exited."""
        code = self.returncode()
        if code is not None:
            raise AssertionError(f"{self.name} exited with {code}:\n{self.log_tail()}")

    async def kill(self) -> None:
        """``kill -9``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    async def wait_stopped(self) -> dict[str, Any]:
        """Wait for a clean exit after :meth:`terminate`; the dumped table."""
        assert self.process is not None
        code = await self.process.wait()
        assert code == 0, f"{self.name} exited with {code}:\n{self.log_tail()}"
        dump: dict[str, Any] = json.loads(self.dump_path.read_text())
        return dump


def words(n: int, seed: int, vocabulary: int = 40) -> list[str]:
    rnd = random.Random(seed)
    vocab = [f"w{i:03d}" for i in range(vocabulary)]
    return rnd.choices(vocab, weights=[1 / (r + 1) for r in range(vocabulary)], k=n)


async def produce(broker: Any, topic: str, keys: Sequence[str]) -> None:
    async with open_transport(broker.url, **SETTINGS) as transport, transport.open_producer() as p:
        await p.send_batch([OutgoingRecord(topic, b'{"n":1}', key=k.encode()) for k in keys])


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close()


async def committed_offsets(broker: Any, group: str, topic: str, partitions: int) -> dict[int, int]:
    raw = await trio.to_thread.run_sync(_committed, broker.bootstrap, group, topic, partitions)
    return {p: offset or 0 for p, offset in raw.items()}


async def end_offsets(broker: Any, topic: str, partitions: int) -> dict[int, int]:
    async with open_transport(broker.url, **SETTINGS) as transport, \
            transport.open_restore_consumer() as consumer:
        ends = await consumer.end_offsets([TP(topic, p) for p in range(partitions)])
    return {tp.partition: offset for tp, offset in ends.items()}


async def wait_caught_up(
    broker: Any, group: str, topic: str, partitions: int, workers: Sequence[Worker] = ()
) -> None:
    """Wait until the group committed every record that ``topic`` held when called (the
    workers processed them, and their table changes are in the changelog and the
    stores); records may keep arriving meanwhile. Fails at once if one of ``workers``
    exits meanwhile."""
    ends = await end_offsets(broker, topic, partitions)
    while True:
        committed = await committed_offsets(broker, group, topic, partitions)
        if all(committed[p] >= end for p, end in ends.items()):
            return
        for worker in workers:
            worker.check_alive()
        await trio.sleep(0.2)  # another process's progress can only be polled


def merge_dumps(dumps: Sequence[dict[str, Any]], partitions: int) -> Counter[str]:
    held = [p for dump in dumps for p in dump["partitions"]]
    assert sorted(held) == list(range(partitions)), f"partitions held at the end: {held}"
    merged: Counter[str] = Counter()
    for dump in dumps:
        overlap = set(merged) & set(dump["counts"])
        assert not overlap, f"a key is in two workers' tables: {sorted(overlap)[:5]}"
        merged.update(dump["counts"])
    return merged


def scratch_dir(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def check_trace(path: Path) -> dict[int, set[int]]:
    """Read a worker's event log (``COUNTER_APP_TRACE``, see counter_app.py) and check
    that it processed a partition only while it held it *and* had recovered it for the
    assignment it held it under; the offsets it processed, per partition."""
    held: dict[int, bool] = {}  # partition -> recovered for the current assignment
    processed: dict[int, set[int]] = {}
    if not path.exists():
        return processed
    for number, line in enumerate(path.read_text().splitlines(), 1):
        kind, _, rest = line.partition(" ")
        where = f"{path.name}:{number}: {line!r}"
        if kind == "assigned":
            _generation, partitions = rest.split(" ", 1)
            # The eager protocol revoked everything before; a partition kept through a
            # cooperative rebalance keeps its recovered state.
            held = {p: held.get(p, False) for p in json.loads(partitions)}
        elif kind == "revoked":
            for p in json.loads(rest):
                held.pop(p, None)
        elif kind == "recovered":
            p = int(rest.split()[1])
            assert p in held, f"recovered a partition it was not assigned: {where}"
            held[p] = True
        elif kind == "processed":
            partition, offset, _key = rest.split(" ", 2)
            p = int(partition)
            assert held.get(p), f"processed a partition before recovering it: {where}"
            processed.setdefault(p, set()).add(int(offset))
        else:
            raise AssertionError(f"unknown trace line {where}")
    return processed


def current_assignment(path: Path) -> tuple[int, frozenset[int], bool] | None:
    """From a worker's event log: the generation and partitions of its current
    assignment, and whether it recovered them all; ``None`` while it holds none."""
    current: tuple[int, frozenset[int]] | None = None
    recovered: set[int] = set()
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        kind, _, rest = line.partition(" ")
        try:
            if kind == "assigned":
                generation, partitions = rest.split(" ", 1)
                current = (int(generation), frozenset(json.loads(partitions)))
                recovered = set()
            elif kind == "revoked":
                current = None
            elif kind == "recovered":
                recovered.add(int(rest.split()[1]))
        except ValueError:  # the last line may be half written
            continue
    if current is None:
        return None
    return current[0], current[1], current[1] <= recovered


def group_settled(workers: Sequence[Worker], partitions: int) -> bool:
    """Whether ``workers`` (every live member) share one generation, hold every
    partition between them and recovered what they hold: no rebalance in progress, as
    far as their event logs tell."""
    states = [current_assignment(Path(f"{w.dump_path}.trace")) for w in workers]
    if not states or any(state is None or not state[2] for state in states):
        return False
    generations = {state[0] for state in states if state is not None}
    held = [p for state in states if state is not None for p in state[1]]
    return len(generations) == 1 and sorted(held) == list(range(partitions))


async def stored_offsets(broker: Any, topic: str, ends: dict[int, int]) -> dict[int, set[int]]:
    """The offsets that hold a record in each partition of ``topic`` below ``ends``, read
    back from the broker (one restore consumer from the beginning)."""
    stored: dict[int, set[int]] = {p: set() for p in ends}
    wanted = {TP(topic, p): end for p, end in ends.items() if end > 0}
    async with open_transport(broker.url, **SETTINGS) as transport, \
            transport.open_restore_consumer() as consumer:
        await consumer.assign(wanted)
        with trio.fail_after(60):
            while any([await consumer.position(tp) < end for tp, end in wanted.items()]):
                for tp, records in (await consumer.poll(timeout=0.5)).items():
                    stored[tp.partition].update(
                        r.offset for r in records if r.offset < wanted[tp]
                    )
    return stored


async def assert_every_offset_processed(
    broker: Any, topic: str, traces: Sequence[dict[int, set[int]]], ends: dict[int, int]
) -> None:
    """Every record of every partition below ``ends`` was processed by some worker. When
    one was not, says which side lost it: the workers (the topic holds the record) or the
    broker (no record at that offset: a gap where a non-transactional topic has none)."""
    for partition, end in ends.items():
        seen = set().union(*(trace.get(partition, set()) for trace in traces))
        missing = sorted(set(range(end)) - seen)
        if not missing:
            continue
        stored = (await stored_offsets(broker, topic, ends))[partition]
        skipped = [offset for offset in missing if offset in stored]
        gaps = [offset for offset in missing if offset not in stored]
        raise AssertionError(
            f"partition {partition}: offsets never processed although the topic holds "
            f"them (the workers skipped them): {skipped[:10]}; offsets with no record on "
            f"the topic (the broker lost them or left a gap): {gaps[:10]}"
        )
