"""Window arithmetic against a brute-force oracle (hypothesis)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_tables._windows import HoppingWindow, SlidingWindow, TumblingWindow, to_ms

timestamps = st.integers(-(10**13), 10**13)
sizes = st.integers(1, 10**7)


def _oracle(size: int, step: int, timestamp: int) -> list[tuple[int, int]]:
    """Every window [k*step, k*step + size) holding timestamp, by trying starts."""
    base = (timestamp // step) * step
    candidates = range(base - (size // step + 2) * step, base + 2 * step, step)
    return [(s, s + size) for s in candidates if s <= timestamp < s + size]


@given(size=st.integers(1, 5000), step=st.integers(1, 5000), timestamp=timestamps)
def test_hopping_ranges_match_the_oracle(size: int, step: int, timestamp: int) -> None:
    window = HoppingWindow(size / 1000, step / 1000)
    assert (window.size, window.step) == (size, step)
    ranges = window.ranges(timestamp)
    assert ranges == _oracle(size, step, timestamp)
    if ranges:
        assert window.earliest(timestamp) == ranges[0]
        assert window.current(timestamp) == ranges[-1]


@given(size=sizes, timestamp=timestamps)
def test_tumbling_has_exactly_one_window(size: int, timestamp: int) -> None:
    window = TumblingWindow(f"{size}ms")
    ((start, end),) = window.ranges(timestamp)
    assert start <= timestamp < end
    assert end - start == size
    assert start % size == 0
    assert window.ranges(end) == [(end, end + size)]  # the end belongs to the next one


@given(before=sizes, after=sizes, timestamp=timestamps)
def test_sliding_window_includes_both_edges(before: int, after: int, timestamp: int) -> None:
    window = SlidingWindow(timedelta(milliseconds=before), timedelta(milliseconds=after))
    ((start, end),) = window.ranges(timestamp)
    assert start == timestamp - before
    assert end - 1 == timestamp + after


def test_sub_second_hopping_steps() -> None:
    window = HoppingWindow(1, 0.25)  # 1 s windows every 250 ms
    assert window.ranges(1_000) == [(250, 1250), (500, 1500), (750, 1750), (1000, 2000)]
    assert window.delta(1_000, "500ms") == (500, 1500)


def test_stale_counts_from_the_window_end() -> None:
    window = TumblingWindow(10, expires="1m")
    assert window.expires == 60_000
    assert not window.stale(10_000, 69_999)
    assert window.stale(10_000, 70_000)
    assert not TumblingWindow(10).stale(0, 10**15)  # no expiry: never stale


@pytest.mark.parametrize(
    ("value", "ms"),
    [(10, 10_000), (0.5, 500), ("250ms", 250), ("10s", 10_000), ("5m", 300_000),
     ("2h", 7_200_000), ("1d", 86_400_000), ("1.5s", 1_500), (timedelta(minutes=2), 120_000)],
)
def test_durations(value: object, ms: int) -> None:
    assert to_ms(value) == ms  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["10 parsecs", "", "-5s", -1])
def test_bad_durations_say_what_is_accepted(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        to_ms(value)  # type: ignore[arg-type]


def test_a_timestamp_between_gapped_windows_is_in_none() -> None:
    window = HoppingWindow("1s", "5s")
    assert window.ranges(2_000) == []
    with pytest.raises(ValueError, match="in no window"):
        window.current(2_000)
