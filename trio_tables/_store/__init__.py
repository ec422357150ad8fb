"""Local stores of table data: ``memory://`` and ``sqlite://PATH``."""

from __future__ import annotations

from pathlib import Path

from .._codecs import Codec
from ._base import Store
from ._memory import MemoryStore

__all__ = ["MemoryStore", "Store", "open_store"]


def open_store(url: str, *, name: str, key_codec: Codec, value_codec: Codec) -> Store:
    """The store for table ``name`` at ``url``.

    ``memory://``: kept in this process only, rebuilt from the changelog at every start.
    ``sqlite://PATH``: one SQLite database file per table under the directory ``PATH``
    (created if missing), ``PATH/<name>.sqlite``; survives restarts, so a restart replays
    only the changelog written after the last commit.
    """
    scheme, sep, rest = url.partition("://")
    if scheme == "memory" and sep:
        return MemoryStore()
    if scheme == "sqlite" and sep and rest:
        from ._sqlite import SqliteStore

        directory = Path(rest)
        directory.mkdir(parents=True, exist_ok=True)
        return SqliteStore(directory / f"{name}.sqlite", key_codec, value_codec)
    raise ValueError(f"unsupported store URL {url!r}: use 'memory://' or 'sqlite://DIRECTORY'")
