"""``trio-tables demo``: a word count (and a windowed count) on two workers, with a
worker restart that shows recovery from the changelog.

The story, printed as it happens:

1. start the embedded broker (unless ``--broker``), create the topic, produce words;
2. start two workers, ``worker-a`` and ``worker-b``: two ``TableManager`` s of one app,
   each in its own task of this process's task tree, so the group splits the
   partitions between them; wait until every event is processed and committed;
3. stop ``worker-b``: ``worker-a`` takes over its partitions and restores them from
   the changelog (progress bars), then more words arrive;
4. start ``worker-b`` again with an empty store: it gets its partitions back and
   restores them (progress bars);
5. print the tables, and check that the counts on both workers add up to exactly the
   words produced.

Ctrl-C (or SIGTERM) answers at once: the workers (``handle_signals=True``) finish their
events, commit and leave the group while the rest of the story is cancelled; a second
Ctrl-C stops everything at once. Exit code 130 (143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from .._embedded import open_embedded_broker
from .._manager import TableManager
from .._table import Table
from .._testing import produce, wait_until_committed
from .._transport import open_transport
from .._transport._base import Transport
from ._bars import RecoveryBars, recovery_bars
from ._common import EXIT_FAILURE, EXIT_OK, current_interrupts, transport_options
from ._demo_windows import (
    NOT_AVAILABLE,
    WINDOW,
    WindowedHits,
    latest_hits,
    open_hits,
    render_hits,
)

__all__ = ["add_parser", "demo_words", "run_demo"]

logger = logging.getLogger("trio_tables.demo")

PARTITIONS = 4
TEXT = """
Tables in trio tables live in partitions that follow the partitions of the topic they
count, and every change to a table is written to a changelog topic so that a worker that
starts again or takes over a partition from another worker can rebuild its tables by
reading the changelog from the beginning or from the offset its store saved. Each table
runs in its own nursery with a recovery task and a changelog consumer task, and the
manager supervises rebalances through cancel scopes, so a worker never processes an
event of a partition before every table has recovered that partition, and a worker that
stops in the middle of a commit still leaves exact counts behind: structured
concurrency keeps every task in its nursery and every offset in its place.
"""
VOCABULARY = sorted({word.strip(".,:;").lower() for word in TEXT.split()})


def demo_words(count: int, seed: int = 8) -> list[str]:
    """The words the demo produces: ``count`` draws from the demo's vocabulary, a few
    words much more often than the others (as in real text). Deterministic."""
    rnd = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(VOCABULARY))]
    order = VOCABULARY[:]
    rnd.shuffle(order)
    return rnd.choices(order, weights=weights, k=count)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="word count and windowed count on two workers, with a restart",
        description="Count words with two workers of one app (two TableManagers in this "
        "process), stop one (the other takes over and restores its partitions from the "
        "changelog), produce more, start it again (it restores its partitions, with "
        "progress bars), then print the tables and check them against the words produced. "
        "Starts the embedded broker unless --broker is given.",
        epilog="examples: trio-tables demo; trio-tables demo --broker kafka://127.0.0.1:9092; "
        "trio-tables demo --broker memory://demo",
    )
    demo.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="kafka://host:port or memory://NAME (default: start the embedded broker)",
    )
    demo.add_argument(
        "--events",
        type=int,
        default=5000,
        metavar="N",
        help="word events to produce, 60%% before and 40%% after the restart (default: 5000)",
    )
    demo.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the broker (default: 10)",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up after this long (default: 120)",
    )
    demo.add_argument(
        "-v", "--verbose", action="store_true", help="log what the workers do (INFO)"
    )


@attrs.define(eq=False)
class Worker:
    """One worker of the demo app: a ``TableManager`` and its tables, in one task."""

    name: str
    bars: RecoveryBars | None = None
    manager: TableManager | None = None
    counts: Table | None = None
    hits: WindowedHits | None = None
    processed: int = 0
    stopped: trio.Event = attrs.field(factory=trio.Event)

    @property
    def active(self) -> frozenset[int]:
        return frozenset() if self.manager is None else self.manager.active_partitions

    def stop(self) -> None:
        """Ask the worker to finish its event, commit and leave the group."""
        if self.manager is not None:
            self.manager.request_stop()


@attrs.define
class Demo:
    url: str
    app: str
    topic: str
    options: dict[str, Any]
    out: Console

    async def run_worker(
        self, worker: Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The worker's whole life: start, count words until it is asked to stop
        (:meth:`Worker.stop`, or a signal), leave the group (which commits), stop."""
        try:
            async with TableManager(
                self.app,
                broker=self.url,
                store="memory://",
                commit_interval=0.5,
                transport_options=self.options,
                handle_signals=True,
            ) as manager:
                worker.manager = manager
                worker.counts = counts = manager.Table(
                    "counts", default=int, key_type=str, value_type=int, help="word -> count"
                )
                worker.hits = hits = open_hits(manager)
                if worker.bars is not None:
                    for table in manager.tables.values():
                        worker.bars.watch(worker.name, table)
                async with manager.stream(self.topic, key_type=str) as events:
                    task_status.started()
                    async for event in events:
                        counts[event.key] += 1
                        if hits is not None:
                            hits.count(event.key, event.offset)
                        worker.processed += 1
        finally:
            worker.stopped.set()

    async def settled(self, workers: Sequence[Worker], timeout: float = 60.0) -> None:
        """Wait until the workers split every partition between them (each recovered
        and active on exactly one worker), and the group committed every event."""
        everything = frozenset(range(PARTITIONS))
        with trio.fail_after(timeout):
            while True:
                held = [w.active for w in workers]
                split = all(held) and sum(map(len, held)) == PARTITIONS
                if split and frozenset().union(*held) == everything:
                    break
                await trio.sleep(0.1)  # another manager's state: look again soon
        await wait_until_committed(self.url, self.app, [self.topic], timeout=timeout)

    def show_assignment(self, workers: Sequence[Worker]) -> None:
        parts = [f"{w.name} has partitions {_numbers(w.active)}" for w in workers]
        self.out.print(f"[bold]workers[/]  {'; '.join(parts)}")


def _numbers(values: frozenset[int]) -> str:
    return ", ".join(map(str, sorted(values))) or "none"


async def _produce(demo: Demo, words: list[str], timestamp: int) -> None:
    records = [(word, {"word": word}) for word in words]
    await produce(demo.url, demo.topic, records, partitions=None, timestamp=timestamp)


async def run_demo(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s")
        logging.getLogger("kafka").setLevel(logging.WARNING)
    async with AsyncExitStack() as stack:
        if args.broker is None:
            broker = await stack.enter_async_context(open_embedded_broker())
            url = broker.url
            out.print(f"[bold]broker[/]   embedded Tansu at {url} (pid {broker.pid})")
        else:
            url = str(args.broker)
            out.print(f"[bold]broker[/]   {escape(url)}")
        options = transport_options(url, args.connect_timeout, short_sessions=True)
        transport = await stack.enter_async_context(open_transport(url, **options))
        with trio.fail_after(args.timeout):
            return await _story(url, transport, options, args, out)
    raise AssertionError("unreachable")  # pragma: no cover


async def _story(
    url: str, transport: Transport, options: dict[str, Any], args: argparse.Namespace, out: Console
) -> int:
    run = uuid.uuid4().hex[:8]
    demo = Demo(url, f"trio-tables-demo-{run}", f"words-{run}", options, out)
    words = demo_words(max(args.events, 2))
    first, second = words[: len(words) * 3 // 5], words[len(words) * 3 // 5 :]
    await transport.create_topic(demo.topic, PARTITIONS)
    out.print(f"[bold]app[/]      {demo.app}: tables counts and hits, topic {demo.topic}")
    # Event time: the first words now, the others one window later (so the windowed
    # count has two windows whose contents the demo can check).
    start = int(time.time() * 1000)
    await _produce(demo, first, start)
    out.print(
        f"[bold]produce[/]  {len(first):,} word events (keyed by word, {PARTITIONS} partitions)"
    )

    code = EXIT_FAILURE
    interrupts = current_interrupts.get()
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as story:
            if interrupts is not None:
                # A first Ctrl-C/SIGTERM cancels the story; the workers get the signal
                # too and stop by themselves (they finish their events, commit, leave).
                interrupts.graceful = story.cancel
            a, b = Worker("worker-a"), Worker("worker-b")
            await nursery.start(demo.run_worker, a)
            await nursery.start(demo.run_worker, b)
            out.print("[bold]start[/]    worker-a and worker-b (one TableManager each, same app)")
            await demo.settled([a, b])
            demo.show_assignment([a, b])
            out.print(f"[bold]count[/]    {_processed(len(first), [a, b])}")

            taken = b.active
            out.print(
                f"[bold]restart[/]  worker-b stops; worker-a takes over partitions "
                f"{_numbers(taken)} and restores them from the changelog"
            )
            async with recovery_bars(out) as bars:
                for table in a.manager.tables.values() if a.manager else ():
                    bars.watch(a.name, table)
                b.stop()
                await b.stopped.wait()
                await demo.settled([a])
            await _produce(demo, second, start + int(WINDOW * 1000))
            out.print(f"[bold]produce[/]  {len(second):,} more word events")

            out.print("[bold]restart[/]  worker-b starts again with an empty store")
            first_b = b
            async with recovery_bars(out) as bars:
                b = Worker("worker-b", bars=bars)
                await nursery.start(demo.run_worker, b)
                await demo.settled([a, b])
            demo.show_assignment([a, b])
            out.print(f"[bold]count[/]    {_processed(len(words), [a, first_b, b])}")
            out.print(f"           worker-b restored {_restored(b)} changelog records")

            code = _print_tables(
                out, [a, first_b, b], Counter(words), _expected_hits(first, second)
            )
            a.stop()
            b.stop()
    if story.cancelled_caught:
        out.print("[bold]stop[/]     interrupted: the workers committed and left the group")
    else:
        out.print(
            "[bold]stop[/]     both workers left the group; the changelog topics keep the tables"
        )
    return code


def _processed(produced: int, workers: Sequence[Worker]) -> str:
    processed = sum(w.processed for w in workers)
    text = f"all {produced:,} events processed and committed"
    if processed > produced:
        text += (
            f" ({processed - produced:,} of them twice: events processed but not committed "
            "when their partition moved are processed again by the new owner, at least once)"
        )
    return text


def _restored(worker: Worker) -> str:
    total = sum(t.replayed for t in worker.manager.tables.values()) if worker.manager else 0
    return f"{total:,}"


def _expected_hits(first: list[str], second: list[str]) -> dict[str, int]:
    """Per word, its count in the window of its last event (the second window for
    words produced after the restart, else the first)."""
    return {**Counter(first), **Counter(second)}


def _print_tables(
    out: Console, workers: Sequence[Worker], expected: Counter[str], hits_expected: dict[str, int]
) -> int:
    merged: dict[str, int] = {}
    holder: dict[str, str] = {}
    for worker in workers:
        assert worker.counts is not None
        if worker.stopped.is_set():
            continue  # the first worker-b: its partitions are elsewhere now
        for word, count in worker.counts.as_dict().items():
            merged[word] = merged.get(word, 0) + count
            holder[word] = worker.name if word not in holder else f"{holder[word]}+{worker.name}"
    out.print(f"[bold]table counts[/]: top 10 of {len(merged)} words, each held by one worker")
    view = RichTable()
    view.add_column("word")
    view.add_column("count", justify="right")
    view.add_column("held by")
    for word, count in sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:10]:
        view.add_row(word, f"{count:,}", holder[word])
    out.print(view)

    hits = [w.hits for w in workers if w.hits is not None]
    if hits:
        out.print(render_hits(hits))
    else:
        out.print(NOT_AVAILABLE)

    total = sum(expected.values())
    code = EXIT_OK
    if merged == dict(expected):
        out.print(
            f"[green]ok[/]: the counts on both workers add up to exactly the {total:,} "
            f"words produced ({len(expected)} distinct words)"
        )
    else:
        code = EXIT_FAILURE
        _print_wrong(out, "counts", merged, expected)
    if hits:
        latest = latest_hits(hits)
        if latest == hits_expected:
            out.print(
                f"[green]ok[/]: every word's hits in the window of its last event match the "
                f"events produced in that window ({len(latest)} words, 2 windows)"
            )
        else:
            code = EXIT_FAILURE
            _print_wrong(out, "hits", latest, hits_expected)
    return code


def _print_wrong(out: Console, what: str, got: dict[str, int], want: dict[str, int]) -> None:
    wrong = sorted(k for k in {*got, *want} if got.get(k) != want.get(k))
    out.print(
        f"[bold red]wrong[/]: {len(wrong)} words have other {what} than produced, e.g. "
        + ", ".join(f"{w}: {got.get(w, 0)} != {want.get(w, 0)}" for w in wrong[:5])
    )
