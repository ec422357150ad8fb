"""trio_tables against the raw kafka-python loop (and, with ``--peers``, faust-streaming
and quixstreams) on the peers' workload, in one command: ``nox -s bench``.

Starts the embedded broker (or uses ``--broker``), fills a source topic with the workload
(``workload.py``: N Zipf-distributed word keys over 8 partitions, event time base + i ms)
and runs every phase in a fresh process, strictly one after another:

baseline        the raw kafka-python loop (``baseline.py``): process, then recover
memory          trio_tables, memory store: process (changelog coalescing on), recover
memory-raw-cl   trio_tables, coalescing off (one changelog record per update, like the
                baseline): process, recover; its recovery is the like-for-like records/s
                (changelog replay on librdkafka, the default); recover-kafka-python: the
                same with ``fetch_client="kafka-python"``; process-kafka-python:
                processing with that fetch client too
memory-take     the word count through ``stream.take(--take, within=0.1)``: process
sqlite          trio_tables, sqlite store: process, restart on the same files after the
                clean stop (records replayed), recover into empty files
window          tumbling 10 s windows (skipped until windowed tables exist)
big             a 1,000,000-key table on sqlite (``--big-keys``): build, recover
quix, faust     with ``--peers``: the peers' own scripts in venvs of their own, with the
                same group timeouts as ours, plus quixstreams' windowed and unique-key
                counts and every system's start at default settings (``peer_runs.py``)

Every row says which client reads and which produces, and the CPU per event (or
replayed record) of the whole process over all its threads (the phase's process
measured by the driver: ``RUSAGE_CHILDREN``, start-up and checks included), for every
system alike; trio_tables' rows also give the CPU from first to last event.

``--soak`` runs the soak instead (``soak.py``: a long word count with a worker joining
or leaving every ``--soak-interval`` s; not in CI).

Prints one table of all runs, then the ratios trio_tables / baseline (and / quixstreams)
with the targets of the benchmark issue, and writes everything as JSON (``--json``).
Every run checks its table against the expected counts: a wrong (or failed) run makes the
benchmark fail (exit status 1). A missed target does not (it is reported as MISS), nor
does a peer's wrong table (reported, with its diff).

    python benchmarks/bench.py [--records N] [--big-keys M] [--only SUITE ...] [--peers]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soak
import trio
import worker
import workload
from bench_report import console, evaluate, report
from peer_runs import CLIENTS, PEER_SUITES, group_env, run_peers, state_file

from trio_tables._transport._base import OutgoingRecord
from trio_tables._transport._url import split_kafka_url
from trio_tables._transport.kafka._transport import open_kafka_transport
from trio_tables.testing import open_embedded_broker

HERE = Path(__file__).resolve().parent
SUITES = ("baseline", "memory", "memory-raw-cl", "memory-take", "sqlite", "window", "big")
KAFKA_SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
KAFKA_PYTHON_FETCH = {"fetch_client": "kafka-python"}


async def prefill(bootstrap: str, topic: str, partitions: int, keys: Sequence[str]) -> int:
    """Create ``topic`` and produce ``keys`` (value ``{"n":1}``, timestamps base + i ms);
    the base timestamp."""
    base = int(time.time() * 1000)
    async with open_kafka_transport(bootstrap, **KAFKA_SETTINGS) as transport:
        await transport.create_topic(topic, partitions)
        async with transport.open_producer() as producer:
            for i in range(0, len(keys), 5000):
                await producer.send_batch(
                    [
                        OutgoingRecord(topic, workload.VALUE, key=k.encode(), timestamp=base + j)
                        for j, k in enumerate(keys[i : i + 5000], start=i)
                    ]
                )
            await producer.flush()
    return base


class Runner:
    def __init__(self, args: argparse.Namespace, bootstrap: str) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.results: list[dict[str, Any]] = []
        self.work = Path(tempfile.mkdtemp(prefix="trio-tables-bench-"))
        self.logs = self.work / "logs"
        self.logs.mkdir()

    async def phase(
        self, suite: str, phase: str, argv: list[str], *, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run one phase as a process of its own; its ``RESULT`` line, annotated."""
        label = f"{suite}/{phase}"
        console.print(f"[dim]{time.strftime('%H:%M:%S')} {label} ...[/dim]")
        log = self.logs / f"{suite}-{phase}.log"
        started = time.perf_counter()
        cpu_before = children_cpu_s()
        with trio.move_on_after(self.args.timeout) as scope:
            proc = await trio.run_process(
                argv,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, **(env or {})},
                cwd=HERE,
            )
        row: dict[str, Any] = {"suite": suite, "phase": phase}
        if scope.cancelled_caught:
            row["error"] = f"timed out after {self.args.timeout:.0f} s"
        else:
            log.write_bytes(proc.stdout + b"\n--- stderr ---\n" + proc.stderr)
            result = last_result(proc.stdout + b"\n" + proc.stderr)
            if result is not None:
                row.update(result)
            if proc.returncode != 0 or result is None:
                row.setdefault("error", f"exit status {proc.returncode}")
        row["wall_s"] = time.perf_counter() - started
        if not scope.cancelled_caught:
            row["cpu_s_all"] = children_cpu_s() - cpu_before
            count = (
                row.get("events")
                or row.get("replayed")
                or row.get("changelog_records_replayed")  # quixstreams' recovery
                or row.get("changelog_records")
            )
            if count:
                row["cpu_us_all"] = row["cpu_s_all"] / count * 1e6
        if suite in CLIENTS:
            row.setdefault("reads", CLIENTS[suite][0])
            row.setdefault("produces", CLIENTS[suite][1])
        if "error" in row or row.get("correct") is False:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            console.print(f"[red]{label} FAILED: {row.get('error', 'wrong table')}[/red]\n{tail}")
        self.results.append(row)
        return row

    def worker(self, *argv: str, records: int, topic: str, app: str, **opts: str) -> list[str]:
        spy: list[str] = []
        if self.args.py_spy:
            # Every thread, idle ones too, sampled in order (speedscope's format keeps the
            # order: a timeline shows which thread waited for which).
            suffix = "-settings" if "kafka_settings" in opts else ""
            record = Path(self.args.py_spy) / f"{app}-{'-'.join(argv)}{suffix}.speedscope.json"
            spy = ["py-spy", "record", "--threads", "--idle", "-r", "250", "-f", "speedscope"]
            spy += ["-o", str(record), "--"]
        command = [
            *spy,
            sys.executable,
            str(HERE / "worker.py"),
            *argv,
            "--bootstrap",
            self.bootstrap,
            "--topic",
            topic,
            "--app",
            app,
            "--records",
            str(records),
            "--partitions",
            str(self.args.partitions),
            "--kafka-settings",
            self.args.kafka_settings,
        ]
        for name, value in opts.items():
            command += [f"--{name.replace('_', '-')}", value]
        if self.args.profile:
            suffix = "-settings" if "kafka_settings" in opts else ""
            profile = Path(self.args.profile) / f"{app}-{'-'.join(argv)}{suffix}.prof"
            command += ["--profile", str(profile)]
        return command

    async def run(self) -> None:
        args = self.args
        n = args.records
        uid = uuid.uuid4().hex[:6]
        suites = args.only or list(SUITES)
        topic = f"bench-words-{uuid.uuid4().hex[:8]}"
        base = 0
        if args.peers or set(suites) - {"big"}:
            console.print(f"filling {topic}: {n:,} records, {args.partitions} partitions")
            base = await prefill(self.bootstrap, topic, args.partitions, workload.keys(n))

        if "baseline" in suites:
            changelog = f"bench-raw-{uid}-counts-changelog"
            for mode in ("process", "recover"):
                await self.phase(
                    "baseline",
                    mode,
                    [
                        sys.executable,
                        str(HERE / "baseline.py"),
                        mode,
                        "--bootstrap",
                        self.bootstrap,
                        "--topic",
                        topic,
                        "--changelog",
                        changelog,
                        "--records",
                        str(n),
                        "--partitions",
                        str(args.partitions),
                    ],
                )
        for suite, coalesce in (("memory", "on"), ("memory-raw-cl", "off")):
            if suite in suites:
                app = f"bench-{suite}-{uid}"
                for mode in ("process", "recover"):
                    argv = self.worker(
                        "count", mode, records=n, topic=topic, app=app, coalesce=coalesce
                    )
                    await self.phase(suite, mode, argv)
                if suite == "memory-raw-cl":
                    # The same replay with the restore consumer on kafka-python.
                    settings = {**json.loads(args.kafka_settings), **KAFKA_PYTHON_FETCH}
                    argv = self.worker(
                        "count",
                        "recover",
                        records=n,
                        topic=topic,
                        app=app,
                        coalesce=coalesce,
                        kafka_settings=json.dumps(settings),
                    )
                    await self.phase(suite, "recover-kafka-python", argv)
                    # Processing with the group consumer fetching on kafka-python (a fresh
                    # app: its own group and changelog).
                    argv = self.worker(
                        "count",
                        "process",
                        records=n,
                        topic=topic,
                        app=f"{app}-kp",
                        coalesce=coalesce,
                        kafka_settings=json.dumps(settings),
                    )
                    await self.phase(suite, "process-kafka-python", argv)
        if "memory-take" in suites:
            argv = self.worker(
                "count",
                "process",
                records=n,
                topic=topic,
                app=f"bench-take-{uid}",
                take=str(args.take),
            )
            await self.phase("memory-take", "process", argv)
        if args.peers and "memory" in suites:
            # Start to first event at the library's default group timeouts (the peers
            # get the same row).
            argv = self.worker(
                "count", "process", records=n, topic=topic, app=f"bench-defaults-{uid}"
            )
            await self.phase("memory", "process-defaults", [*argv, "--library-defaults"])
        if "sqlite" in suites:
            app = f"bench-sqlite-{uid}"
            kept, fresh = self.work / "sqlite-a", self.work / "sqlite-b"
            for phase, mode, directory in (
                ("process", "process", kept),
                ("restart", "recover", kept),
                ("recover", "recover", fresh),
            ):
                argv = self.worker(
                    "count", mode, records=n, topic=topic, app=app, store=f"sqlite://{directory}"
                )
                await self.phase("sqlite", phase, argv)
        if "window" in suites:
            argv = self.worker(
                "window",
                "process",
                records=n,
                topic=topic,
                app=f"bench-window-{uid}",
                base_ts_ms=str(base),
            )
            await self.phase("window", "process", argv)
        big_topic = None
        if "big" in suites and args.big_keys:
            big_topic = f"bench-keys-{uuid.uuid4().hex[:8]}"
            console.print(f"filling {big_topic}: {args.big_keys:,} distinct keys")
            await prefill(
                self.bootstrap,
                big_topic,
                args.partitions,
                [workload.big_key(i) for i in range(args.big_keys)],
            )
            app = f"bench-big-{uid}"
            for phase, directory in (("process", "big-a"), ("recover", "big-b")):
                argv = self.worker(
                    "big",
                    phase,
                    records=args.big_keys,
                    topic=big_topic,
                    app=app,
                    store=f"sqlite://{self.work / directory}",
                )
                await self.phase("big", phase, argv)
        if args.peers:
            await self.run_peers(topic, base, uid, big_topic)

    async def run_peers(self, topic: str, base: int, uid: str, big_topic: str | None) -> None:
        """The peers' rows (``peer_runs.py``) on the same broker and source topics, with
        the same group timeouts as our workers."""
        args = self.args
        state = self.work / "peer-state"
        state.mkdir(exist_ok=True)
        state_file(state, topic, base)
        env = {
            "BENCH_BOOTSTRAP": self.bootstrap,
            "BENCH_STATE": str(state),
            "BENCH_N": str(args.records),
            "BENCH_PARTITIONS": str(args.partitions),
        }
        ours = {**worker.KAFKA_SETTINGS, **json.loads(args.kafka_settings)}
        await run_peers(
            self,
            peers_dir=Path(args.peers_dir),
            env=env,
            group=group_env(ours),
            topic=topic,
            uid=uid,
            big_topic=big_topic,
            big_keys=args.big_keys,
            console=console,
        )


def children_cpu_s() -> float:
    """CPU seconds (user + system, every thread) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def last_result(output: bytes) -> dict[str, Any] | None:
    """The last ``RESULT {json}`` in a phase's output (faust logs it, on stderr, after a
    timestamp prefix; the others print it at the start of a stdout line)."""
    found = re.findall(rb"RESULT (\{.*\})", output)
    return json.loads(found[-1]) if found else None


async def main(args: argparse.Namespace) -> int:
    started = time.time()
    if args.py_spy:
        if shutil.which("py-spy") is None:
            console.print("[red]--py-spy needs py-spy on PATH: pip install py-spy[/red]")
            return 2
        await trio.Path(args.py_spy).mkdir(parents=True, exist_ok=True)
    if args.soak:
        return await soak.main(args, console)
    if args.broker:
        runner = Runner(args, split_kafka_url(args.broker)[0])
        await runner.run()
    else:
        async with open_embedded_broker() as broker:
            runner = Runner(args, broker.bootstrap)
            await runner.run()
    results = runner.results
    checks = evaluate(results)
    title = f"word count, {args.records:,} events, {args.partitions} partitions"
    report(results, checks, title)
    wrong = [r for r in results if "error" in r or r.get("correct") is False]
    # A peer's wrong table is its own finding (reported), not a failure of ours.
    failed = [r for r in wrong if r["suite"] not in PEER_SUITES]
    for peer in (r for r in wrong if r["suite"] in PEER_SUITES):
        detail = peer.get("error") or peer.get("diff") or "wrong table"
        console.print(f"[yellow]{peer['suite']} {peer['phase']}: {detail}[/yellow]")
    document = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": vars(args),
        "runs": results,
        "targets": checks,
        "ok": not failed,
        "peers_ok": len(wrong) == len(failed),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=1))  # noqa: ASYNC240 - once
        console.print(f"results written to {args.json}")
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed or gave a wrong table[/red]")
        console.print(f"logs and stores kept in {runner.work}")
        return 1
    if args.keep:
        console.print(f"logs and stores kept in {runner.work}")
    else:
        shutil.rmtree(runner.work, ignore_errors=True)
    return 0


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--big-keys", type=int, default=1_000_000, help="0 skips the 1M-key run")
    parser.add_argument("--only", nargs="+", choices=SUITES, help="run only these suites")
    parser.add_argument("--peers", action="store_true", help="also run quixstreams and faust")
    parser.add_argument(
        "--peers-dir",
        default=str(Path(tempfile.gettempdir()) / "peers"),
        help="where the peers' venvs are (built there if missing)",
    )
    parser.add_argument("--broker", default=None, help="kafka://host:port (default: embedded)")
    parser.add_argument("--json", default="bench-results.json", help="write the results here")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per phase")
    parser.add_argument("--profile", default=None, help="directory for cProfile dumps")
    parser.add_argument(
        "--py-spy",
        default=None,
        help="directory for py-spy recordings of trio_tables' phases (pip install py-spy)",
    )
    parser.add_argument("--keep", action="store_true", help="keep stores and logs")
    parser.add_argument(
        "--kafka-settings", default="{}", help="JSON of more KafkaSettings for trio_tables"
    )
    parser.add_argument("--take", type=int, default=500, help="memory-take: events per batch")
    soak.add_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(trio.run(main, parse()))
