"""How table values are held: the tombstone marker and detached copies."""

from __future__ import annotations

import copy
from typing import Any

import attrs

__all__ = ["IMMUTABLE_TYPES", "TOMBSTONE", "detached"]

TOMBSTONE: Any = attrs.make_class("Tombstone", [], frozen=True)()
"""A deleted key in a layer above the store (the store itself just drops the key)."""

_IMMUTABLE = (int, float, str, bytes, bool, type(None), frozenset)
IMMUTABLE_TYPES: frozenset[type] = frozenset(_IMMUTABLE)
"""Exact types whose values :func:`detached` returns as they are."""


def detached(value: Any) -> Any:
    """A value the caller may mutate without changing the table."""
    if isinstance(value, _IMMUTABLE):
        return value
    if attrs.has(type(value)) and getattr(type(value), "__attrs_frozen__", False):
        return value
    if isinstance(value, tuple) and all(isinstance(v, _IMMUTABLE) for v in value):
        return value
    return copy.deepcopy(value)
