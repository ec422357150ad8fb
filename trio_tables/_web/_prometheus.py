"""``/metrics``: a worker's figures in the Prometheus text format (prometheus-client).

Nothing is counted per event: the metrics are built at scrape time from the ledger, the
tables, the commit cycle's counts (:mod:`trio_tables._metrics`) and the
:class:`~._figures.Figures` (end offsets, table sizes), in a registry of their own per
scrape (two managers in one process never share or clash). Every metric carries the
label ``app``; the names and meanings are listed in docs/operations.md and in
:data:`METRICS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ._figures import Figures

__all__ = ["METRICS", "render_metrics"]

P = "trio_tables_"

#: name -> (type, labels besides ``app``, meaning). docs/operations.md lists the same.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "events_processed": ("counter", (), "events finished by this worker's streams"),
    "partition_events_processed": (
        "counter", ("topic", "partition"),
        "source offsets this worker's processing moved past in the partition (the events, "
        "plus transaction markers in between)",
    ),
    "processed_offset": ("gauge", ("topic", "partition"), "one past the last event processed"),
    "committed_offset": ("gauge", ("topic", "partition"), "the group's committed offset"),
    "end_offset": ("gauge", ("topic", "partition"), "the partition's end (high watermark)"),
    "consumer_lag": (
        "gauge", ("topic", "partition"), "end offset minus processed offset (records to go)"
    ),
    "partition_ready": (
        "gauge", ("topic", "partition"),
        "1 when the assigned partition is recovered and processed here, 0 while it recovers",
    ),
    "generation": ("gauge", (), "the consumer group generation of the latest assignment"),
    "commit_latency_seconds": (
        "histogram", (), "time from the start of a commit cycle to its end (changes sent, "
        "acknowledged and persisted)",
    ),
    "commits": ("counter", (), "commit cycles that took changes"),
    "commit_failures": ("counter", (), "commit cycles that failed (the worker stops committing)"),
    "changelog_records_sent": ("counter", ("table",), "changelog records sent and acknowledged"),
    "recovery_records_remaining": (
        "gauge", ("table", "partition"), "changelog records left to restore (0 once recovered)"
    ),
    "recovery_position": (
        "gauge", ("table", "partition"), "changelog offset the current or last restore reached"
    ),
    "recovery_target": ("gauge", ("table", "partition"), "changelog offset the restore goes to"),
    "recovery_records_applied": ("counter", ("table",), "changelog records applied by restores"),
    "standby_lag": (
        "gauge", ("table", "partition"),
        "changelog records a standby copy has not applied (end - next offset + held back)",
    ),
    "standby_records_applied": ("counter", ("table",), "changelog records applied to standbys"),
    "table_keys": (
        "gauge", ("table", "partition"),
        "keys in the store for the partition (as of the last commit; windowed tables count "
        "key and window pairs)",
    ),
    "table_store_bytes": ("gauge", ("table",), "size of the table's sqlite files"),
    "late_window_updates": (
        "counter", ("table",), "updates dropped because their window had closed"
    ),
    "skipped_records": (
        "counter", ("topic",), "undecodable source records skipped (on_decode_error='skip')"
    ),
}


class _Snapshot(Collector):
    """A collector over one moment's figures."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def _family(self, name: str) -> Any:
        kind, labels, doc = METRICS[name]
        cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}[kind]
        return cls(P + name, doc, labels=["app", *labels])

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        host = figures.host
        app = host.app_id
        families = {name: self._family(name) for name, m in METRICS.items() if m[0] != "histogram"}

        def add(name: str, value: float | None, *labels: object) -> None:
            if value is not None:
                families[name].add_metric([app, *map(str, labels)], value)

        add("events_processed", host._ledger.events_processed())
        add("generation", host._supervisor.generation)
        for row in figures.partitions():
            where = (row["topic"], row["partition"])
            add("partition_events_processed", row["events_processed"], *where)
            add("processed_offset", row["processed"], *where)
            add("committed_offset", row["committed"], *where)
            add("end_offset", row["end"], *where)
            add("consumer_lag", row["lag"], *where)
            add("partition_ready", 1 if row["ready"] else 0, *where)
        metrics = host._cycle.metrics
        add("commits", metrics.cycles)
        add("commit_failures", metrics.failed)
        for table, rows in figures.recovery().items():
            for p, row in rows.items():
                add("recovery_records_remaining", row["remaining"], table, p)
                add("recovery_position", row["position"], table, p)
                add("recovery_target", row["target"], table, p)
        for table, standby_rows in figures.standbys().items():
            for p, standby in standby_rows.items():
                add("standby_lag", standby["lag"], table, p)
        for table, info in figures.tables().items():
            add("changelog_records_sent", info["changelog_records_sent"], table)
            add("recovery_records_applied", info["recovery_records_applied"], table)
            add("standby_records_applied", info["standby_records_applied"], table)
            add("late_window_updates", info["late_updates"], table)
            add("table_store_bytes", info["store_bytes"], table)
            for p, keys in info["keys_by_partition"].items():
                add("table_keys", keys, table, p)
        for topic, skipped in figures.skipped().items():
            add("skipped_records", skipped, topic)
        yield from families.values()
        latency = HistogramMetricFamily(
            P + "commit_latency_seconds",
            METRICS["commit_latency_seconds"][2],
            labels=["app"],
        )
        latency.add_metric([app], metrics.latency_buckets(), sum_value=metrics.latency_sum)
        yield latency


def render_metrics(figures: Figures) -> bytes:
    """The Prometheus text exposition of ``figures`` now (call :meth:`Figures.refresh`
    first for fresh end offsets and sizes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(figures))
    return generate_latest(registry)
