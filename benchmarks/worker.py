"""One benchmark phase of trio_tables in a process of its own (so peak RSS is its own).

Phases (the driver, ``bench.py``, runs them one after another):

count     word count of the source topic: ``counts[event.key] += 1`` until N events, then
          a clean stop (the last commit persists and commits everything)
recover   a fresh worker of the same app rebuilds the table from the changelog (empty
          memory store, empty or existing sqlite directory): timed from the partition
          assignment to "every assigned partition recovered"
window    the windowed variant: ``Table(...).tumbling(10.0)``, ``hits[key] += 1``
          (skipped with a message if windowed tables are not available)
big       1M-key table on sqlite: ``big[key] += 1`` over a topic of distinct keys
soak      the word count with no end: runs until SIGTERM (``handle_signals``), then checks
          its table against ``--records`` events (``--no-check``: a worker that joins and
          leaves, whose share of the table is checked by the survivor's)

``count --take M`` processes through ``stream.take(M, within=0.1)`` (``for event in
batch: counts[event.key] += 1``) instead of one event per step. ``--library-defaults``
runs with the library's default group timeouts instead of the bench's 4 s session.

With ``TRIO_TABLES_BENCH_METRICS=1`` in the environment the worker serves its HTTP
endpoint (``web_port=0``) and scrapes its own ``/metrics`` and ``/status`` every second
while it runs: the cost of metrics as a Prometheus server and ``trio-tables top`` would
add it (compare runs with and without).

Source values are read raw (the count does not look at them; the baseline and the faust
peer do not decode them either). Every phase checks the table against the expected counts
and exits with status 1 (after printing its result) if it differs. Prints ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import trio
import workload

from trio_tables import TableManager
from trio_tables._transport._base import TP
from trio_tables._transport.kafka._transport import open_kafka_transport

T0 = time.perf_counter()
# Tansu holds each JoinGroup round for about half the session timeout, in whole seconds
# (measured: 6000 -> 3 s, 4000 and 3000 -> 2 s, 2000 -> 1 s); a fresh group's join is most
# of the time to the first event. 4 s still leaves the heartbeat (1 s, on kafka-python's
# IO thread) ample room on a loaded machine. Override with --kafka-settings.
KAFKA_SETTINGS: dict[str, Any] = {"session_timeout_ms": 4000, "heartbeat_interval_ms": 1000}


class TimedManager(TableManager):
    """Notes when partitions were assigned and when they were all recovered."""

    assigned_at = 0.0
    assigned_cpu = 0.0
    recovered_at = 0.0

    async def on_rebalance(self, assigned: Any, *args: Any, **kwargs: Any) -> None:
        if assigned and not self.assigned_at:
            self.assigned_at = time.perf_counter()
            self.assigned_cpu = time.process_time()

    async def on_actives_ready(self) -> None:
        if not self.recovered_at:
            self.recovered_at = time.perf_counter()

    async def on_start(self) -> None:
        if self.web_url is not None and self._nursery is not None:
            self._nursery.start_soon(self._scrape, self.web_url)

    async def _scrape(self, url: str) -> None:
        from trio_tables._web._client import get

        while True:
            await trio.sleep(1.0)
            for path in ("/metrics", "/status"):
                response = await get(url + path)
                assert response.status == 200, response


METRICS = os.environ.get("TRIO_TABLES_BENCH_METRICS") == "1"


def manager(args: argparse.Namespace) -> TimedManager:
    options = {} if args.library_defaults else dict(KAFKA_SETTINGS)
    options.update(json.loads(args.kafka_settings))
    return TimedManager(
        args.app,
        broker=f"kafka://{args.bootstrap}",
        store=args.store,
        coalesce_changelog=args.coalesce == "on",
        handle_signals=args.phase == "soak",
        transport_options=options,
        web_port=0 if METRICS else None,
        web_host="127.0.0.1",
        advertised_host="127.0.0.1",
    )


def clients(app: TableManager) -> dict[str, str]:
    """Which Kafka client reads the source and the changelog, and which one produces."""
    settings = getattr(getattr(app, "_transport", None), "settings", None)
    names = {"confluent-kafka": "librdkafka (confluent-kafka)", "kafka-python": "kafka-python"}
    fetch = getattr(settings, "fetch_client", "kafka-python")
    produce = getattr(settings, "produce_client", "kafka-python")
    return {"reads": names.get(fetch, fetch), "produces": names.get(produce, produce)}


async def changelog_records(args: argparse.Namespace, topic: str) -> int:
    """The changelog's length: the sum of its partitions' high watermarks."""
    options = dict(KAFKA_SETTINGS)
    async with (
        open_kafka_transport(args.bootstrap, **options) as transport,
        transport.open_restore_consumer() as consumer,
    ):
        ends = await consumer.end_offsets([TP(topic, p) for p in range(args.partitions)])
    return sum(ends.values())


def table_matches(table: Any, args: argparse.Namespace) -> bool:
    """Compare with the expected counts, partition by partition (the 1M-key table never
    sits in one dict, and its expectation is computed per key: no 1M-entry Counter
    inflates the peak RSS being measured)."""
    if args.phase == "big":
        expected_len = args.records

        def expected(key: str) -> int | None:
            index = int(key[4:]) if key.startswith("key-") else -1
            return 1 if 0 <= index < args.records and workload.big_key(index) == key else None
    else:
        counts = dict(workload.expected_counts(args.records))
        expected_len = len(counts)
        expected = counts.get
    seen = 0
    for partition in sorted(table.active_partitions):
        with table.partition(partition):
            for key, value in table.items():
                if expected(key) != value:
                    return False
                seen += 1
    return seen == expected_len


async def count(args: argparse.Namespace) -> dict[str, Any]:
    n = args.records
    first = last = first_cpu = last_cpu = 0.0
    async with manager(args) as app:
        counts = app.Table("counts", default=int, key_type=str, value_type=int)
        async with app.stream(args.topic, key_type=str, value_serializer="raw") as events:
            seen = 0
            if args.take:
                async for batch in events.take(args.take, within=0.1):
                    if not seen:
                        first, first_cpu = time.perf_counter(), time.process_time()
                    for event in batch:
                        counts[event.key] += 1
                    seen += len(batch)
                    if seen >= n:
                        last, last_cpu = time.perf_counter(), time.process_time()
                        break
            else:
                async for event in events:
                    if not seen:
                        first, first_cpu = time.perf_counter(), time.process_time()
                    counts[event.key] += 1
                    seen += 1
                    if seen == n:
                        last, last_cpu = time.perf_counter(), time.process_time()
                        break
            # Checked before the stream's block ends: leaving it releases the partitions.
            correct = table_matches(counts, args)
            checked = time.perf_counter()
        stopped = time.perf_counter()
        topic = counts.changelog_topic_name
        used = clients(app)
    return {
        **used,
        "events": n,
        "startup_s": first - T0,
        "events_per_s": n / (last - first),
        "cpu_us_per_event": (last_cpu - first_cpu) / n * 1e6,
        "stop_s": stopped - checked,  # leaving the stream and the manager: last commit
        "changelog_records": await changelog_records(args, topic),
        "correct": correct,
    }


async def recover(args: argparse.Namespace) -> dict[str, Any]:
    async with manager(args) as app:
        counts = app.Table("counts", default=int, key_type=str, value_type=int)
        async with app.stream(args.topic, key_type=str, value_serializer="raw"):
            await app.wait_until_recovered()
            done, done_cpu = time.perf_counter(), time.process_time()
            correct = table_matches(counts, args)
        topic = counts.changelog_topic_name
        used = clients(app)
    recovering = done - (app.assigned_at or T0)
    return {
        **used,
        "startup_s": done - T0,
        "recover_s": recovering,
        "replayed": counts.replayed,
        "records_per_s": counts.replayed / recovering if recovering > 0 else 0.0,
        "cpu_us_per_record": (done_cpu - app.assigned_cpu) / counts.replayed * 1e6
        if counts.replayed
        else None,
        "changelog_records": await changelog_records(args, topic),
        "correct": correct,
    }


def window_start_s(window: Any) -> int:
    """A window key's start in seconds, whatever form the window key takes."""
    if isinstance(window, tuple):
        window = window[0]
    return int(window // 1000 if window >= 10**11 else window)


async def window(args: argparse.Namespace) -> dict[str, Any]:
    n = args.records
    first = last = 0.0
    async with manager(args) as app:
        base = app.Table("hits", default=int, key_type=str, value_type=int)
        if not hasattr(base, "tumbling"):
            return {"skipped": "windowed tables (Table.tumbling) are not available yet"}
        hits = base.tumbling(10.0)
        async with app.stream(args.topic, key_type=str, value_serializer="raw") as events:
            seen = 0
            async for event in events:
                if not seen:
                    first = time.perf_counter()
                hits[event.key] += 1
                seen += 1
                if seen == n:
                    last = time.perf_counter()
                    break
            table = getattr(hits, "table", base)
            got: dict[tuple[str, int], int] = {}
            for (key, window), value in table.as_dict().items():
                got[(key, window_start_s(window))] = value
        used = clients(app)
        expected = workload.expected_window_counts(args.base_ts_ms, n)
    return {
        **used,
        "events": n,
        "startup_s": first - T0,
        "events_per_s": n / (last - first),
        "window_keys": len(got),
        "correct": got == dict(expected),
    }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Count until SIGTERM ends the stream; then check the whole table (the survivor owns
    every partition by then) unless ``--no-check``."""
    seen = 0
    async with manager(args) as app:
        counts = app.Table("counts", default=int, key_type=str, value_type=int)
        async with app.stream(args.topic, key_type=str, value_serializer="raw") as events:
            async for event in events:
                counts[event.key] += 1
                seen += 1
            # The stop may come before the group gave this worker back what the last
            # leaving worker held, or while it recovers it: check the table once it owns
            # and recovered every partition (the group is still joined here).
            if args.check:
                with trio.move_on_after(60):
                    await app.wait_until_recovered()
                    while len(counts.active_partitions) < args.partitions:
                        await app._supervisor.recovery_changed.wait()
                        await app.wait_until_recovered()
            correct = table_matches(counts, args) if args.check else None
            owned = sorted(counts.active_partitions)
    return {"events_here": seen, "partitions_at_end": owned, "correct": correct}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.phase == "soak":
        return await soak(args)
    if args.phase == "window":
        return await window(args)
    if args.mode == "recover":
        return await recover(args)
    return await count(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["count", "window", "big", "soak"])
    parser.add_argument("mode", choices=["process", "recover"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--coalesce", choices=["on", "off"], default="on")
    parser.add_argument("--base-ts-ms", type=int, default=0)
    parser.add_argument("--kafka-settings", default="{}", help="JSON: more KafkaSettings")
    parser.add_argument("--profile", default=None, help="write a cProfile here")
    parser.add_argument("--take", type=int, default=0, help="count through stream.take(N)")
    parser.add_argument("--library-defaults", action="store_true", help="default timeouts")
    parser.add_argument("--no-check", dest="check", action="store_false", help="soak: no check")
    args = parser.parse_args()
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(trio.run, run, args)
        profiler.dump_stats(args.profile)
    else:
        result = trio.run(run, args)
    result["peak_rss_mb"] = workload.peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)
    if result.get("correct") is False:
        sys.exit(1)


if __name__ == "__main__":
    main()
