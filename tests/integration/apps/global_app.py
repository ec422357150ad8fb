"""A worker of the GlobalTable convergence test (run as a process by the tests).

It writes ``--writes`` keys of its own and the shared key ``common`` into the global
table ``shared``, commits, writes its ``done-<name>`` marker, waits for every worker's
marker and for its copy to reach the changelog's end, then prints ``CONVERGED <json>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import trio

import trio_tables
from trio_tables import TP
from trio_tables._embedded import BROKER_SETTINGS

SETTINGS: dict[str, Any] = {**BROKER_SETTINGS}


async def main(args: argparse.Namespace) -> None:
    workers = args.workers.split(",")
    async with trio_tables.TableManager(
        args.app, broker=args.broker, commit_interval=0.2, transport_options=SETTINGS
    ) as manager, manager.GlobalTable("shared", partitions=3) as table:
        for i in range(args.writes):
            table[f"{args.name}-{i}"] = i
        table["common"] = args.name  # every worker writes it: the log decides
        await manager.commit()
        table[f"done-{args.name}"] = True  # after its data was acknowledged
        await manager.commit()
        while not all(f"done-{w}" in table for w in workers):
            await table.wait_progress()
        async with trio_tables.open_transport(args.broker, **SETTINGS) as transport, \
                    transport.open_restore_consumer() as consumer:
            topic = table.changelog_topic_name
            ends = await consumer.end_offsets([TP(topic, p) for p in range(3)])
        while any(table.standby_progress[tp.partition][0] < end for tp, end in ends.items()):
            await table.wait_progress()
        print("CONVERGED", json.dumps(table.as_dict(), sort_keys=True), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--workers", required=True, help="names of every worker, comma-separated")
    parser.add_argument("--writes", type=int, default=100)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    trio.run(main, parser.parse_args())
