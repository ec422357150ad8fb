"""Load the trio_tables pytest plugin (the ``kafka_broker`` and ``unique_name`` fixtures).

Installing trio-tables registers :mod:`trio_tables.testing` through the ``pytest11``
entry point; this covers runs where entry points are not loaded (a source checkout on
``PYTHONPATH``, ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``). Registering the same module twice
is an error in pytest, hence the check.
"""

from __future__ import annotations

import pytest

import trio_tables.testing

# pytester: the tests of trio_tables' own pytest plugin run pytest on example projects.
pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(trio_tables.testing):
        config.pluginmanager.register(trio_tables.testing, "trio_tables")


# Files whose tests run worker processes for tens of seconds each: started first, so
# that pytest-xdist's processes end together instead of one running them last, alone.
SLOW_FIRST = (
    "test_faults.py",
    "test_exactly_once_kafka.py",
    "test_workers.py",
    "test_bench.py",
    "test_global_workers.py",
    "test_worker_signals.py",
    "test_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within a file stays
