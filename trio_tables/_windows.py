"""Window arithmetic in integer milliseconds.

A window is the half-open range ``[start, end)`` of event timestamps (ms since the
epoch). Integers only: Faust's float arithmetic put events on window edges into the
wrong window. Sizes given by users may be seconds (``int``/``float``), a
:class:`~datetime.timedelta` or a string such as ``"250ms"``, ``"10s"``, ``"5m"``,
``"2h"``, ``"1d"``; :func:`to_ms` turns each into milliseconds.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TypeAlias

import attrs

__all__ = [
    "HoppingWindow",
    "SlidingWindow",
    "TumblingWindow",
    "Window",
    "WindowRange",
    "to_ms",
]

WindowRange: TypeAlias = tuple[int, int]
"""``(start, end)`` in ms; the window holds timestamps ``start <= t < end``."""

Duration: TypeAlias = "int | float | timedelta | str"

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def to_ms(value: Duration) -> int:
    """Milliseconds of a duration given as seconds, a ``timedelta`` or a string with a
    unit (``ms``, ``s``, ``m``, ``h``, ``d``). Raises ``ValueError`` with the accepted
    forms for anything else, and for a negative duration."""
    if isinstance(value, bool):
        raise TypeError("a duration cannot be a bool")
    if isinstance(value, timedelta):
        ms = (value.days * 86_400 + value.seconds) * 1000 + value.microseconds // 1000
    elif isinstance(value, (int, float)):
        ms = round(value * 1000)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"cannot read {value!r} as a duration: use seconds (10, 0.5), a timedelta, "
                'or a number with a unit: "250ms", "10s", "5m", "2h", "1d"'
            )
        ms = round(float(match.group(1)) * _UNITS_MS[match.group(2)])
    else:
        raise TypeError(f"a duration must be seconds, a timedelta or a string, not {value!r}")
    if ms < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return ms


def _optional_ms(value: Duration | None) -> int | None:
    return None if value is None else to_ms(value)


@attrs.frozen
class Window:
    """Common to every window kind. ``expires`` (ms, ``None``: never) is how long after
    the latest timestamp seen a window's data is kept."""

    expires: int | None = attrs.field(default=None, kw_only=True, converter=_optional_ms)

    def ranges(self, timestamp: int) -> list[WindowRange]:
        """Every window that holds ``timestamp``, oldest first."""
        raise NotImplementedError

    @property
    def span(self) -> int:
        """Length of every window in ms: a window starting at ``s`` is ``[s, s + span)``."""
        raise NotImplementedError

    def current(self, timestamp: int) -> WindowRange:
        """The newest window holding ``timestamp``."""
        return self._holding(timestamp)[-1]

    def earliest(self, timestamp: int) -> WindowRange:
        """The oldest window holding ``timestamp``."""
        return self._holding(timestamp)[0]

    def _holding(self, timestamp: int) -> list[WindowRange]:
        ranges = self.ranges(timestamp)
        if not ranges:
            raise ValueError(
                f"timestamp {timestamp} is in no window of {self!r} (a hopping window "
                "smaller than its step leaves gaps)"
            )
        return ranges

    def delta(self, timestamp: int, delta: Duration) -> WindowRange:
        """The newest window holding ``timestamp - delta``."""
        return self.current(timestamp - to_ms(delta))

    def stale(self, timestamp: int, latest_timestamp: int) -> bool:
        """Whether a window ending at ``timestamp`` (exclusive) has expired, given the
        latest timestamp seen: it ended ``expires`` ms or more before it."""
        return self.expires is not None and timestamp + self.expires <= latest_timestamp


@attrs.frozen
class HoppingWindow(Window):
    """Windows of ``size`` ms starting every ``step`` ms (at multiples of ``step``):
    a timestamp falls into ``ceil(size / step)`` windows or one fewer."""

    size: int = attrs.field(converter=to_ms)
    step: int = attrs.field(converter=to_ms)

    def __attrs_post_init__(self) -> None:
        if self.size <= 0 or self.step <= 0:
            raise ValueError(
                f"window size and step must be positive ({self.size}, {self.step} ms)"
            )

    @property
    def span(self) -> int:
        return self.size

    def ranges(self, timestamp: int) -> list[WindowRange]:
        size, step = self.size, self.step
        last = (timestamp // step) * step  # the newest start <= timestamp
        first = ((timestamp - size) // step + 1) * step  # the oldest start > timestamp - size
        return [(start, start + size) for start in range(first, last + 1, step)]


@attrs.frozen
class TumblingWindow(Window):
    """Back-to-back windows of ``size`` ms: each timestamp falls into exactly one."""

    size: int = attrs.field(converter=to_ms)

    def __attrs_post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"window size must be positive ({self.size} ms)")

    @property
    def span(self) -> int:
        return self.size

    def ranges(self, timestamp: int) -> list[WindowRange]:
        start = (timestamp // self.size) * self.size
        return [(start, start + self.size)]


@attrs.frozen
class SlidingWindow(Window):
    """One window per timestamp: ``[t - before, t + after]`` (both ends included, so
    the range is ``(t - before, t + after + 1)``)."""

    before: int = attrs.field(converter=to_ms)
    after: int = attrs.field(converter=to_ms)

    @property
    def span(self) -> int:
        return self.before + self.after + 1

    def ranges(self, timestamp: int) -> list[WindowRange]:
        return [(timestamp - self.before, timestamp + self.after + 1)]
