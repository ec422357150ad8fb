"""Write-time checks of table keys and values: what a table accepts comes back equal
from its changelog, and what it refuses is refused at the write with a typed error
(:class:`~trio_tables.errors.TableKeyTypeError` /
:class:`~trio_tables.errors.TableValueTypeError`) naming the table, the key or value,
the expected type and the fix.

Tables call these only for types their codec does not accept on sight (a JSON scalar
of the codec's type needs no check: the per-event path). The built-in JSON and raw
codecs (and a SetTable's) are checked by a round trip: encode, decode, compare. Pickle
and codec objects given by the user are trusted to round-trip: only their encode runs.
"""

from __future__ import annotations

import math
from typing import Any

from .._codecs import Codec, CodecError, JsonCodec, RawCodec, check_encodable
from ..errors import TableKeyTypeError, TableValueTypeError
from ._protocols import TableCore

__all__ = ["check_key", "check_value", "partition_key_error"]

# Tuples of these (nested too) are JSON keys that always come back equal.
_KEY_ATOMS = frozenset({str, int, bool, type(None)})


def _plain_tuple(key: tuple[Any, ...]) -> bool:
    for item in key:
        kind = type(item)
        if kind in _KEY_ATOMS:
            continue
        if kind is float and not math.isnan(item):
            continue
        if kind is tuple and _plain_tuple(item):
            continue
        return False
    return True


# Exact types of JSON values that always come back equal.
_JSON_ATOMS = frozenset({str, int, float, bool, type(None)})
_MAX_DEPTH = 64  # deeper (or circular) values take the full check


def _plain_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is made of JSON atoms, lists and str-keyed dicts only (exact
    types): such a value comes back equal from JSON, no need to encode it to know."""
    kind = type(value)
    if kind in _JSON_ATOMS:
        return True
    if depth > _MAX_DEPTH:
        return False
    if kind is list:
        return all(_plain_json(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and _plain_json(v, depth + 1) for k, v in value.items())
    return False


def _has_nan(key: Any) -> bool:
    if isinstance(key, float):
        return math.isnan(key)
    if isinstance(key, (tuple, frozenset)):
        return any(_has_nan(item) for item in key)
    return False


def _same(a: Any, b: Any) -> bool:
    """``a == b``, where NaN equals NaN (a NaN value comes back as a NaN)."""
    if a == b:
        return True
    if isinstance(a, float) and isinstance(b, float):
        return math.isnan(a) and math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return False


def _compared(codec: Codec) -> bool:
    """Whether ``codec``'s round trip is checked: the built-in JSON and raw codecs, and
    a SetTable's codec over one of them (its ``members``)."""
    members = getattr(codec, "members", None)
    if members is not None:
        return _compared(members)
    return type(codec) in (JsonCodec, RawCodec)


def _expected(codec: Codec, what: str) -> str:
    type_ = getattr(codec, "type", None)
    if type_ is not None:
        return f"{type_.__qualname__} (the table's {what}_type)"
    if isinstance(codec, JsonCodec):
        if what == "key":
            return "a JSON key: str, int, float (not NaN), bool, None, or a tuple of them"
        return (
            "a JSON value: str, int, float, bool, None, list, dict with str keys, "
            "an attrs instance with value_type set"
        )
    if isinstance(codec, RawCodec):
        return "bytes (or str with key_type=str / value_type=str)"
    return f"what the {what} codec {type(codec).__qualname__} encodes"


def _why_lossy(value: Any, back: Any) -> str:
    """Why ``value`` came back as ``back`` (what to say in the error)."""
    if isinstance(value, list) and isinstance(back, tuple):
        return "is a list, which is not hashable and cannot be a key"
    if isinstance(value, (set, frozenset, tuple)) and isinstance(back, (list, tuple)):
        return f"is written as a JSON array and would come back as {back!r}"
    if isinstance(value, dict) and any(not isinstance(k, str) for k in value):
        return f"has non-str keys; JSON object keys are strings: it would come back as {back!r}"
    return f"would come back from the changelog as {back!r}"


def _problem(codec: Codec, value: Any) -> tuple[str, str] | None:
    """``None`` if ``value`` round-trips through ``codec``, else ``(problem, kind)``
    with kind ``"type"`` (wrong type), ``"encode"`` (not encodable) or ``"lossy"``
    (would come back different)."""
    if (
        type(codec) is JsonCodec
        and codec.type in (None, list, dict)
        and (codec.type is None or type(value) is codec.type)
        and _plain_json(value)
    ):
        return None  # the common case of lists and dicts, without encoding
    try:
        if not _compared(codec):
            check_encodable(codec, value)
            return None
        data = codec.encode(value)
    except (TypeError, ValueError) as exc:
        type_ = getattr(codec, "type", None)
        if type_ is not None and not isinstance(value, type_):
            return "", "type"
        return f"cannot be encoded ({exc})", "encode"
    try:
        back = codec.decode(data)
    except (CodecError, TypeError, ValueError) as exc:
        return f"would not decode from the changelog ({exc})", "lossy"
    if _same(back, value):
        return None
    return _why_lossy(value, back), "lossy"


def _fix(codec: Codec, what: str, kind: str, value: Any) -> str:
    serializer = f"{what}_serializer"
    if kind == "type":
        return f"write a value of the {what}_type, or change {what}_type="
    if isinstance(codec, RawCodec) and isinstance(value, str):
        return f"create the table with {what}_type=str (raw bytes come back as bytes)"
    if what == "key" and isinstance(value, list):
        return "use a tuple as the key"
    if what == "value" and isinstance(value, (tuple, set, frozenset)):
        return (
            f"store a list (and convert when reading), or create the table with "
            f'{serializer}="pickle"'
        )
    if what == "value" and isinstance(value, dict):
        return f'use str keys, or create the table with {serializer}="pickle"'
    return (
        f"convert it to a JSON type, set {what}_type= to its attrs class, or create the "
        f'table with {serializer}="pickle" (or a codec object)'
    )


def check_key(table: TableCore, key: Any) -> None:
    """:class:`~trio_tables.errors.TableKeyTypeError` unless ``key`` can be written to
    ``table`` and comes back equal (and hashable) from its changelog."""
    codec = table.key_codec
    if table._windowing is not None:  # a WindowedKeyCodec: (key, window start) pairs
        if not (isinstance(key, tuple) and len(key) == 2 and type(key[1]) is int):
            # Internal: windowed tables store (key, window start) pairs.
            codec.encode(key)
        inner: Codec = codec.inner  # type: ignore[attr-defined]
        if type(key[0]) in codec.plain:  # type: ignore[attr-defined]
            return
        key, codec = key[0], inner
    if (
        type(key) is tuple
        and type(codec) is JsonCodec
        and codec.tuples
        and codec.type in (None, tuple)
        and _plain_tuple(key)
    ):
        return
    if _has_nan(key):
        raise TableKeyTypeError(
            table.name,
            key,
            expected=_expected(codec, "key"),
            problem="is or holds NaN, which is not equal to itself: it could never be "
            "read back",
            fix="use another key",
        )
    problem = _problem(codec, key)
    if problem is None:
        try:
            hash(key)
        except TypeError:
            problem = ("is not hashable", "lossy")
    if problem is not None:
        raise TableKeyTypeError(
            table.name,
            key,
            expected=_expected(codec, "key"),
            problem=problem[0],
            fix=_fix(codec, "key", problem[1], key),
        )


def check_value(table: TableCore, value: Any) -> None:
    """:class:`~trio_tables.errors.TableValueTypeError` unless ``value`` can be written
    to ``table`` and comes back equal from its changelog."""
    codec = table.value_codec
    problem = _problem(codec, value)
    if problem is not None:
        raise TableValueTypeError(
            table.name,
            value,
            expected=_expected(codec, "value"),
            problem=problem[0],
            fix=_fix(codec, "value", problem[1], value),
        )


def partition_key_error(table: TableCore, key: Any, exc: Exception) -> TableKeyTypeError:
    """The error for a key that cannot be hashed to a partition."""
    return TableKeyTypeError(
        table.name,
        key,
        expected="a str, bytes or JSON-encodable key",
        problem=f"cannot be encoded to choose its partition ({exc})",
        fix="use a str, int or tuple key",
    )
