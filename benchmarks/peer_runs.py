"""The peers' phases of ``bench.py --peers``: quixstreams and faust-streaming, each in a
venv of its own (built once under ``--peers-dir``), on the same broker and topics.

Rows (``suite/phase``):

quix/process, quix/recover              the word count and its recovery (``quix_bench.py``)
quix/process-defaults                   the same count with the client's default group
                                        timeouts (start -> first event at default settings)
quix-window/process                     tumbling 10 s windows, event time (``quix_more.py``)
quix-unique/process                     the 1M-distinct-key topic of the ``big`` suite
faust/process, faust/recover, faust/process-defaults   as for quix (``faust_bench.py``)

Every row but ``*-defaults`` runs with the same group timeouts as trio_tables' workers
(``BENCH_SESSION_TIMEOUT_MS`` / ``BENCH_HEARTBEAT_INTERVAL_MS``). A peer's wrong table is
reported, not a failure of the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

import trio

HERE = Path(__file__).resolve().parent
PEER_SUITES = ("quix", "quix-window", "quix-unique", "faust")
PEER_PACKAGES = {
    "quix": ["quixstreams", "psutil"],
    "faust": ["faust-streaming", "rocksdict", "kafka-python", "psutil"],
}
# Which client reads and which produces, per system (trio_tables' workers report theirs).
CLIENTS = {
    "baseline": ("kafka-python", "kafka-python"),
    "quix": ("librdkafka (confluent-kafka)", "librdkafka (confluent-kafka)"),
    "faust": ("aiokafka", "aiokafka"),
}


class Runner(Protocol):
    async def phase(
        self, suite: str, phase: str, argv: list[str], *, env: dict[str, str] | None = None
    ) -> dict[str, Any]: ...


def group_env(settings: dict[str, Any]) -> dict[str, str]:
    """The peers' environment for trio_tables' group timeouts ``settings``."""
    return {
        "BENCH_SESSION_TIMEOUT_MS": str(settings["session_timeout_ms"]),
        "BENCH_HEARTBEAT_INTERVAL_MS": str(settings["heartbeat_interval_ms"]),
    }


async def venv_python(peers_dir: Path, peer: str, console: Any) -> Path:
    python = peers_dir / peer / "bin" / "python"
    if not python.exists():
        console.print(f"building the {peer} venv in {python.parent.parent} (once)")
        await trio.run_process([sys.executable, "-m", "venv", str(python.parent.parent)])
        await trio.run_process([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES[peer]])
    return python


async def run_peers(
    runner: Runner,
    *,
    peers_dir: Path,
    env: dict[str, str],
    group: dict[str, str],
    topic: str,
    uid: str,
    big_topic: str | None,
    big_keys: int,
    console: Any,
) -> None:
    """Every peer row (module docstring), one process each, strictly one after another."""
    for peer in ("quix", "faust"):
        python = await venv_python(peers_dir, peer, console)
        script = str(HERE / "peers" / f"{peer}_bench.py")
        extra = ["--store", "memory"] if peer == "faust" else []
        for phase, mode, settings in (
            ("process", "process", group),
            ("recover", "recover", group),
            ("process-defaults", "process", {}),
        ):
            run = f"{peer[0]}{uid}{'d' if not settings else ''}"
            row = await runner.phase(
                peer,
                phase,
                [str(python), script, mode, "--run", run, "--topic", topic, *extra],
                env={**env, **settings},
            )
            normalise_peer(row)
        if peer != "quix":
            continue
        more = str(HERE / "peers" / "quix_more.py")
        row = await runner.phase(
            "quix-window",
            "process",
            [str(python), more, "window", "--run", uid, "--topic", topic],
            env={**env, **group},
        )
        normalise_peer(row)
        if big_topic is not None:
            row = await runner.phase(
                "quix-unique",
                "process",
                [str(python), more, "unique", "--run", uid, "--topic", big_topic],
                env={**env, **group, "BENCH_N": str(big_keys)},
            )
            normalise_peer(row)


def normalise_peer(row: dict[str, Any]) -> None:
    """Map the peer scripts' result names onto ours."""
    reads, produces = CLIENTS["quix" if row["suite"].startswith("quix") else "faust"]
    row.setdefault("reads", reads)
    row.setdefault("produces", produces)
    if row["phase"].startswith("process"):
        row["events_per_s"] = row.get("eps")
        row["startup_s"] = row.get("startup_to_first_event_s")
    else:
        row["records_per_s"] = row.get("eps")
        row["replayed"] = row.get("changelog_records_replayed", row.get("changelog_records"))
        row["startup_s"] = row.get("recover_s_from_process_start")


def state_file(state: Path, topic: str, base: int) -> None:
    """The peers' scripts read the base timestamp of ``topic`` from here."""
    (state / f"{topic}.json").write_text(json.dumps({"topic": topic, "base_ts_ms": base}))
