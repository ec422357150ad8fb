"""Kafka clients per worker: threads, sockets and time to recovered for 1, 20 and 100
tables (one worker, one stream, the embedded broker unless ``--broker``).

For each table count a worker process fills every table from a 4-partition source
topic (each event adds 1 to its key in every table), stops, and a fresh worker process
(memory store) recovers them all. The fresh worker measures, once recovered and after
``--settle`` seconds: its OS threads (``/proc/self/task``), its sockets (``/proc/self/fd``
entries that are sockets) and the seconds from start to recovered (group join
included). Issue 15's target: 20 tables cost at most 2 threads and 4 sockets more than
1 table.

    python benchmarks/clients.py [--tables 1 20 100] [--events N] [--broker URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

import trio_tables
from trio_tables import TableManager
from trio_tables._transport._base import OutgoingRecord
from trio_tables.testing import open_embedded_broker

KAFKA_SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
PARTITIONS = 4


def sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue  # closed meanwhile
    return count


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


async def fill(url: str, app: str, topic: str, tables: int, events: int) -> dict[str, Any]:
    async with TableManager(app, broker=url, transport_options=KAFKA_SETTINGS) as manager:
        counts = [
            manager.Table(f"t{i}", default=int, key_type=str, value_type=int) for i in range(tables)
        ]
        async with manager.stream(topic, key_type=str) as stream:
            seen = 0
            async for event in stream:
                for table in counts:
                    table[event.key] += 1
                seen += 1
                if seen == events:
                    break
    return {}


async def recover(
    url: str, app: str, topic: str, tables: int, events: int, settle: float
) -> dict[str, Any]:
    started = time.perf_counter()
    async with TableManager(app, broker=url, transport_options=KAFKA_SETTINGS) as manager:
        counts = [
            manager.Table(f"t{i}", default=int, key_type=str, value_type=int) for i in range(tables)
        ]
        async with manager.stream(topic, key_type=str):
            await manager.wait_until_recovered()
            elapsed = time.perf_counter() - started
            await trio.sleep(settle)
            measured = {"threads": threads(), "sockets": sockets()}
            totals = {sum(table.as_dict().values()) for table in counts}
    if totals != {events}:
        raise SystemExit(f"WRONG RESULT: table totals {sorted(totals)}, expected {events}")
    replayed = sum(table.replayed for table in counts)
    return {"recovered_s": round(elapsed, 2), "replayed": replayed, **measured}


async def prefill(url: str, topic: str, events: int) -> None:
    async with trio_tables.open_transport(url, **KAFKA_SETTINGS) as transport:
        await transport.create_topic(topic, PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [
                    OutgoingRecord(topic, b'{"n":1}', key=f"k{i % 97}".encode())
                    for i in range(events)
                ]
            )


def worker(args: argparse.Namespace) -> None:
    if args.phase == "fill":
        result = trio.run(fill, args.url, args.app, args.topic, args.tables, args.events)
    else:
        result = trio.run(
            recover, args.url, args.app, args.topic, args.tables, args.events, args.settle
        )
    print(json.dumps(result))


def run_worker(url: str, phase: str, app: str, topic: str, n: int, args: Any) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", phase, "--url", url, "--app", app]
    argv += ["--topic", topic, "--tables", str(n), "--events", str(args.events)]
    argv += ["--settle", str(args.settle)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{phase} worker with {n} tables failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def main(args: argparse.Namespace) -> None:
    async def measure(url: str) -> list[dict[str, Any]]:
        topic = f"clients-{uuid.uuid4().hex[:8]}"
        await prefill(url, topic, args.events)
        rows = []
        for n in args.tables:
            app = f"clients-{n}-{uuid.uuid4().hex[:8]}"
            await trio.to_thread.run_sync(run_worker, url, "fill", app, topic, n, args)
            row = await trio.to_thread.run_sync(run_worker, url, "recover", app, topic, n, args)
            rows.append({"tables": n, **row})
        return rows

    if args.broker:
        rows = await measure(args.broker)
    else:
        async with open_embedded_broker() as broker:
            rows = await measure(broker.url)
    table = Table(title=f"clients per worker after recovery ({args.events} events)")
    for column in ("tables", "threads", "sockets", "recovered s", "replayed"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["tables"]),
            str(row["threads"]),
            str(row["sockets"]),
            f"{row['recovered_s']:.2f}",
            f"{row['replayed']:,}",
        )
    Console().print(table)
    if args.json:
        await trio.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=("fill", "recover"), dest="phase")
    parser.add_argument("--url")
    parser.add_argument("--app")
    parser.add_argument("--topic")
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after recovery")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--broker", default=None, help="kafka://host:port (default: embedded)")
    parser.add_argument("--json", default=None)
    parsed = parser.parse_args()
    if parsed.phase:
        parsed.tables = parsed.tables[0]
        worker(parsed)
    else:
        trio.run(main, parsed)
