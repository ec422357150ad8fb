"""Which keys a store partition may hold: :class:`KeyFilter`, a Bloom filter.

A persistent store's read cache is *complete* while it knows every key the store holds
(a key it does not know needs no store read). The cache keeps at most
``READ_CACHE_LIMIT`` values; past that it starts over, and without this filter it stopped
being complete: a table with more distinct keys per partition than the limit (the
1M-key build: 125k per partition) read the store for every new key, on the Trio thread
(a sqlite read hands the GIL over, which can wait milliseconds for a busy thread).

The filter holds every key written to the store since the cache became complete, at
about 4 bytes per key (32 bits, 4 probes by double hashing: ~0.02 % false positives,
each costing one store read, never a wrong answer). False positives matter more than
their count suggests: a store read on the Trio thread gives the GIL up, and getting it
back from a busy poll or commit thread takes up to the interpreter's switch interval
(5 ms). With 2 probes (~0.4 %) the 1M-key build spent ~23 % of its Trio thread in those
reads; with 4 the probes cost the same for a key never added (the first clear bit ends
the check). It never forgets a key (a deleted key costs a store read that answers
"absent"). It grows with distinct keys (not writes) by adding a larger filter (four
times) when one is full.

Threads: the Trio thread only (like the :class:`~._partition.PartitionState` that holds it).
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["KeyFilter"]

#: Bits per key at capacity.
_BITS_PER_KEY = 32
# Multipliers whose products' middle bits spread hash() (ints hash to themselves).
_MIX = 0x9E3779B97F4A7C15  # 2**64 / golden ratio
_MIX2 = 0xC2B2AE3D27D4EB4F


class KeyFilter:
    """A Bloom filter of keys: ``key in filter`` is ``False`` only for a key never added."""

    __slots__ = ("_bits", "_full", "_mask", "_older", "_room")

    def __init__(self, capacity: int = 1 << 15) -> None:
        size = capacity * _BITS_PER_KEY  # a power of two when capacity is one
        self._bits = bytearray(size >> 3)
        self._mask = size - 1
        self._room = capacity
        self._full = capacity
        # Filled filters, newest first: (bits, mask).
        self._older: tuple[tuple[bytearray, int], ...] = ()

    def add(self, key: Hashable) -> None:
        """Add ``key``; a key the newest filter has already takes no room (the filter
        grows with distinct keys, not with writes)."""
        h = hash(key)
        one, two = (h * _MIX2) >> 32, ((h * _MIX) >> 29) | 1
        if _holds(self._bits, self._mask, one, two):
            return
        if not self._room:
            self._older = ((self._bits, self._mask), *self._older)
            self._full *= 4
            size = self._full * _BITS_PER_KEY
            self._bits = bytearray(size >> 3)
            self._mask = size - 1
            self._room = self._full
        self._room -= 1
        bits, mask = self._bits, self._mask
        for probe in range(4):  # the probes _holds checks
            bit = (one + probe * two) & mask
            bits[bit >> 3] |= 1 << (bit & 7)

    def __contains__(self, key: Hashable) -> bool:
        h = hash(key)
        one, two = (h * _MIX2) >> 32, ((h * _MIX) >> 29) | 1
        if _holds(self._bits, self._mask, one, two):
            return True
        return any(_holds(bits, mask, one, two) for bits, mask in self._older)


def _holds(bits: bytearray, mask: int, one: int, two: int) -> bool:
    """Whether all four probes ``one + i * two`` (``i`` = 0..3, double hashing) are set;
    stops at the first clear one (a key never added usually fails the first). Unrolled:
    :meth:`KeyFilter.add` sets the same four."""
    bit = one & mask
    if not bits[bit >> 3] >> (bit & 7) & 1:
        return False
    bit = (one + two) & mask
    if not bits[bit >> 3] >> (bit & 7) & 1:
        return False
    bit = (one + 2 * two) & mask
    if not bits[bit >> 3] >> (bit & 7) & 1:
        return False
    bit = (one + 3 * two) & mask
    return bool(bits[bit >> 3] >> (bit & 7) & 1)
