"""Issue 13 points 1 and 10: what a table write accepts comes back equal from the
changelog (recovery), and what it refuses is refused at the write with a typed error
that names the table, key or value, the expected and actual type and the fix."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_tables
from trio_tables import TableManager
from trio_tables.errors import TableKeyTypeError, TableTypeError, TableValueTypeError

SERIALIZERS = [None, "json", "raw", "pickle"]  # default codecs and every named one


def _url() -> str:
    return f"memory://rt-{uuid.uuid4().hex[:12]}"


async def _source(url: str) -> None:
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", 1, exist_ok=True)


async def _run(
    url: str, body: Callable[[trio_tables.Table], None], **table_options: Any
) -> dict[Any, Any]:
    """Start a worker owning the one source partition, run ``body(table)`` writing to
    partition 0, stop cleanly (commit), and return the table's content."""
    async with TableManager("rt", broker=url) as manager:
        table = manager.Table("t", **table_options)
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0):
                body(table)
            content = table.as_dict()
    return content


async def _written_and_recovered(
    url: str, body: Callable[[trio_tables.Table], None], **table_options: Any
) -> tuple[dict[Any, Any], dict[Any, Any]]:
    await _source(url)
    written = await _run(url, body, **table_options)
    recovered = await _run(url, lambda table: None, **table_options)
    return written, recovered


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down; NaN equals NaN (a set that is not
    equal is matched member by member, so a NaN member, however deep, compares too)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (set, frozenset)):
        if a == b:
            return True
        # Reprs would not do: a set's repr follows its iteration order, which differs
        # between a set and its decoded copy when members collide.
        unmatched = list(b)
        for x in a:
            match = next((i for i, y in enumerate(unmatched) if _same(x, y)), None)
            if match is None:
                return False
            del unmatched[match]
        return not unmatched
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- the everyday cases, each a bug seen before ---------------------------------------


async def test_tuple_keys_restore_as_tuples_nested_too() -> None:
    """`table[(user, page)] += 1` was accepted, then the next recovery failed with
    `TypeError: unhashable type: 'list'` and the worker stopped."""

    def body(table: trio_tables.Table) -> None:
        table[("alice", "/home")] += 1
        table[("alice", "/home")] += 1
        table[("bob", ("nested", 1), None)] += 1

    written, recovered = await _written_and_recovered(_url(), body, default=int)
    assert written == {("alice", "/home"): 2, ("bob", ("nested", 1), None): 1}
    assert recovered == written
    assert all(type(key) is tuple for key in recovered)
    assert ("nested", 1) in [key[1] for key in recovered]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({1, 2}, "JSON array"),
        ((1, 2), "JSON array"),
        ({1: "one"}, "non-str keys"),
        ({"a": (1, 2)}, "come back"),
        (frozenset({"x"}), "JSON array"),
    ],
)
async def test_values_json_would_change_are_refused_with_the_fix(value: Any, why: str) -> None:
    await _source(url := _url())
    async with TableManager("rt", broker=url) as manager:
        table = manager.Table("values")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0), pytest.raises(TableValueTypeError) as raised:
                table["k"] = value
            assert table.as_dict() == {}  # nothing reached the table
    error = raised.value
    assert isinstance(error, TypeError)
    assert error.table == "values"
    assert error.value == value
    message = str(error)
    assert "'values'" in message
    assert "bad value" in message
    assert why in message
    assert 'value_serializer="pickle"' in message


async def test_the_same_values_round_trip_with_pickle() -> None:
    values = {"set": {1, 2}, "tuple": (1, 2), "int keys": {1: "one"}, "nested": {"a": (1, 2)}}

    def body(table: trio_tables.Table) -> None:
        for key, value in values.items():
            table[key] = value

    written, recovered = await _written_and_recovered(_url(), body, value_serializer="pickle")
    assert _same(written, values)
    assert _same(recovered, values)


async def test_a_list_key_is_refused_as_a_key_not_as_a_value() -> None:
    await _source(url := _url())
    async with TableManager("rt", broker=url) as manager:
        table = manager.Table("t", default=int)
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0), pytest.raises(TableKeyTypeError) as raised:
                table[["a", "b"]] = 1
    message = str(raised.value)
    assert "bad key ['a', 'b']" in message
    assert "got list" in message
    assert "use a tuple as the key" in message
    assert "value" not in message  # not reported as a bad "value"


@attrs.frozen
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("options", "key", "value", "error", "expected", "actual", "fix"),
    [
        ({"key_type": str, "value_type": int}, 5, 1, TableKeyTypeError, "a str", "int", "key_type"),
        ({"key_type": str, "value_type": int}, "k", "1", TableValueTypeError, "an int", "str",
         "value_type"),
        ({"key_type": str, "value_type": int}, "k", True, TableValueTypeError, "an int", "bool",
         "value_type"),
        ({"value_type": Point}, "k", {"x": 1}, TableValueTypeError, "Point", "dict",
         "value_type"),
        ({}, "k", object(), TableValueTypeError, "JSON value", "object", "pickle"),
        ({"value_serializer": "raw"}, "k", "text", TableValueTypeError, "bytes", "str",
         "value_type=str"),
        ({}, float("nan"), 1, TableKeyTypeError, "JSON key", "float", "another key"),
    ],
)
async def test_wrong_types_name_themselves(
    options: dict[str, Any],
    key: Any,
    value: Any,
    error: type[TableTypeError],
    expected: str,
    actual: str,
    fix: str,
) -> None:
    await _source(url := _url())
    async with TableManager("rt", broker=url) as manager:
        table = manager.Table("typed", **options)
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0), pytest.raises(error) as raised:
                table[key] = value
    problem = raised.value
    assert isinstance(problem, TypeError)
    assert (problem.table, problem.actual) == ("typed", actual)
    assert problem.what in str(problem)
    assert "'typed'" in str(problem)
    assert expected.split()[-1] in problem.expected
    assert fix in problem.fix


async def test_attrs_values_and_keys_round_trip_with_their_types() -> None:
    def body(table: trio_tables.Table) -> None:
        table[Point(1, 2)] = Point(3, 4)

    written, recovered = await _written_and_recovered(
        _url(), body, key_type=Point, value_type=Point
    )
    assert written == recovered == {Point(1, 2): Point(3, 4)}


# -- the property ----------------------------------------------------------------------

_atoms = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
_hashable = st.recursive(
    _atoms | st.binary(max_size=4),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=5,
)
_keys = st.recursive(
    _hashable,
    lambda inner: st.lists(inner, max_size=2) | st.tuples(inner, inner),
    max_leaves=5,
)
_values = st.recursive(
    _atoms | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
        | st.sets(_hashable, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(writes=st.lists(st.tuples(_keys, _values), max_size=6))
async def test_every_accepted_write_is_recovered_equal(
    serializer: str | None, writes: Sequence[tuple[Any, Any]]
) -> None:
    """For every key and value a write accepts, with the default codecs and with each
    named serializer, the recovered table holds an equal key and value; every refused
    write is refused with a TableTypeError (nothing else), and changes nothing."""
    expected: dict[Any, Any] = {}
    refused: list[BaseException] = []

    def body(table: trio_tables.Table) -> None:
        for key, value in writes:
            try:
                table[key] = value
            except TableTypeError as exc:
                refused.append(exc)
            else:
                if value is None:
                    expected.pop(key, None)
                else:
                    expected[key] = value

    options = {"key_serializer": serializer, "value_serializer": serializer}
    written, recovered = await _written_and_recovered(_url(), body, **options)
    for content in (written, recovered):
        assert len(content) == len(expected)
        for key, value in expected.items():
            assert key in content
            assert _same(content[key], value), (key, content[key], value)
    assert all(isinstance(exc, TypeError) for exc in refused)


async def test_the_property_is_not_vacuous() -> None:
    """The strategies above reach both verdicts for JSON: most writes are accepted,
    some refused (tuples, sets, int-keyed dicts as values; lists as keys)."""
    await _source(url := _url())
    async with TableManager("rt", broker=url) as manager:
        table = manager.Table("t")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0):
                table[("a", 1)] = [1, {"b": None}]
                with pytest.raises(TableTypeError):
                    table["k"] = {1, 2}
            assert table.as_dict() == {("a", 1): [1, {"b": None}]}
        await trio.lowlevel.checkpoint()
