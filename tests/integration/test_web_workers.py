"""The worker's HTTP endpoint with two worker processes on the embedded broker: any key
asked of either worker answers the table's value (forwarded both ways), ``/metrics``
follows the run (processed count and lag move and end at the events produced), and a
query during a forced rebalance answers 503, never a wrong value."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from trio_tables import open_transport
from trio_tables._web._client import HttpError, Response, get

from .workers import (
    SETTINGS,
    Worker,
    printing_worker_logs_on_failure,
    produce,
    scratch_dir,
    words,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
VOCABULARY = 40


async def _topic(broker: Any, name: str) -> None:
    async with open_transport(broker.url, **SETTINGS) as transport:
        await transport.create_topic(name, PARTITIONS)


async def _url(worker: Worker) -> str:
    return (await worker.wait_for_line("WEB ")).split(" ", 1)[1]


async def _status(url: str) -> dict[str, Any]:
    response = await get(f"{url}/status")
    assert response.status == 200, response
    status: dict[str, Any] = json.loads(response.body)
    return status


def _samples(text: str, name: str) -> dict[str, float]:
    """``labels -> value`` of the samples of metric ``name`` in a Prometheus text page."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            found[labels[len(name) :]] = float(value)
    return found


async def _scrape(url: str) -> tuple[float, float]:
    """(events processed, total consumer lag) from the worker's ``/metrics``."""
    response = await get(f"{url}/metrics")
    assert response.status == 200
    text = response.body.decode()
    processed = sum(_samples(text, "trio_tables_events_processed_total").values())
    lag = sum(_samples(text, "trio_tables_consumer_lag").values())
    return processed, lag


async def _settled(urls: list[str]) -> None:
    """Wait until the workers share one generation, hold every partition between them
    and recovered what they hold (the endpoint's own view; polled, no event to await
    across processes)."""
    while True:
        states = [await _status(url) for url in urls]
        held = sorted(p for s in states for p in s["active_partitions"])
        if (
            held == list(range(PARTITIONS))
            and all(s["actives_ready"] and s["active_partitions"] for s in states)
            and len({s["generation"] for s in states}) == 1
        ):
            return
        await trio.sleep(0.2)


async def test_any_worker_answers_every_key_and_metrics_follow_the_run(
    kafka_broker: Any, unique_name: Any, tmp_path: Path
) -> None:
    topic, app = unique_name("words"), unique_name("web")
    await _topic(kafka_broker, topic)
    workdir = scratch_dir(tmp_path, "workers")
    produced = words(3000, 7, VOCABULARY)
    with printing_worker_logs_on_failure(), trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            a, b = (
                Worker(name, broker=kafka_broker, app=app, topic=topic, workdir=workdir,
                       web=True, event_delay=0.001)
                for name in ("a", "b")
            )
            await a.start(nursery)
            await b.start(nursery)
            urls = [await _url(a), await _url(b)]
            await _settled(urls)
            await produce(kafka_broker, topic, produced)

            # Scrape both while they work through the events: the processed count only
            # grows, lag is seen above 0, and both end at the events produced.
            history: list[tuple[float, float]] = []
            while True:
                scrapes = [await _scrape(url) for url in urls]
                history.append((sum(s[0] for s in scrapes), sum(s[1] for s in scrapes)))
                if history[-1] == (len(produced), 0):
                    break
                for worker in (a, b):
                    worker.check_alive()
                await trio.sleep(0.1)
            counts = [c for c, _ in history]
            assert counts == sorted(counts), f"processed count went back: {history}"
            assert any(lag > 0 and count < len(produced) for count, lag in history), history
            assert history[0][0] < len(produced)

            # Every key asked of either worker answers the table's value; the owner of
            # some keys is a, of others b: both forward to the other.
            expected = Counter(produced)
            served_by: dict[str, set[str]] = {url: set() for url in urls}
            for key in [f"w{i:03d}" for i in range(VOCABULARY)] + ["never-seen"]:
                for url in urls:
                    response = await _get_settled(f"{url}/tables/counts/{quote(key)}")
                    if key in expected:
                        assert response.status == 200, (key, url, response)
                        assert json.loads(response.body) == expected[key], (key, url)
                        served_by[url].add(response.headers["x-trio-tables-served-by"])
                    else:
                        assert response.status == 404, (key, url, response)
            hosts = {url.removeprefix("http://") for url in urls}
            for url in urls:
                assert served_by[url] == hosts, f"{url} served every key itself: {served_by}"

            a.terminate()
            b.terminate()
            await a.wait_stopped()
            await b.wait_stopped()


async def _get_settled(url: str) -> Response:
    """A query answered (the group is settled: a 503 here would be a failure)."""
    response = await get(url)
    assert response.status != 503, (url, response)
    return response


async def test_a_query_during_a_forced_rebalance_answers_503_never_a_wrong_value(
    kafka_broker: Any, unique_name: Any, tmp_path: Path
) -> None:
    topic, app = unique_name("words"), unique_name("web503")
    await _topic(kafka_broker, topic)
    workdir = scratch_dir(tmp_path, "workers")
    produced = words(2000, 11, VOCABULARY)
    expected = Counter(produced)
    keys = sorted(expected)
    with printing_worker_logs_on_failure(), trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            a = Worker("a", broker=kafka_broker, app=app, topic=topic, workdir=workdir, web=True)
            b = Worker("b", broker=kafka_broker, app=app, topic=topic, workdir=workdir, web=True)
            await a.start(nursery)
            url_a = await _url(a)
            await _settled([url_a])
            await produce(kafka_broker, topic, produced)
            while (await _scrape(url_a)) != (len(produced), 0):
                a.check_alive()
                await trio.sleep(0.1)

            # Ask a for every key, round after round, while b joins (a rebalance: a's
            # partitions are revoked, then b recovers its share from the changelog).
            answers: list[tuple[str, int, Any, str | None]] = []
            done, stopped_asking, answered = trio.Event(), trio.Event(), [trio.Event()]

            async def ask() -> None:
                while not done.is_set():
                    for key in keys:
                        try:
                            response = await get(f"{url_a}/tables/counts/{key}")
                        except HttpError as exc:  # never expected: a keeps serving
                            raise AssertionError(f"a did not answer: {exc}") from exc
                        body = json.loads(response.body)
                        answers.append(
                            (key, response.status, body, response.headers.get("retry-after"))
                        )
                        answered[0].set()
                        answered[0] = trio.Event()
                stopped_asking.set()

            nursery.start_soon(ask)
            await b.start(nursery)
            url_b = await _url(b)
            await _settled([url_a, url_b])
            # One more full round after the group settled.
            settled_at = len(answers)
            while len(answers) < settled_at + 2 * len(keys):
                await answered[0].wait()
            done.set()
            await stopped_asking.wait()

            for key, status, body, retry_after in answers:
                assert status in (200, 503), (key, status, body)
                if status == 200:
                    assert body == expected[key], (key, body)
                else:
                    assert retry_after is not None, (key, body)
            assert any(status == 503 for _, status, _, _ in answers), "no 503 seen"
            assert all(status == 200 for _, status, _, _ in answers[-len(keys) :])
            a.terminate()
            b.terminate()
            await a.wait_stopped()
            await b.wait_stopped()
