"""The soak run of ``bench.py --soak`` (not in CI): memory over time under churn.

A word count (``worker.py soak``) runs from start to end (the *survivor*) while a second
worker of the same app joins and leaves in turn every ``--soak-interval`` seconds (a
clean leave: SIGTERM), and the driver produces ``--soak-events`` Zipf-distributed words
at ``--soak-rate`` events/s. The driver follows the group's committed offsets and samples
the survivor's resident set (``VmRSS``) when a quarter of the events (0.5M of the default
2M) and when all of them are committed; the target is the second within 10% of the
first. At the end the second worker has left, so the survivor owns every partition: it
checks its whole table against the events produced, and a wrong table fails the run
(exit status 1), as in the rest of the bench.

    python benchmarks/bench.py --soak [--soak-events N] [--soak-interval S] [--soak-rate R]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import trio
import workload

from trio_tables._transport._base import OutgoingRecord
from trio_tables._transport._url import split_kafka_url
from trio_tables._transport.kafka._transport import open_kafka_transport
from trio_tables.testing import open_embedded_broker

HERE = Path(__file__).resolve().parent
SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
TICK = 0.1  # the producer sends rate * TICK records per tick


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--soak", action="store_true", help="run the soak instead (not in CI)")
    parser.add_argument("--soak-events", type=int, default=2_000_000)
    parser.add_argument("--soak-interval", type=float, default=30.0, help="s between churns")
    parser.add_argument("--soak-rate", type=float, default=5000.0, help="events/s produced")
    parser.add_argument("--soak-store", default="memory://", help="the workers' store")


def rss_mb(pid: int) -> float | None:
    """The resident set of process ``pid`` now, in MB (``None`` if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Soak:
    def __init__(self, args: argparse.Namespace, bootstrap: str, console: Any) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.console = console
        uid = uuid.uuid4().hex[:8]
        self.topic = f"soak-words-{uid}"
        self.app = f"soak-{uid}"
        self.work = Path(tempfile.mkdtemp(prefix="trio-tables-soak-"))
        self.produced = 0
        self.committed = 0
        self.churns = 0
        self.samples: dict[str, float | None] = {}
        self.started = time.perf_counter()

    def log(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.console.print(f"[dim]{elapsed:7.1f}s[/dim] {text}")

    def worker(self, name: str, *, check: bool) -> list[str]:
        args = self.args
        command = [
            sys.executable,
            str(HERE / "worker.py"),
            "soak",
            "process",
            "--bootstrap",
            self.bootstrap,
            "--topic",
            self.topic,
            "--app",
            self.app,
            "--records",
            str(args.soak_events),
            "--partitions",
            str(args.partitions),
            "--kafka-settings",
            args.kafka_settings,
            "--store",
            args.soak_store.replace("{name}", name),
        ]
        return command if check else [*command, "--no-check"]

    async def start(self, nursery: trio.Nursery, name: str, *, check: bool) -> trio.Process:
        log = (self.work / f"{name}.log").open("ab")
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                self.worker(name, check=check),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=HERE,
            )
        )
        return process

    async def produce(self) -> None:
        n, rate = self.args.soak_events, self.args.soak_rate
        keys = workload.keys(n)
        base = int(time.time() * 1000)
        per_tick = max(1, int(rate * TICK))
        async with (
            open_kafka_transport(self.bootstrap, **SETTINGS) as transport,
            transport.open_producer() as producer,
        ):
            deadline = trio.current_time()
            for i in range(0, n, per_tick):
                await producer.send_batch(
                    [
                        OutgoingRecord(
                            self.topic, workload.VALUE, key=k.encode(), timestamp=base + j
                        )
                        for j, k in enumerate(keys[i : i + per_tick], start=i)
                    ]
                )
                self.produced = min(n, i + per_tick)
                deadline += TICK
                await trio.sleep_until(deadline)
            await producer.flush()
        self.log(f"produced {n:,} events")

    async def churn(self, nursery: trio.Nursery, done: trio.Event) -> None:
        """Start and stop the second worker in turn until ``done``; it is stopped (and
        has left the group) when this returns."""
        other: trio.Process | None = None
        try:
            while not done.is_set():
                with trio.move_on_after(self.args.soak_interval):
                    await done.wait()
                if done.is_set():
                    break
                if other is None:
                    other = await self.start(nursery, f"churn-{self.churns}", check=False)
                    self.log(f"second worker joins (pid {other.pid})")
                else:
                    other.send_signal(signal.SIGTERM)
                    await other.wait()
                    self.log(f"second worker left (exit {other.returncode})")
                    other = None
                self.churns += 1
        finally:
            if other is not None:
                other.send_signal(signal.SIGTERM)
                with trio.CancelScope(shield=True):
                    await other.wait()
                self.log("second worker left (end of the soak)")

    async def follow(self, survivor: trio.Process, all_committed: trio.Event) -> None:
        """Follow the group's committed offsets; sample the survivor's RSS at a quarter
        of the events and at the end."""
        n = self.args.soak_events
        last_log = 0.0
        async with open_kafka_transport(self.bootstrap, **SETTINGS) as transport:
            while True:
                offsets = await transport.group_offsets(self.app)
                self.committed = sum(offsets.values())
                if "quarter" not in self.samples and self.committed >= n // 4:
                    self.samples["quarter"] = rss_mb(survivor.pid)
                    self.log(
                        f"{self.committed:,} committed: survivor RSS {self.samples['quarter']} MB"
                    )
                if self.committed >= n:
                    all_committed.set()
                    return
                if time.perf_counter() - last_log >= 10:
                    last_log = time.perf_counter()
                    rss = rss_mb(survivor.pid)
                    self.log(
                        f"produced {self.produced:,}, committed {self.committed:,}, "
                        f"survivor RSS {rss:.0f} MB"
                        if rss
                        else "survivor gone"
                    )
                await trio.sleep(1.0)

    async def run(self) -> dict[str, Any]:
        args = self.args
        async with open_kafka_transport(self.bootstrap, **SETTINGS) as transport:
            await transport.create_topic(self.topic, args.partitions)
        self.log(
            f"soak: {args.soak_events:,} events at {args.soak_rate:,.0f}/s, a worker joining "
            f"or leaving every {args.soak_interval:g} s; logs in {self.work}"
        )
        async with trio.open_nursery() as nursery:
            survivor = await self.start(nursery, "survivor", check=True)
            produced = trio.Event()
            all_committed = trio.Event()

            async def produce_then_stop_churning() -> None:
                await self.produce()
                produced.set()

            nursery.start_soon(produce_then_stop_churning)
            nursery.start_soon(self.follow, survivor, all_committed)
            await self.churn(nursery, produced)
            await all_committed.wait()
            self.samples["end"] = rss_mb(survivor.pid)
            self.log(f"all {self.committed:,} committed: survivor RSS {self.samples['end']} MB")
            survivor.send_signal(signal.SIGTERM)
            await survivor.wait()
        output = (self.work / "survivor.log").read_bytes()
        found = [line for line in output.splitlines() if line.startswith(b"RESULT ")]
        result: dict[str, Any] = json.loads(found[-1][7:]) if found else {}
        result.update(
            events=args.soak_events,
            churns=self.churns,
            rss_quarter_mb=self.samples.get("quarter"),
            rss_end_mb=self.samples.get("end"),
            survivor_exit=survivor.returncode,
            wall_s=time.perf_counter() - self.started,
        )
        return result


async def main(args: argparse.Namespace, console: Any) -> int:
    if args.broker:
        soak = Soak(args, split_kafka_url(args.broker)[0], console)
        result = await soak.run()
    else:
        async with open_embedded_broker() as broker:
            soak = Soak(args, broker.bootstrap, console)
            result = await soak.run()
    quarter, end = result.get("rss_quarter_mb"), result.get("rss_end_mb")
    growth = end / quarter - 1 if quarter and end else None
    result["rss_growth"] = growth
    ok = result.get("correct") is True and result["survivor_exit"] == 0
    console.print(
        f"soak: {result['events']:,} events, {result['churns']} joins/leaves, survivor RSS "
        f"{quarter} MB at a quarter -> {end} MB at the end "
        f"({'-' if growth is None else f'{growth:+.1%}'}; target within 10%: "
        f"{'-' if growth is None else 'ok' if abs(growth) <= 0.10 else 'MISS'}); "
        f"table {'exact' if result.get('correct') else 'WRONG'} "
        f"(partitions at the end: {result.get('partitions_at_end')})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"soak": result, "args": vars(args)}, indent=1))  # noqa: ASYNC240
        console.print(f"results written to {args.json}")
    if not ok:
        console.print(f"[red]the soak failed: logs kept in {soak.work}[/red]")
        return 1
    if not args.keep:
        shutil.rmtree(soak.work, ignore_errors=True)
    return 0
