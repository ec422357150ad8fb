"""Throughput of trio_tables' transport: raw produce and consume.

Runs against the embedded broker (started here) unless ``--broker URL`` is given, and
prints one table. Later stages add table workloads comparable with Faust's.

    python benchmarks/run.py [--records N] [--partitions P] [--value-size B] [--broker URL]
"""

from __future__ import annotations

import argparse
import os
import uuid
from contextlib import AsyncExitStack
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from trio_tables import open_transport
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables.testing import open_embedded_broker

KAFKA_SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
BATCH = 1000  # records per send_batch call (one thread hop each on Kafka)


async def bench_transport(url: str, args: argparse.Namespace) -> list[tuple[str, int, float]]:
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    options = KAFKA_SETTINGS if url.startswith("kafka://") else {}
    value = os.urandom(args.value_size)
    results: list[tuple[str, int, float]] = []
    async with open_transport(url, **options) as transport:
        await transport.create_topic(topic, args.partitions)

        records = [OutgoingRecord(topic, value, key=str(i).encode()) for i in range(args.records)]
        start = trio.current_time()
        async with transport.open_producer() as producer:
            for i in range(0, len(records), BATCH):
                await producer.send_batch(records[i : i + BATCH])
            await producer.flush()
        results.append(("produce (acks, flushed)", args.records, trio.current_time() - start))

        tps = [TP(topic, p) for p in range(args.partitions)]
        async with transport.open_restore_consumer() as consumer:
            await consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            start = trio.current_time()
            consumed = 0
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batches = await consumer.poll(timeout=0.5)
                consumed += sum(len(batch) for batch in batches.values())
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
            results.append(("consume (restore consumer)", consumed, trio.current_time() - start))
    return results


async def main(args: argparse.Namespace) -> None:
    console = Console()
    async with AsyncExitStack() as stack:
        url = args.broker
        if url is None:
            broker = await stack.enter_async_context(open_embedded_broker())
            url = broker.url
        console.print(
            f"broker {url}: {args.records} records of {args.value_size} bytes, "
            f"{args.partitions} partitions"
        )
        results = await bench_transport(url, args)
    table = Table(title="transport throughput", title_justify="left")
    for column in ("workload", "records", "seconds", "records/s"):
        table.add_column(column, justify="right" if column != "workload" else "left")
    for name, count, seconds in results:
        table.add_row(name, str(count), f"{seconds:.2f}", f"{count / seconds:,.0f}")
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--broker", default=None, help="default: start the embedded broker")
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
