"""Settings carried in a broker URL: ``kafka://host:port?session_timeout_ms=6000&...``.

The query names :class:`~.kafka._transport.KafkaSettings` fields; their values are converted to
the field's type (a number, or text). Unknown names, values of the wrong type, fields that
take a mapping (``extra``, ``confluent_config``) and the servers themselves are rejected
with :class:`~trio_tables.errors.InvalidBrokerURL`, which names the settings a URL can
carry. ``memory://`` URLs carry no settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

import attrs

from ..errors import InvalidBrokerURL

__all__ = ["kafka_url", "split_kafka_url", "split_memory_url"]

# Fields a URL cannot set: the servers are the URL's host part; mappings have no text form.
_NOT_IN_URLS = {"bootstrap_servers", "extra", "confluent_config"}


def _converters() -> dict[str, Callable[[str], Any]]:
    """KafkaSettings field name -> how to read its value from text (by its default)."""
    from .kafka._transport import KafkaSettings  # kafka-python is imported for kafka:// URLs only

    converters: dict[str, Callable[[str], Any]] = {}
    for field in attrs.fields(KafkaSettings):
        if field.name in _NOT_IN_URLS:
            continue
        default = field.default
        if isinstance(default, bool):
            converters[field.name] = _boolean
        elif isinstance(default, int):
            converters[field.name] = int
        elif isinstance(default, float):
            converters[field.name] = float
        else:  # text, or None for optional text
            converters[field.name] = str
    return converters


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not true or false")


_KINDS: dict[Callable[[str], Any], str] = {
    int: "a whole number",
    float: "a number",
    _boolean: "true or false",
}


def split_kafka_url(url: str) -> tuple[str, dict[str, Any]]:
    """``kafka://SERVERS[?NAME=VALUE&...]`` -> (SERVERS, {NAME: converted VALUE}).

    Raises :class:`~trio_tables.errors.InvalidBrokerURL` for a URL without servers, an
    unknown or repeated name, a value that does not convert, or a setting no URL can
    carry; the message lists the names a URL can carry.
    """
    rest = url.partition("://")[2]
    servers, _, query = rest.partition("?")
    if not servers:
        raise InvalidBrokerURL(url, "no servers: use kafka://host:port[,host:port...]")
    if not query:
        return servers, {}
    converters = _converters()
    known = ", ".join(sorted(converters))
    settings: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidBrokerURL(
            url, f"its settings must read NAME=VALUE&NAME=VALUE; settings: {known}"
        ) from None
    for name, text in pairs:
        if name in settings:
            raise InvalidBrokerURL(url, f"setting {name!r} is given twice")
        convert = converters.get(name)
        if convert is None:
            raise InvalidBrokerURL(url, _unknown(name, converters, known))
        try:
            settings[name] = convert(text)
        except ValueError:
            kind = _KINDS.get(convert, "value")
            raise InvalidBrokerURL(url, f"setting {name}={text!r} is not {kind}") from None
    # Values the settings class itself checks (fetch_client's choices, ...).
    from .kafka._transport import KafkaSettings

    try:
        KafkaSettings(bootstrap_servers=servers, **settings)
    except (TypeError, ValueError) as exc:
        raise InvalidBrokerURL(url, str(exc)) from None
    return servers, settings


def _unknown(name: str, converters: Mapping[str, Any], known: str) -> str:
    if name in _NOT_IN_URLS:
        why = (
            "the servers are the URL's host part"
            if name == "bootstrap_servers"
            else "it is a mapping: pass it in transport_options"
        )
        return f"setting {name!r} cannot be given in a URL ({why}); a URL can carry: {known}"
    close = difflib.get_close_matches(name, list(converters), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown setting {name!r}{hint}; a URL can carry these KafkaSettings: {known}"


def split_memory_url(url: str) -> str:
    """``memory://[NAME]`` -> NAME (``"default"`` when empty); no settings allowed."""
    name = url.partition("://")[2]
    if "?" in name:
        raise InvalidBrokerURL(
            url,
            "memory:// URLs carry no settings (pass the in-process broker's options in "
            "transport_options)",
        )
    return name or "default"


def kafka_url(servers: str, settings: Mapping[str, Any]) -> str:
    """The URL carrying ``settings`` (the reverse of :func:`split_kafka_url`)."""
    if not settings:
        return f"kafka://{servers}"
    query = "&".join(f"{name}={quote(str(value))}" for name, value in settings.items())
    return f"kafka://{servers}?{query}"
