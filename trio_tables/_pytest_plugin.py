"""The pytest side of :mod:`trio_tables.testing` (imported there only when pytest is
installed, so the broker launcher and the helpers do not need pytest)."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from ._embedded import EmbeddedBroker, embedded_broker
from ._manager import TableManager
from ._testing import fresh_memory_url, open_test_manager
from ._transport.memory._transport import reset_memory_broker

__all__ = [
    "kafka_broker",
    "kafka_manager",
    "kafka_url",
    "memory_manager",
    "memory_url",
    "pytest_configure",
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
def kafka_url(kafka_broker: EmbeddedBroker) -> str:
    """The URL of the session's embedded broker, ``kafka://127.0.0.1:PORT``."""
    return kafka_broker.url


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A new in-process broker for this test, ``memory://test-<random>`` (emptied when
    the test ends)."""
    url = fresh_memory_url()
    yield url
    reset_memory_broker(url.removeprefix("memory://"))


@pytest.fixture
async def memory_manager(memory_url: str) -> AsyncIterator[TableManager]:
    """A running :class:`~trio_tables.TableManager` on this test's ``memory_url``, with
    a unique app id and ``commit_interval=0.2`` (see
    :func:`~trio_tables.testing.open_test_manager`). Needs pytest-trio."""
    async with open_test_manager(memory_url) as manager:
        yield manager


@pytest.fixture
async def kafka_manager(kafka_broker: EmbeddedBroker) -> AsyncIterator[TableManager]:
    """A running :class:`~trio_tables.TableManager` on the embedded broker, with a
    unique app id and the short group timeouts Tansu needs. Needs pytest-trio."""
    async with open_test_manager(kafka_broker.url) as manager:
        yield manager


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
