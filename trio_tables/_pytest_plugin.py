"""The pytest side of :mod:`trio_tables.testing` (imported there only when pytest is
installed, so the broker launcher does not need pytest)."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from ._embedded import EmbeddedBroker, embedded_broker

__all__ = ["kafka_broker", "pytest_configure", "unique_name"]

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
