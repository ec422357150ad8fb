"""GlobalTable across worker processes on the embedded broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

pytestmark = pytest.mark.kafka

APP = Path(__file__).parent / "apps" / "global_app.py"


async def test_three_workers_writing_one_global_table_converge(
    kafka_broker: Any, unique_name: Any
) -> None:
    app = unique_name("global")
    names = ["a", "b", "c"]
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def worker(name: str) -> None:
        command = [sys.executable, str(APP), "--broker", kafka_broker.url, "--app", app,
                   "--name", name, "--workers", ",".join(names), "--writes", "200"]
        results[name] = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )

    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(worker, name)

    views = {}
    for name, done in results.items():
        assert done.returncode == 0, f"{name}:\n{done.stderr.decode()[-3000:]}"
        line = next(x for x in done.stdout.decode().splitlines() if x.startswith("CONVERGED "))
        views[name] = json.loads(line.split(" ", 1)[1])
    expected_keys = {f"{n}-{i}" for n in names for i in range(200)} | {
        f"done-{n}" for n in names
    } | {"common"}
    assert set(views["a"]) == expected_keys
    assert views["a"] == views["b"] == views["c"]  # same content everywhere
    assert views["a"]["common"] in names
    assert all(views["a"][f"{n}-{i}"] == i for n in names for i in range(200))
