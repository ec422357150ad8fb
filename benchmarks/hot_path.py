"""The per-event path alone: the word count of ``bench.py`` on the in-process memory
broker (no Kafka client, no threads), so changes to streams and tables can be compared
in seconds and with little noise. Prints microseconds per event (broker reads included);
``--profile`` prints the cProfile of the loop.

    python benchmarks/hot_path.py [--records N] [--store memory|sqlite] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import uuid

import trio
import workload

import trio_tables
from trio_tables import TableManager
from trio_tables._transport._base import OutgoingRecord


async def run(args: argparse.Namespace) -> None:
    url = f"memory://hot-path-{uuid.uuid4().hex[:8]}"
    keys = workload.keys(args.records)
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", 8)
        async with transport.open_producer() as producer:
            for i in range(0, len(keys), 5000):
                await producer.send_batch(
                    [
                        OutgoingRecord("words", workload.VALUE, key=k.encode(), timestamp=j)
                        for j, k in enumerate(keys[i : i + 5000], start=i)
                    ]
                )
            await producer.flush()
    store = "memory://" if args.store == "memory" else f"sqlite://{tempfile.mkdtemp()}"
    profiler = cProfile.Profile() if args.profile else None
    async with TableManager("hot-path", broker=url, store=store, commit_interval=1.0) as app:
        counts = app.Table("counts", default=int, key_type=str, value_type=int)
        async with app.stream("words", key_type=str, value_serializer="raw") as events:
            await app.wait_until_recovered()
            await trio.sleep(0.5)  # let the stream's buffers fill
            seen = 0
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            async for event in events:
                counts[event.key] += 1
                seen += 1
                if seen == args.records:
                    break
            if profiler is not None:
                profiler.disable()
            elapsed = time.perf_counter() - started
            if counts.as_dict() != dict(workload.expected_counts(args.records)):
                raise SystemExit("wrong table")
    print(f"{elapsed / args.records * 1e6:.2f} us/event ({args.store} store)")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--profile", action="store_true")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
