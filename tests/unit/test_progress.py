"""Log lines of long recoveries: rate and time left."""

from __future__ import annotations

import logging

import pytest

from trio_tables._progress import RestoreProgressLog, format_duration


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_long_restore_logs_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = RestoreProgressLog(logging.getLogger("t"), "counts", 100_000, interval=5, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        clock.now += 1
        log.update(10_000)  # too early for a line
        clock.now += 4
        log.update(25_000)
        clock.now += 5
        log.update(50_000)
        clock.now += 10
        log.finish(100_000)
    assert caplog.messages == [
        "counts: restored 25,000 of 100,000 changelog records (25%), 5,000 records/s, "
        "about 15s left",
        "counts: restored 50,000 of 100,000 changelog records (50%), 5,000 records/s, "
        "about 10s left",
        "counts: restored 100,000 changelog records in 20s (5,000 records/s)",
    ]


def test_a_short_restore_logs_nothing_here(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = RestoreProgressLog(logging.getLogger("t"), "counts", 10, interval=5, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        clock.now += 0.5
        log.update(10)
        log.finish(10)
    assert caplog.messages == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "0.2s"), (9.96, "10.0s"), (42, "42s"), (185, "3m05s"), (3725, "1h02m")],
)
def test_durations_read_well(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
