"""Word count through trio_tables: the peers' workload (../shared/peers), scaled by --records.

Keys are drawn Zipf-style (weight 1/rank) from a seeded 10,000-word vocabulary; every
run checks the table against a Counter of the input and fails loudly when it differs.
Measures, per configuration (changelog coalescing on/off):

* processing events/s (first event -> last event) and time from start to first event;
* changelog records written;
* recovery: a fresh worker with a memory store rebuilds the table (seconds, records/s).

    python benchmarks/tables.py [--records N] [--partitions P] [--broker URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
import uuid
from collections import Counter
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

import trio_tables
from trio_tables import TableManager
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables.testing import open_embedded_broker

KAFKA_SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def workload(n: int, seed: int = 42, vocabulary: int = 10_000) -> list[str]:
    rnd = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < vocabulary:
        word = "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(3, 10)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    keys = random.Random(seed + 1)
    return keys.choices(words, weights=[1.0 / rank for rank in range(1, vocabulary + 1)], k=n)


async def prefill(url: str, topic: str, partitions: int, keys: list[str]) -> None:
    options = KAFKA_SETTINGS if url.startswith("kafka://") else {}
    async with trio_tables.open_transport(url, **options) as transport:
        await transport.create_topic(topic, partitions)
        async with transport.open_producer() as producer:
            for i in range(0, len(keys), 5000):
                await producer.send_batch(
                    [OutgoingRecord(topic, b'{"n":1}', key=k.encode()) for k in keys[i : i + 5000]]
                )


async def count(url: str, app: str, topic: str, keys: list[str], coalesce: bool) -> dict[str, Any]:
    options = KAFKA_SETTINGS if url.startswith("kafka://") else {}
    started = time.perf_counter()
    first = last = 0.0
    async with TableManager(
        app, broker=url, coalesce_changelog=coalesce, transport_options=options
    ) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(topic, key_type=str) as events:
            seen = 0
            async for event in events:
                if not seen:
                    first = time.perf_counter()
                counts[event.key] += 1
                seen += 1
                if seen == len(keys):
                    last = time.perf_counter()
                    break
            table = counts.as_dict()
        changelog = counts.changelog_topic_name
        partitions = counts.partitions or 0
    if table != Counter(keys):
        raise SystemExit(f"WRONG RESULT for coalesce={coalesce}: table differs from the input")
    async with (
        trio_tables.open_transport(url, **options) as transport,
        transport.open_restore_consumer() as consumer,
    ):
        ends = await consumer.end_offsets([TP(changelog, p) for p in range(partitions)])
    return {
        "startup_s": first - started,
        "events_per_s": len(keys) / (last - first),
        "changelog_records": sum(ends.values()),
    }


async def timed_recover(url: str, app: str, topic: str, keys: list[str]) -> dict[str, Any]:
    """A fresh worker (memory store) rebuilds the table; timed from its start, so the
    group join is included."""
    options = KAFKA_SETTINGS if url.startswith("kafka://") else {}
    started = time.perf_counter()
    async with TableManager(app, broker=url, transport_options=options) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(topic, key_type=str):
            await manager.wait_until_recovered()
            elapsed = time.perf_counter() - started
            table = counts.as_dict()
    if table != Counter(keys):
        raise SystemExit("WRONG RESULT after recovery")
    return {
        "recover_s": elapsed,
        "replayed": counts.replayed,
        "records_per_s": counts.replayed / elapsed,
    }


async def main(args: argparse.Namespace) -> None:
    keys = workload(args.records)
    results: list[dict[str, Any]] = []

    async def run(url: str) -> None:
        topic = f"bench-words-{uuid.uuid4().hex[:8]}"
        await prefill(url, topic, args.partitions, keys)
        for coalesce in (True, False):
            app = f"bench-{uuid.uuid4().hex[:8]}"
            row = {"coalesce": coalesce, **await count(url, app, topic, keys, coalesce)}
            row.update(await timed_recover(url, app, topic, keys))
            results.append(row)

    if args.broker:
        await run(args.broker)
    else:
        async with open_embedded_broker() as broker:
            await run(broker.url)

    table = Table(title=f"word count, {args.records:,} events, {args.partitions} partitions")
    for column in ("coalescing", "events/s", "start->1st event s", "changelog records",
                   "recovery s (incl. join)", "replayed", "replayed/s"):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            "on" if row["coalesce"] else "off",
            f"{row['events_per_s']:,.0f}",
            f"{row['startup_s']:.2f}",
            f"{row['changelog_records']:,}",
            f"{row['recover_s']:.2f}",
            f"{row['replayed']:,}",
            f"{row['records_per_s']:,.0f}",
        )
    Console().print(table)
    if args.json:
        with open(args.json, "w") as file:  # noqa: ASYNC230 - once, at the end
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--broker", default=None, help="kafka://host:port (default: embedded)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    trio.run(main, parser.parse_args())
