"""Baseline: the raw kafka-python loop of ``/work/shared/peers/raw_counter.py``, as ours.

Runs in the same environment as trio_tables (same kafka-python, with crc32c), so the
ratios compare the library with the plainest loop the same client allows.

process: consume every partition of the source topic from the beginning (manual
         assignment, no group), count per key in a dict, produce one changelog record
         (key, count) per update to the source record's partition of ``--changelog``.
recover: fresh process, empty dict, replay ``--changelog`` from the beginning until the
         position reaches the end offsets (what the peer does; Tansu's ListOffsets quirk
         did not make it under-read in any peer run, and the table check would catch it).

Prints one line ``RESULT {json}``; exits with status 1 if the table is wrong.

    python benchmarks/baseline.py process|recover --bootstrap H:P --topic T --changelog C
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import workload
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

T0 = time.perf_counter()


def consumer(bootstrap: str) -> Any:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=5000,
        fetch_max_bytes=50 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )


def process(args: argparse.Namespace, expected: dict[str, int]) -> dict[str, Any]:
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics(
        [NewTopic(args.changelog, args.partitions, 1, topic_configs={"cleanup.policy": "compact"})]
    )
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap, linger_ms=10, batch_size=256 * 1024, acks=1
    )
    source = consumer(args.bootstrap)
    tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    source.assign(tps)
    source.seek_to_beginning(*tps)
    table: dict[str, int] = {}
    n, first, first_cpu = 0, 0.0, 0.0
    while n < args.records:
        for tp, records in source.poll(timeout_ms=1000).items():
            if not first and records:
                first = time.perf_counter()
            if not first_cpu:
                first_cpu = time.process_time()
            for record in records:
                key = record.key.decode()
                value = table.get(key, 0) + 1
                table[key] = value
                producer.send(
                    args.changelog, key=record.key, value=b"%d" % value, partition=tp.partition
                )
                n += 1
        if time.perf_counter() - T0 > args.timeout:
            break
    last, last_cpu = time.perf_counter(), time.process_time()
    producer.flush()
    flushed = time.perf_counter()
    producer.close()
    source.close()
    return {
        "events": n,
        "startup_s": first - T0,
        "events_per_s": n / (last - first),
        "cpu_us_per_event": (last_cpu - first_cpu) / max(n, 1) * 1e6,
        "events_per_s_incl_flush": n / (flushed - first),
        "changelog_records": n,
        "correct": table == expected,
    }


def recover(args: argparse.Namespace, expected: dict[str, int]) -> dict[str, Any]:
    restore = consumer(args.bootstrap)
    tps = [TopicPartition(args.changelog, p) for p in range(args.partitions)]
    restore.assign(tps)
    restore.seek_to_beginning(*tps)
    ends = restore.end_offsets(tps)
    table: dict[str, int] = {}
    n = 0
    started, started_cpu = time.perf_counter(), time.process_time()
    while not all(restore.position(tp) >= ends[tp] for tp in tps):
        for records in restore.poll(timeout_ms=1000).values():
            for record in records:
                table[record.key.decode()] = int(record.value)
                n += 1
        if time.perf_counter() - T0 > args.timeout:
            break
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    restore.close()
    return {
        "startup_s": started - T0,
        "recover_s": elapsed,
        "replayed": n,
        "records_per_s": n / elapsed,
        "cpu_us_per_record": cpu / max(n, 1) * 1e6,
        "correct": table == expected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["process", "recover"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--changelog", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    expected = dict(workload.expected_counts(args.records))
    result = (process if args.mode == "process" else recover)(args, expected)
    result["peak_rss_mb"] = workload.peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)
    if not result["correct"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
