from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_tables._codecs import (
    CodecError,
    JsonCodec,
    PickleCodec,
    RawCodec,
    check_encodable,
    check_type,
    record_decoder,
    resolve_codec,
)


@attrs.frozen
class Point:
    x: int
    y: int


@attrs.frozen
class Segment:
    start: Point
    end: Point
    label: str = ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trip(value: Any) -> None:
    codec = JsonCodec()
    assert codec.decode(codec.encode(value)) == value


@given(st.binary())
def test_raw_round_trip(value: bytes) -> None:
    assert RawCodec().decode(RawCodec().encode(value)) == value


def test_attrs_classes_round_trip_with_nesting() -> None:
    codec = JsonCodec(Segment)
    segment = Segment(Point(1, 2), Point(3, 4), "a")
    assert codec.encode(segment) == b'{"start":{"x":1,"y":2},"end":{"x":3,"y":4},"label":"a"}'
    assert codec.decode(codec.encode(segment)) == segment


@pytest.mark.parametrize(
    ("type_", "bad"),
    [(int, "1"), (int, True), (str, 1), (Point, {"x": 1, "y": 2}), (float, "x")],
)
def test_wrong_type_is_a_type_error_at_encode(type_: type, bad: Any) -> None:
    with pytest.raises(TypeError, match="expected"):
        JsonCodec(type_).encode(bad)


def test_int_is_accepted_as_float() -> None:
    assert JsonCodec(float).decode(JsonCodec(float).encode(3)) == 3.0


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (JsonCodec(), b"{not json"),
        (JsonCodec(int), b'"text"'),
        (JsonCodec(Point), b"[1, 2]"),
        (JsonCodec(Point), b'{"x": 1}'),
        (RawCodec(str), b"\xff\xfe"),
        (PickleCodec(), b"not a pickle"),
    ],
)
def test_undecodable_bytes_raise_codec_error(codec: Any, data: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(data)


def test_resolve_codec_defaults_and_names() -> None:
    assert resolve_codec(None, str, default="raw") == RawCodec(str)
    assert resolve_codec(None, int, default="json") == JsonCodec(int)
    assert resolve_codec(None, bytes, default="json") == RawCodec(bytes)
    assert resolve_codec("pickle", None, default="json") == PickleCodec(None)
    custom = JsonCodec(Point)
    assert resolve_codec(custom, None, default="raw") is custom
    with pytest.raises(ValueError, match="unknown serializer 'yaml'"):
        resolve_codec("yaml", None, default="json")


def _verdict(action: Any) -> str:
    try:
        action()
    except TypeError:
        return "TypeError"
    return "ok"


@given(
    st.sampled_from([None, str, int, float, bool, bytes, dict, list]),
    json_values | st.floats() | st.binary() | st.sets(st.integers(), max_size=3),
)
def test_check_encodable_agrees_with_encode(type_: type | None, value: Any) -> None:
    # The write-time check skips encoding for JSON scalars: same verdict as encode().
    for codec in (JsonCodec(type_), RawCodec(type_), PickleCodec()):
        assert _verdict(lambda c=codec: check_encodable(c, value)) == _verdict(
            lambda c=codec: c.encode(value)
        ), (codec, value)


def test_check_encodable_rejects_bool_for_int_and_accepts_int_for_float() -> None:
    with pytest.raises(TypeError, match="expected int, got bool"):
        check_encodable(JsonCodec(int), True)
    check_encodable(JsonCodec(float), 3)


def _decoded(codec: JsonCodec, data: bytes) -> Any:
    try:
        return ("ok", codec.decode(data))
    except CodecError:
        return ("error", None)


def _decoded_slowly(codec: JsonCodec, data: bytes) -> Any:
    # What decode() did before its fast paths: json.loads, then the type check.
    try:
        value = json.loads(data)
    except (ValueError, TypeError):
        return ("error", None)
    if codec.type is float and isinstance(value, int):
        value = float(value)
    try:
        check_type(value, codec.type)
    except TypeError:
        return ("error", None)
    return ("ok", value)


@given(
    st.sampled_from([None, str, int, float, bool]),
    st.one_of(
        st.text().map(lambda t: json.dumps(t, ensure_ascii=False).encode()),
        st.integers().map(lambda i: str(i).encode()),
        st.binary(max_size=12),
        st.from_regex(rb'\A"[^"\\]{0,6}"\Z'),
        st.from_regex(rb"\A-?[0-9]{1,4}\Z"),
    ),
)
def test_json_decode_fast_paths_agree_with_json_loads(type_: type | None, data: bytes) -> None:
    codec = JsonCodec(type_)
    got, want = _decoded(codec, data), _decoded_slowly(codec, data)
    assert got == want, data
    assert type(got[1]) is type(want[1]), data


def _encoded(action: Any) -> Any:
    try:
        return ("ok", action())
    except TypeError:
        return ("TypeError", None)


@given(
    st.sampled_from([None, str, int, float, bool]),
    st.one_of(st.text(), st.integers(), st.booleans(), st.floats(allow_nan=False)),
)
def test_json_encode_fast_paths_agree_with_json_dumps(type_: type | None, value: Any) -> None:
    codec = JsonCodec(type_)

    def slowly() -> bytes:
        # What encode() did before its fast paths.
        check_type(value, type_)
        return json.dumps(value, separators=(",", ":")).encode()

    assert _encoded(lambda: codec.encode(value)) == _encoded(slowly), value


@pytest.mark.parametrize(
    "codec",
    [RawCodec(), RawCodec(str), RawCodec(int), JsonCodec(), JsonCodec(str), PickleCodec()],
    ids=repr,
)
@pytest.mark.parametrize("data", [b"12", b'"text"', b"\xff\xfe", b""])
def test_the_per_event_decoder_decodes_as_the_codec_does(codec: Any, data: bytes) -> None:
    """Streams decode keys and values with ``record_decoder(codec)``: the same value, or
    the same CodecError, as ``codec.decode`` (``None``: the bytes as they are)."""
    decoder = record_decoder(codec)
    if decoder is None:
        assert codec.decode(data) == data
        return
    try:
        expected = codec.decode(data)
    except CodecError:
        with pytest.raises(CodecError):
            decoder(data)
        return
    assert decoder(data) == expected
