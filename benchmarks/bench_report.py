"""The benchmark's verdict and table: the targets each run is checked against
(:func:`evaluate`) and the rich report (:func:`report`). Split from ``bench.py``, which
runs the phases."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=max(Console().width, 170))


def find(results: list[dict[str, Any]], suite: str, phase: str) -> dict[str, Any]:
    for row in results:
        if row["suite"] == suite and row["phase"] == phase and "error" not in row:
            return row
    return {}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def evaluate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each as measured in this run (``ok`` None: not measured)."""
    get = lambda s, p, k: find(results, s, p).get(k)  # noqa: E731
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, target: float | None, higher: bool = True) -> None:
        """``target`` None: a figure shown for comparison, not a target."""
        if value is None or target is None:
            ok = None
        else:
            ok = value >= target if higher else value <= target
        checks.append({"target": name, "value": value, "limit": target, "ok": ok})

    raw_eps = get("baseline", "process", "events_per_s")
    quix_eps = get("quix", "process", "events_per_s")
    for suite in ("memory", "sqlite"):
        eps = get(suite, "process", "events_per_s")
        check(f"{suite}: events/s / baseline >= 1.5", ratio(eps, raw_eps), 1.5)
        if quix_eps is not None:
            check(f"{suite}: events/s / quixstreams >= 1.0", ratio(eps, quix_eps), 1.0)
    for suite in ("memory", "memory-raw-cl", "sqlite"):
        check(f"{suite}: start -> 1st event s <= 3", get(suite, "process", "startup_s"), 3.0, False)
    check(
        "recovery records/s / baseline >= 0.8 (coalescing off: same changelog volume)",
        ratio(
            get("memory-raw-cl", "recover", "records_per_s"),
            get("baseline", "recover", "records_per_s"),
        ),
        0.8,
    )
    check(
        "for comparison: the same recovery, fetch_client=kafka-python / baseline",
        ratio(
            get("memory-raw-cl", "recover-kafka-python", "records_per_s"),
            get("baseline", "recover", "records_per_s"),
        ),
        None,
    )
    replayed = get("sqlite", "restart", "replayed")
    records = get("sqlite", "process", "changelog_records")
    check(
        "sqlite restart replays <= 1% of the changelog",
        None if replayed is None or not records else replayed / records,
        0.01,
        False,
    )
    for suite in ("memory", "sqlite"):
        for phase in ("process", "recover"):
            check(
                f"{suite} {phase}: peak RSS MB <= 190", get(suite, phase, "peak_rss_mb"), 190, False
            )
    for phase in ("process", "recover"):
        check(
            f"1M-key sqlite {phase}: peak RSS MB <= 300",
            get("big", phase, "peak_rss_mb"),
            300,
            False,
        )
    check(
        "for comparison: word count via take() / per event (memory store)",
        ratio(
            get("memory-take", "process", "events_per_s"), get("memory", "process", "events_per_s")
        ),
        None,
    )
    issue18(get, check)
    return checks


def issue18(get: Any, check: Any) -> None:
    """The targets of the second speed issue (18) that this run measured."""
    raw_eps = get("baseline", "process", "events_per_s")
    quix_eps = get("quix", "process", "events_per_s")
    for suite in ("memory", "sqlite"):
        eps = get(suite, "process", "events_per_s")
        check(f"[18] {suite}: events/s / baseline >= 2.5", ratio(eps, raw_eps), 2.5)
        if quix_eps is not None:
            check(f"[18] {suite}: events/s / quixstreams >= 2.0", ratio(eps, quix_eps), 2.0)
    check(
        "[18] recovery records/s / baseline >= 1.0 (coalescing off)",
        ratio(
            get("memory-raw-cl", "recover", "records_per_s"),
            get("baseline", "recover", "records_per_s"),
        ),
        1.0,
    )
    quix_recover = get("quix", "recover", "recover_s")
    if quix_recover is not None:
        check(
            "[18] quixstreams recovery s / ours (coalesced) >= 5",
            ratio(quix_recover, get("memory", "recover", "recover_s")),
            5.0,
        )
    quix_window = get("quix-window", "process", "events_per_s")
    if quix_window is not None:
        check(
            "[18] window: events/s / quixstreams window >= 1.5",
            ratio(get("window", "process", "events_per_s"), quix_window),
            1.5,
        )
    quix_unique = get("quix-unique", "process", "events_per_s")
    if quix_unique is not None:
        check(
            "for comparison: 1M distinct keys, events/s / quixstreams",
            ratio(get("big", "process", "events_per_s"), quix_unique),
            None,
        )


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


SHORT_CLIENTS = {"kafka-python": "kp", "librdkafka": "rdk", "aiokafka": "aio"}


def short_client(name: str | None) -> str:
    if not name:
        return "-"
    name = name.split(" (")[0]
    return SHORT_CLIENTS.get(name, name)


def report(results: list[dict[str, Any]], checks: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for column in (
        "suite",
        "phase",
        "events/s",
        "start->1st event s",
        "recovery s",
        "replayed",
        "replayed/s",
        "changelog",
        "CPU us/event or record",
        "CPU us, whole process",
        "reads",
        "produces",
        "peak RSS MB",
        "correct",
    ):
        left = column in ("suite", "phase")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for row in results:
        correct = row.get("correct")
        table.add_row(
            row["suite"],
            row["phase"],
            fmt(row.get("events_per_s"), ",.0f"),
            fmt(row.get("startup_s"), ".2f"),
            fmt(row.get("recover_s"), ".2f"),
            fmt(row.get("replayed"), ","),
            fmt(row.get("records_per_s"), ",.0f"),
            fmt(row.get("changelog_records"), ","),
            fmt(row.get("cpu_us_per_event", row.get("cpu_us_per_record")), ".1f"),
            fmt(row.get("cpu_us_all"), ".1f"),
            short_client(row.get("reads")),
            short_client(row.get("produces")),
            fmt(row.get("peak_rss_mb"), ".0f"),
            (row.get("skipped") and "skipped")
            or row.get("error")
            or ("yes" if correct else "[red]NO[/red]" if correct is False else "-"),
        )
    console.print(table)
    console.print(
        "[dim]CPU us/event or record: trio_tables, first to last event (or the recovery), "
        "all threads; CPU us, whole process: every system, the phase's process from start "
        "to exit (start-up, group join and table check included), all threads, per event "
        "or replayed record. reads/produces: the Kafka client that reads the source (or "
        "the changelog, in recover rows) and the one that produces (kp: kafka-python, rdk: "
        "librdkafka through confluent-kafka, aio: aiokafka). Rows *-defaults: the "
        "clients' default group timeouts; all other rows: trio_tables' bench settings "
        "for every system.[/dim]"
    )
    ratios = Table(title="targets (ratios measured in this run)")
    for column in ("target", "measured", "result"):
        ratios.add_column(column, justify="left" if column == "target" else "right")
    for c in checks:
        result = {True: "[green]ok[/green]", False: "[red]MISS[/red]", None: "-"}[c["ok"]]
        ratios.add_row(c["target"], fmt(c["value"], ".3g"), result)
    console.print(ratios)
