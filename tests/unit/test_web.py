"""The worker's HTTP endpoint on the memory transport, in process: routes, key decoding,
windowed answers, 503 while recovering, the missing-extra error, and what cancelling
``serve_web`` does. (Two worker processes on the real broker:
tests/integration/test_web_workers.py.)"""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import TableManager
from trio_tables._transport._base import OutgoingRecord
from trio_tables._web._app import FORWARDED_HEADER
from trio_tables._web._client import HttpError, get
from trio_tables._web._prometheus import METRICS
from trio_tables.errors import MissingExtra

PARTITIONS = 4


async def _broker(events: list[tuple[str, Any]]) -> str:
    url = f"memory://web-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [OutgoingRecord("words", json.dumps(v).encode(), key=k.encode()) for k, v in events]
            )
    return url


@asynccontextmanager
async def _worker(url: str) -> AsyncIterator[TableManager]:
    async with TableManager(
        "webapp", broker=url, commit_interval=0.1, web_port=0, web_host="127.0.0.1",
        advertised_host="127.0.0.1",
    ) as manager:
        yield manager


async def _run_until_processed(manager: TableManager, n: int, apply: Any) -> None:
    async with manager.stream("words", key_type=str) as events:
        seen = 0
        async for event in events:
            apply(event)
            seen += 1
            if seen == n:
                events.ack()
                break
    await manager.commit()


async def _json(url: str) -> tuple[int, Any, dict[str, str]]:
    response = await get(url)
    return response.status, json.loads(response.body), response.headers


async def test_status_metrics_and_key_queries_of_one_worker() -> None:
    words = [f"k{i % 7}" for i in range(210)]
    url = await _broker([(w, {"n": i}) for i, w in enumerate(words)])
    async with _worker(url) as manager:
        assert manager.web_url is not None
        base = manager.web_url
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        by_number = manager.Table("by_number", key_type=int, use_partitioner=True)

        def apply(event: Any) -> None:
            counts[event.key] += 1
            by_number[event.value["n"] % 5] = event.key

        async with manager.stream("words", key_type=str) as events:
            seen = 0
            async for event in events:
                apply(event)
                seen += 1
                if seen == len(words):
                    events.ack()  # the last event counts as processed
                    break
            # Inside the stream block (the group is still joined): answers are served.
            status_code, status, _ = await _json(f"{base}/status")
            assert status_code == 200
            assert status["events_processed"] == len(words)
            assert status["assignment"] == {"words": list(range(PARTITIONS))}
            assert status["actives_ready"] is True
            assert sum(p["events_processed"] for p in status["partitions"]) == len(words)
            assert all(p["lag"] == 0 for p in status["partitions"]), status["partitions"]

            for key, n in Counter(words).items():
                code, body, headers = await _json(f"{base}/tables/counts/{key}")
                assert (code, body) == (200, n)
                assert headers["x-trio-tables-served-by"] == base.removeprefix("http://")
            # int keys are read as JSON
            code, body, _ = await _json(f"{base}/tables/by_number/3")
            assert code == 200
            assert body in set(words)
            assert (await get(f"{base}/tables/by_number/x")).status == 400
            assert (await get(f"{base}/tables/counts/nope")).status == 404
            assert (await get(f"{base}/tables/nope/k1")).status == 404
            assert (await get(f"{base}/tables/counts/k1?window=bogus")).status == 400

            await manager.commit()
            text = (await get(f"{base}/metrics")).body.decode()
            assert f'trio_tables_events_processed_total{{app="webapp"}} {len(words)}.0' in text
            for name, (kind, _, _) in METRICS.items():
                suffix = {"counter": "_total", "histogram": "_count"}.get(kind, "")
                if name not in ("standby_lag", "table_store_bytes", "skipped_records"):
                    assert f"trio_tables_{name}{suffix}" in text, name
            assert 'trio_tables_table_keys{app="webapp",partition=' in text
            assert "trio_tables_commits_total" in text


async def test_windowed_table_answers_the_current_window_or_all() -> None:
    url = await _broker([("a", 1), ("a", 1), ("b", 1)])
    async with _worker(url) as manager:
        base = manager.web_url
        windows = manager.Table("per_minute", default=int, key_type=str).tumbling(
            60, expires=3600
        )
        await _run_until_processed(manager, 3, lambda e: windows.__setitem__(
            e.key, windows[e.key].value() + 1))
        async with manager.stream("words", key_type=str):
            await manager.wait_until_recovered()
            code, current, _ = await _json(f"{base}/tables/per_minute/a")
            assert code == 200
            assert current["value"] == 2
            assert current["end"] - current["start"] == 60_000
            code, every, _ = await _json(f"{base}/tables/per_minute/a?window=all")
            assert (code, every) == (200, [current])
            assert (await get(f"{base}/tables/per_minute/zz?window=all")).status == 404


async def test_503_with_retry_after_while_the_key_s_partition_recovers() -> None:
    url = await _broker([("k1", 1)] * 30)
    async with TableManager("webapp", broker=url, commit_interval=0.1) as first:
        counts = first.Table("counts", default=int, key_type=str, value_type=int)
        await _run_until_processed(
            first, 30, lambda e: counts.__setitem__(e.key, counts[e.key] + 1)
        )

    gate = trio.Event()
    held = trio.Event()

    async def on_changelog_event(record: Any) -> None:
        held.set()
        await gate.wait()

    async with _worker(url) as manager:
        base = manager.web_url
        manager.Table("counts", default=int, key_type=str, value_type=int,
                      on_changelog_event=on_changelog_event)
        async with manager.stream("words", key_type=str):
            await held.wait()  # the restore is in progress
            response = await get(f"{base}/tables/counts/k1")
            assert response.status == 503
            assert response.headers["retry-after"] == "1"
            status = json.loads((await get(f"{base}/status")).body)
            assert status["actives_ready"] is False
            assert any(row["remaining"] > 0 for row in status["recovery"]["counts"].values())
            gate.set()
            await manager.wait_until_recovered()
            code, body, _ = await _json(f"{base}/tables/counts/k1")
            assert (code, body) == (200, 30)


async def test_a_forwarded_query_for_a_partition_not_served_here_answers_503() -> None:
    url = await _broker([("k1", 1)])
    async with _worker(url) as manager:
        manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream("words", key_type=str):
            await manager.wait_until_recovered()
            assert manager.web_url is not None
            # Pretend the partition moved away (the ledger no longer says ready).
            partition = manager.tables["counts"].partition_for_key("k1")
            manager._ledger.ready.discard(partition)
            try:
                response = await get(
                    f"{manager.web_url}/tables/counts/k1", headers=[(FORWARDED_HEADER, "1")]
                )
            finally:
                manager._ledger.ready.add(partition)
            assert response.status == 503


async def test_missing_web_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypercorn", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r"trio-tables\[web\]"):
        async with TableManager("webapp", broker="memory://", web_port=0):
            pass  # pragma: no cover


async def test_cancelling_serve_web_stops_the_server() -> None:
    async with TableManager("webapp", broker=f"memory://web-{uuid.uuid4().hex[:8]}") as manager:
        assert manager.web_url is None
        async with trio.open_nursery() as nursery:
            url = await nursery.start(manager.serve_web, 0)
            assert url == manager.web_url
            assert (await get(f"{url}/status")).status == 200
            nursery.cancel_scope.cancel()
        assert manager.web_url is None
        with pytest.raises(HttpError):
            await get(f"{url}/status")


async def test_top_shows_each_worker_and_one_that_does_not_answer() -> None:
    import argparse
    import io

    from rich.console import Console

    from trio_tables._cli._top import run_top

    url = await _broker([(f"k{i % 3}", i) for i in range(40)])
    async with _worker(url) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream("words", key_type=str) as events:
            seen = 0
            async for event in events:
                counts[event.key] += 1
                seen += 1
                if seen == 40:
                    events.ack()
                    break
            with trio.socket.socket() as unused:  # a port nobody listens on
                await unused.bind(("127.0.0.1", 0))
                dead = f"http://127.0.0.1:{unused.getsockname()[1]}"
            out = io.StringIO()
            args = argparse.Namespace(url=[manager.web_url, dead], interval=1.0, once=True)
            code = await run_top(args, Console(file=out, width=120), Console(file=io.StringIO()))
    assert code == 0
    text = out.getvalue()
    assert "webapp @ 127.0.0.1:" in text
    assert "events 40" in text
    for p in range(PARTITIONS):
        assert f"words[{p}]" in text
    assert f"{dead}: not answering" in text
