"""A word-counting worker, run as a separate process by the integration tests.

It counts the keys of ``--topic`` into the table ``counts``. Lines on stdout tell the
test what happens (``ASSIGNED``, ``ACTIVE``, ``KILLPOINT <name>``). SIGTERM stops it
cleanly: it writes its table (the partitions it holds) to ``--dump`` as JSON and leaves
the group. With ``--handle-signals`` the manager handles SIGTERM/SIGINT itself
(``TableManager(handle_signals=True)``): the stream loop ends on its own, then the
same. ``--kill-point`` makes it stop dead (sleep forever) at a chosen place so that the
test can ``kill -9`` it exactly there:

* ``after-persist``: the second commit cycle persisted the stores, its offsets are not
  committed;
* ``during-recovery``: after applying some changelog records while recovering;
* ``before-commit`` (with ``--guarantee exactly_once``): the second transaction with
  offsets holds its changelog records and offsets, it is not committed;
* ``hold-commit``: not a kill: the second commit with offsets that move on waits
  (``HOLDING commit``) until the worker receives SIGUSR2, then commits (the test stops
  the broker meanwhile);

``--web`` serves the worker's HTTP endpoint on a free port of 127.0.0.1 (``WEB <url>``
on stdout); ``--event-delay S`` sleeps S seconds per event (a slow consumer, so that
lag can be seen building up and draining).

With ``COUNTER_APP_TRACE`` set in its environment it writes an event log to
``<dump>.trace``, one line per event, each written through to the file at once (so a
``kill -9`` leaves a complete prefix): ``assigned <generation> <partitions as JSON>``
(the whole assignment, before its recovery starts), ``recovered <generation>
<partition>`` (recovered by every table, before it is handed to the stream),
``revoked <partitions as JSON>`` and ``processed <partition> <offset> <key>``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import attrs
import trio

import trio_tables
from trio_tables import TP
from trio_tables._embedded import BROKER_SETTINGS

TEST_SETTINGS: dict[str, Any] = {
    **BROKER_SETTINGS,
    "connect_timeout": 10,
}


def say(*words: object) -> None:
    print(*words, flush=True)


TRACE: TextIO | None = None


def trace(*words: object) -> None:
    if TRACE is not None:
        print(*words, file=TRACE)


class Worker(trio_tables.TableManager):
    kill_point: str | None = None
    commits = 0
    generation = 0
    moving_commits = 0
    last_offsets: Mapping[TP, int] = {}

    async def on_rebalance(
        self,
        assigned: frozenset[TP],
        revoked: frozenset[TP],
        newly_assigned: frozenset[TP],
        generation_id: int = 0,
    ) -> None:
        self.generation = generation_id
        trace("assigned", generation_id, json.dumps(sorted({tp.partition for tp in assigned})))

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> None:
        trace("revoked", json.dumps(sorted({tp.partition for tp in revoked})))

    async def on_commit(self, offsets: Mapping[TP, int]) -> None:
        # The second commit with offsets: the first one landed, so the group has
        # committed offsets and the changelog has records that recovery applies.
        if offsets:
            self.commits += 1
        if self.kill_point in ("after-persist", "before-commit") and self.commits == 2:
            say(f"KILLPOINT {self.kill_point}", sum(offsets.values()))
            await trio.sleep_forever()
        if offsets and offsets != self.last_offsets:
            # Some offset moved on: this commit will reach the broker.
            self.moving_commits += 1
            self.last_offsets = dict(offsets)
            if self.kill_point == "hold-commit" and self.moving_commits == 2:
                with trio.open_signal_receiver(signal.SIGUSR2) as signals:
                    say("HOLDING commit")
                    async for _ in signals:
                        break


class TracedTable(trio_tables.Table):
    async def on_recovery_completed(
        self, active: frozenset[int], standby: frozenset[int] = frozenset()
    ) -> None:
        # Called right after the partitions became active, before any task could run:
        # the stream cannot have handed out one of their events yet.
        assert isinstance(self.manager, Worker)
        for partition in sorted(active):
            trace("recovered", self.manager.generation, partition)
        await super().on_recovery_completed(active, standby)


async def main(args: argparse.Namespace) -> None:
    global TRACE
    if os.environ.get("COUNTER_APP_TRACE"):
        TRACE = open(f"{args.dump}.trace", "w", buffering=1)  # noqa: SIM115, ASYNC230 - line-buffered
    manager = Worker(
        args.app,
        broker=args.broker,
        store=args.store,
        commit_interval=args.commit_interval,
        standby_replicas=args.standby_replicas,
        transport_options={**TEST_SETTINGS, **dict(args.transport_option)},
        processing_guarantee=args.guarantee,
        worker_id=args.worker_id,
        handle_signals=args.handle_signals,
        web_port=0 if args.web else None,
        web_host="127.0.0.1",
        advertised_host="127.0.0.1",
    )
    manager.kill_point = args.kill_point
    restored = 0

    def on_changelog_event(record: Any) -> Any:
        nonlocal restored
        restored += 1
        if args.kill_point == "during-recovery" and restored == 5:
            say("KILLPOINT during-recovery", restored)
            return trio.sleep_forever()  # noqa: ASYNC105 - awaited by the table
        return None

    async with manager:
        if manager.web_url is not None:
            say("WEB", manager.web_url)
        counts = TracedTable(
            manager,
            "counts",
            default=int,
            key_type=str,
            value_type=int,
            on_changelog_event=on_changelog_event,
        )
        manager.add(counts)
        async with trio.open_nursery() as nursery:
            stop = trio.Event()

            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        stop.set()
                        return

            if not args.handle_signals:
                nursery.start_soon(watch_signals)
            async with manager.stream(args.topic, key_type=str) as events:

                async def report() -> None:
                    while True:
                        await manager.wait_until_recovered()
                        if manager.active_partitions:
                            say("ACTIVE", json.dumps(sorted(manager.active_partitions)))
                        if manager.standby_partitions:
                            say("STANDBY", json.dumps(sorted(manager.standby_partitions)))
                        await manager._supervisor.recovery_changed.wait()

                nursery.start_soon(report)

                async def process() -> None:
                    async for event in events:
                        counts[event.key] += 1
                        trace("processed", event.partition, event.offset, event.key)
                        if args.event_delay:
                            await trio.sleep(args.event_delay)
                    stop.set()  # the manager ended the stream (handle_signals)

                async with trio.open_nursery() as processing:
                    processing.start_soon(process)
                    await stop.wait()
                    processing.cancel_scope.cancel()
                with open(args.dump, "w") as file:  # noqa: ASYNC230 - tiny file, at exit
                    json.dump(
                        {
                            "partitions": sorted(manager.active_partitions),
                            "counts": counts.as_dict(),
                            "replayed": counts.replayed,
                            "restores": [attrs.astuple(r) for r in counts.restores],
                            "local_offsets": counts.local_offsets,
                        },
                        file,
                    )
                say("DUMPED")
            nursery.cancel_scope.cancel()
    say("STOPPED")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--dump", required=True)
    parser.add_argument("--commit-interval", type=float, default=0.5)
    parser.add_argument("--kill-point", default=None)
    parser.add_argument("--standby-replicas", type=int, default=0)
    parser.add_argument("--guarantee", default="at_least_once")
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--handle-signals", action="store_true")
    parser.add_argument("--web", action="store_true")
    parser.add_argument("--event-delay", type=float, default=0.0)
    parser.add_argument(
        "--transport-option",
        type=lambda text: (text.split("=", 1)[0], json.loads(text.split("=", 1)[1])),
        action="append",
        default=[],
        help="NAME=JSON, a transport setting (repeatable)",
    )
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if os.environ.get("COUNTER_APP_DEBUG"):
        logging.getLogger("kafka.coordinator").setLevel(logging.DEBUG)
        logging.getLogger("trio_tables").setLevel(logging.DEBUG)
    trio.run(main, parser.parse_args())
