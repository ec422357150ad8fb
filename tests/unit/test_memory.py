"""Returning freed memory to the system after commit cycles (trio_tables._memory)."""

from __future__ import annotations

import platform

from trio_tables._memory import can_release_freed_memory, release_freed_memory


def test_glibc_gives_freed_memory_back_and_other_libcs_are_left_alone() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    assert can_release_freed_memory() == glibc
    garbage = [bytearray(1000) for _ in range(20_000)]  # C allocator blocks, freed now
    del garbage
    assert release_freed_memory() is glibc
