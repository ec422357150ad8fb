"""librdkafka's errors as trio_tables' typed errors.

confluent-kafka reports a failure as a ``KafkaException`` carrying a ``KafkaError``
(raised by a call: ``get_watermark_offsets``, ``position``, ``assign``...), or as a
``KafkaError`` (not an exception) in a consumed message. Neither may reach the library's callers:
:func:`translate_error` maps one to

* :class:`~trio_tables.errors.UnknownTopic` for an unknown topic or partition;
* :class:`~trio_tables.errors.KafkaClientError` with ``retriable=True`` when the broker
  is away or busy (librdkafka's retriable flag, transport failures, timeouts, all brokers
  down): :class:`~._retry.RetryPolicy` retries it exactly as it retries kafka-python's
  retriable errors, then raises :class:`~trio_tables.errors.BrokerUnavailable`;
* :class:`~trio_tables.errors.KafkaClientError` with ``retriable=False`` otherwise
  (authentication, authorisation, configuration, fatal errors), with what to do.

:func:`librdkafka_call` wraps a function that calls librdkafka; it is the only way
trio_tables calls it (the fetcher's methods carry it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from confluent_kafka import KafkaError, KafkaException

from ...errors import KafkaClientError, UnknownTopic

__all__ = ["librdkafka_call", "translate", "translate_error"]

P = ParamSpec("P")
T = TypeVar("T")

_UNKNOWN = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
)
#: "The broker is away or slow": librdkafka does not flag all of these retriable.
_BROKER_AWAY = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)
_AUTH = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


def _hint(code: int, retriable: bool) -> str:
    if retriable:
        return "The broker is unreachable or busy: the call is retried for reconnect_timeout"
    if code in _AUTH:
        return (
            "Check the security settings (security_protocol, sasl_*, ssl_*): they reach "
            "both kafka-python and librdkafka, and the principal's ACLs"
        )
    if code == KafkaError._INVALID_ARG:
        return "Check confluent_config (librdkafka settings) and the transport options"
    return (
        "librdkafka cannot go on with this client; if a restart does not help, try "
        'fetch_client="kafka-python" and report the error'
    )


def translate_error(error: Any, operation: str, *, topic: str | None = None) -> Exception:
    """The typed error for one librdkafka ``KafkaError`` (from a call or a message)."""
    code = int(error.code())
    if code in _UNKNOWN:
        return UnknownTopic(topic or error.str())
    retriable = (bool(error.retriable()) or code in _BROKER_AWAY) and not error.fatal()
    return KafkaClientError(
        client="librdkafka",
        operation=operation,
        code=code,
        name=str(error.name()),
        detail=str(error.str()),
        retriable=retriable,
        hint=_hint(code, retriable),
    )


def translate(exc: BaseException, operation: str) -> BaseException:
    """``exc`` as a typed error if librdkafka raised it, else ``exc`` itself."""
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError):
            return translate_error(error, operation)
        return KafkaClientError(
            client="librdkafka",
            operation=operation,
            code=-1,
            name="KafkaException",
            detail=str(exc),
            retriable=False,
            hint=_hint(-1, False),
        )
    return exc


def librdkafka_call(operation: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a function that calls librdkafka: what it raises from librdkafka is
    raised as the typed error (:func:`translate`), chained to the original."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except KafkaException as exc:
                raise translate(exc, operation) from exc

        return call

    return decorate
