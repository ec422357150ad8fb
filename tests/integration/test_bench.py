"""``nox -s bench`` works: the benchmark driver on a tiny workload, end to end.

No timing is asserted (numbers on a shared CI machine mean nothing); what must hold is
that every phase ran in its own process, checked its table and said it was right, and
that the targets are evaluated from the runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trio_tables.testing import EmbeddedBroker

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench_module() -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCHMARKS))
    return bench


@pytest.mark.kafka
def test_bench_runs_every_suite_and_checks_every_table(
    kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench.py"),
            "--records=1500",
            "--big-keys=1000",
            f"--broker={kafka_broker.url}",
            f"--json={out}",
            "--timeout=300",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    document = json.loads(out.read_text())
    assert document["ok"] is True
    phases = {(run["suite"], run["phase"]) for run in document["runs"]}
    assert phases >= {
        ("baseline", "process"),
        ("baseline", "recover"),
        ("memory", "process"),
        ("memory", "recover"),
        ("memory-raw-cl", "process"),
        ("memory-raw-cl", "recover"),
        ("memory-take", "process"),
        ("sqlite", "process"),
        ("sqlite", "restart"),
        ("sqlite", "recover"),
        ("window", "process"),
        ("big", "process"),
        ("big", "recover"),
    }
    for run in document["runs"]:
        assert "error" not in run, run
        assert run.get("correct") is True or "skipped" in run, run
        # Every row says which clients it used and its whole process's CPU per event.
        assert run["reads"], run
        assert run["produces"], run
        assert run["cpu_s_all"] > 0, run
        if "skipped" not in run:
            assert run["cpu_us_all"] > 0, run
    by_phase = {(run["suite"], run["phase"]): run for run in document["runs"]}
    assert by_phase[("memory-raw-cl", "recover")]["replayed"] == 1500  # one record per event
    assert by_phase[("big", "process")]["changelog_records"] == 1000  # every key once
    assert by_phase[("sqlite", "restart")]["replayed"] == 0  # a clean stop persisted all
    assert by_phase[("memory-take", "process")]["events"] == 1500
    measured = {c["target"] for c in document["targets"] if c["value"] is not None}
    assert "sqlite restart replays <= 1% of the changelog" in measured
    assert "memory: events/s / baseline >= 1.5" in measured
    assert "for comparison: word count via take() / per event (memory store)" in measured


@pytest.mark.kafka
def test_soak_smoke_run_checks_the_survivors_table_and_samples_its_rss(
    kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench.py"),
            "--soak",
            "--soak-events=2000",
            "--soak-interval=4",
            "--soak-rate=400",
            f"--broker={kafka_broker.url}",
            f"--json={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    soak = json.loads(out.read_text())["soak"]
    assert soak["correct"] is True
    assert soak["partitions_at_end"] == list(range(8))  # the survivor owns them all
    assert soak["churns"] >= 1  # the second worker joined at least once
    assert soak["rss_quarter_mb"] > 0
    assert soak["rss_end_mb"] > 0


def test_targets_are_ratios_of_this_runs_numbers() -> None:
    bench = _bench_module()
    runs = [
        {"suite": "baseline", "phase": "process", "events_per_s": 20_000.0},
        {"suite": "baseline", "phase": "recover", "records_per_s": 100_000.0},
        {"suite": "memory", "phase": "process", "events_per_s": 40_000.0, "startup_s": 3.5},
        {"suite": "memory-raw-cl", "phase": "recover", "records_per_s": 70_000.0},
        {"suite": "sqlite", "phase": "process", "events_per_s": 25_000.0, "error": "exit 1"},
        {"suite": "sqlite", "phase": "process", "changelog_records": 1000},
        {"suite": "sqlite", "phase": "restart", "replayed": 20},
    ]
    checks = {c["target"]: c for c in bench.evaluate(runs)}
    memory = checks["memory: events/s / baseline >= 1.5"]
    assert (memory["value"], memory["ok"]) == (2.0, True)
    sqlite = checks["sqlite: events/s / baseline >= 1.5"]
    assert sqlite["value"] is None  # the failed run is not used; the next has no rate
    assert checks["memory: start -> 1st event s <= 3"]["ok"] is False
    recovery = [c for name, c in checks.items() if name.startswith("recovery records/s")]
    assert recovery[0]["value"] == pytest.approx(0.7)
    assert recovery[0]["ok"] is False
    assert checks["sqlite restart replays <= 1% of the changelog"]["value"] == 0.02
    assert "memory: events/s / quixstreams >= 1.0" not in checks  # no --peers run


def test_issue_18_targets_and_the_peer_rows_beside_ours() -> None:
    bench = _bench_module()
    runs = [
        {"suite": "baseline", "phase": "process", "events_per_s": 20_000.0},
        {"suite": "memory", "phase": "process", "events_per_s": 60_000.0},
        {"suite": "memory", "phase": "recover", "recover_s": 0.2},
        {"suite": "memory-take", "phase": "process", "events_per_s": 90_000.0},
        {"suite": "quix", "phase": "process", "events_per_s": 40_000.0},
        {"suite": "quix", "phase": "recover", "recover_s": 1.6},
        {"suite": "window", "phase": "process", "events_per_s": 50_000.0},
        {"suite": "quix-window", "phase": "process", "events_per_s": 25_000.0},
        {"suite": "big", "phase": "process", "events_per_s": 20_000.0},
        {"suite": "quix-unique", "phase": "process", "events_per_s": 40_000.0},
    ]
    checks = {c["target"]: c for c in bench.evaluate(runs)}
    assert checks["[18] memory: events/s / baseline >= 2.5"]["ok"] is True
    assert checks["[18] memory: events/s / quixstreams >= 2.0"]["ok"] is False  # 1.5
    assert checks["[18] quixstreams recovery s / ours (coalesced) >= 5"]["value"] == 8.0
    assert checks["[18] window: events/s / quixstreams window >= 1.5"]["value"] == 2.0
    assert checks["for comparison: 1M distinct keys, events/s / quixstreams"]["value"] == 0.5
    take = checks["for comparison: word count via take() / per event (memory store)"]
    assert (take["value"], take["ok"]) == (1.5, None)


def test_peer_rows_name_their_clients() -> None:
    _bench_module()  # puts benchmarks/ on the path once
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import peer_runs  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCHMARKS))
    row = {"suite": "quix-window", "phase": "process", "eps": 1000, "startup_to_first_event_s": 2}
    peer_runs.normalise_peer(row)
    assert (row["events_per_s"], row["startup_s"]) == (1000, 2)
    assert row["reads"] == row["produces"] == "librdkafka (confluent-kafka)"
    faust = {"suite": "faust", "phase": "recover", "eps": 10, "changelog_records": 5}
    peer_runs.normalise_peer(faust)
    assert (faust["records_per_s"], faust["replayed"], faust["reads"]) == (10, 5, "aiokafka")
