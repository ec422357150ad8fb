"""Key and value serializers.

A :class:`Codec` turns Python values into bytes and back, and checks a value's type at
write time (a wrong type raises ``TypeError`` where it is written, before anything is
sent). Defaults follow Faust: source keys raw bytes (text when ``key_type=str``), source
values JSON, changelog keys and values JSON. ``"pickle"`` is opt-in only.

Types understood by the built-in codecs: ``str``, ``bytes``, ``int``, ``float``,
``bool``, ``dict``, ``list`` and attrs classes (encoded as JSON objects of their fields,
rebuilt on decode, nested attrs fields included); table keys also tuples (JSON arrays
decode as tuples for keys). Tables refuse at the write what would not come back equal
(see ``trio_tables/_table/_checks.py``).
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import attrs

from .errors import TrioTablesError

__all__ = [
    "Codec",
    "CodecError",
    "JsonCodec",
    "PickleCodec",
    "RawCodec",
    "record_decoder",
    "resolve_codec",
]


class CodecError(TrioTablesError, ValueError):
    """Bytes that a codec cannot decode, or a value it cannot encode."""


@runtime_checkable
class Codec(Protocol):
    """Turns values of one type into bytes and back."""

    def encode(self, value: Any) -> bytes:
        """Bytes for ``value``; ``TypeError`` if ``value`` is not of the codec's type."""
        ...

    def decode(self, data: bytes) -> Any:
        """The value for ``data``; :class:`CodecError` if ``data`` is not decodable."""
        ...


def _type_name(type_: type | None) -> str:
    return "any JSON value" if type_ is None else type_.__qualname__


def check_type(value: Any, type_: type | None) -> None:
    """``TypeError`` unless ``value`` is a ``type_`` (``None`` accepts anything).

    ``int`` is accepted where ``float`` is expected; ``bool`` is not accepted for ``int``.
    """
    if type_ is None:
        return
    # True is an int to Python, not to a table of counts.
    is_bool_for_number = isinstance(value, bool) and type_ in (int, float)
    if not is_bool_for_number and (
        isinstance(value, type_) or (type_ is float and isinstance(value, int))
    ):
        return
    raise TypeError(f"expected {_type_name(type_)}, got {type(value).__qualname__}: {value!r}")


def _to_jsonable(value: Any) -> Any:
    if attrs.has(type(value)):
        return {
            field.name: _to_jsonable(getattr(value, field.name))
            for field in attrs.fields(type(value))
        }
    if isinstance(value, (set, frozenset)):
        return sorted(_to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    return value


def _from_jsonable(data: Any, type_: Any) -> Any:
    if isinstance(type_, type) and attrs.has(type_):
        if not isinstance(data, dict):
            raise CodecError(f"expected a JSON object for {type_.__qualname__}, got {data!r}")
        fields = attrs.fields_dict(attrs.resolve_types(type_))
        try:
            return type_(
                **{
                    name: _from_jsonable(value, fields[name].type if name in fields else None)
                    for name, value in data.items()
                }
            )
        except TypeError as exc:
            raise CodecError(f"cannot build {type_.__qualname__} from {data!r}: {exc}") from exc
    return data


# What json.dumps does with a str (ensure_ascii, the default): the C encoder.
_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii

_PLAIN_JSON_STRING = re.compile(rb'"[^"\\\x00-\x1f]*"')
_JSON_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")

# Values of these exact types always encode as JSON: checking their type is enough.
_JSON_SCALARS = frozenset({str, int, float, bool})


def check_encodable(codec: Codec, value: Any) -> None:
    """``TypeError`` if ``codec`` cannot encode ``value`` (what a table checks on every
    write). Same verdict as ``codec.encode(value)``, without encoding when the answer is
    known from the type alone: a JSON scalar of the codec's exact type (per-event cost)."""
    if (
        type(value) in _JSON_SCALARS
        and type(codec) is JsonCodec
        and (codec.type is None or type(value) is codec.type)
    ):
        return
    codec.encode(value)


def trivially_encodable(codec: Codec) -> frozenset[type]:
    """The exact types whose values :func:`check_encodable` accepts for ``codec`` from
    the type alone (empty when every value must be checked): lets a hot path skip the
    call with ``type(value) in ...``, same verdict."""
    if type(codec) is JsonCodec:
        if codec.type is None:
            return _JSON_SCALARS
        if codec.type in _JSON_SCALARS:
            return frozenset({codec.type})
    return frozenset()


def _tuples(data: Any) -> Any:
    """``data`` with every JSON array turned into a tuple (nested too)."""
    if isinstance(data, list):
        return tuple(_tuples(item) for item in data)
    if isinstance(data, dict):
        return {key: _tuples(value) for key, value in data.items()}
    return data


@attrs.frozen
class JsonCodec:
    """Compact JSON (UTF-8). Decoding checks the type when one is given.

    ``tuples=True`` (the codec of table keys) decodes JSON arrays as tuples, nested
    too, as Faust does for keys: a tuple key is written as an array and must come
    back hashable and equal."""

    type: type | None = None
    tuples: bool = attrs.field(default=False, kw_only=True)

    def encode(self, value: Any) -> bytes:
        # Fast paths for what tables store most (every changelog record and store write
        # encodes): a str, an int (not a bool). Same bytes as json.dumps.
        kind = type(value)
        if kind is str and (self.type is str or self.type is None):
            return _json_string(value).encode()
        if kind is int and (self.type is int or self.type is None or self.type is float):
            return b"%d" % value
        check_type(value, self.type)
        try:
            return json.dumps(_to_jsonable(value), separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"value {value!r} cannot be encoded as JSON: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        # Fast paths for what tables store most (recovery decodes every changelog
        # record): a JSON string without escapes, a JSON integer. Same result as
        # json.loads; anything else takes the general path.
        if (self.type is str or self.type is None) and _PLAIN_JSON_STRING.fullmatch(data):
            try:
                return bytes(data[1:-1]).decode()
            except UnicodeDecodeError:
                pass  # json.loads reports it
        if (self.type is int or self.type is None) and _JSON_INTEGER.fullmatch(data):
            return int(data)
        try:
            decoded = json.loads(data)
        except (ValueError, TypeError) as exc:
            raise CodecError(f"not valid JSON: {bytes(data)[:80]!r}") from exc
        if self.tuples:
            decoded = _tuples(decoded)
        value = _from_jsonable(decoded, self.type)
        if self.type is float and isinstance(value, int):
            value = float(value)
        try:
            check_type(value, self.type)
        except TypeError as exc:
            raise CodecError(str(exc)) from None
        return value


@attrs.frozen
class RawCodec:
    """Bytes as they are; ``str`` values as UTF-8 (decoded back to ``str`` when the type
    is ``str``)."""

    type: type | None = None

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode()
        raise TypeError(f"raw codec needs bytes or str, got {type(value).__qualname__}")

    def decode(self, data: bytes) -> Any:
        if self.type is str:
            try:
                return bytes(data).decode()
            except UnicodeDecodeError as exc:
                raise CodecError(f"not UTF-8 text: {bytes(data)[:80]!r}") from exc
        if self.type is int:
            try:
                return int(data)
            except ValueError as exc:
                raise CodecError(f"not an integer: {bytes(data)[:80]!r}") from exc
        return bytes(data)


@attrs.frozen
class PickleCodec:
    """Python pickle. Opt-in only: never unpickle data you do not trust."""

    type: type | None = None

    def encode(self, value: Any) -> bytes:
        check_type(value, self.type)
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise CodecError(f"not a pickle: {bytes(data)[:80]!r}") from exc


def _utf8(data: bytes) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"not UTF-8 text: {bytes(data)[:80]!r}") from exc


def record_decoder(codec: Codec) -> Callable[[bytes], Any] | None:
    """What decodes a record's key or value for ``codec`` on the per-event path:
    ``None`` when ``codec.decode`` returns the bytes as they are (raw, no type), a
    cheaper function with the same results and errors (raw text), else
    ``codec.decode``."""
    if type(codec) is RawCodec:
        if codec.type is None:
            return None
        if codec.type is str:
            return _utf8
    return codec.decode


_BY_NAME: dict[str, Callable[[type | None], Codec]] = {
    "json": JsonCodec,
    "raw": RawCodec,
    "pickle": PickleCodec,
}


def resolve_codec(
    serializer: str | Codec | None, type_: type | None, *, default: str, keys: bool = False
) -> Codec:
    """The codec for a ``serializer`` setting and a ``key_type``/``value_type``.

    ``serializer`` is a name (``"json"``, ``"raw"``, ``"pickle"``), a codec object, or
    ``None`` for ``default``. A ``bytes`` type with the default JSON serializer means raw.
    ``keys=True``: the codec of table keys (JSON arrays decode as tuples).
    """
    if serializer is not None and not isinstance(serializer, str):
        if not isinstance(serializer, Codec):
            raise TypeError(f"serializer {serializer!r} has no encode()/decode()")
        return serializer
    name = serializer or default
    if name == "json" and type_ is bytes and serializer is None:
        name = "raw"
    try:
        factory = _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown serializer {name!r}: use one of {sorted(_BY_NAME)} or a codec object"
        ) from None
    if factory is JsonCodec:
        return JsonCodec(type_, tuples=keys)
    return factory(type_)
