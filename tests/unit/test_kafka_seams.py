"""Private kafka-python seams fail loudly (issue 15 point 4): ``_transport/kafka/_seams.py`` checks
every private part of kafka-python that trio_tables uses, once, when a Kafka transport
opens; a missing or changed one is ``KafkaClientIncompatible`` naming the kafka-python
version and the seam. What each seam is for is pinned by the test the seam names."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.base import BaseCoordinator
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.net.selector import NetworkSelector
from kafka.producer.sender import Sender
from kafka.producer.transaction_manager import TransactionalRequestResult

from trio_tables import open_transport
from trio_tables._transport.kafka import _bridge as _kafka_bridge
from trio_tables._transport.kafka._seams import (
    SEAMS,
    check_kafka_python_seams,
    check_seams,
    kafka_python_version,
)
from trio_tables.errors import KafkaClientIncompatible

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_kafka_python_has_every_seam() -> None:
    check_seams()


def test_every_seam_names_a_test_that_exists() -> None:
    for seam in SEAMS:
        for node in seam.test.split("; "):
            path, _, name = node.partition("::")
            source = (ROOT / path).read_text()
            if name:
                assert re.search(rf"def {re.escape(name)}\(", source), node


def test_every_private_kafka_python_attribute_in_the_bridge_is_a_seam() -> None:
    """The bridge is the only module that touches kafka-python's private attributes, and
    each one it touches is covered by a seam's check."""
    source = Path(_kafka_bridge.__file__).read_text()
    used = set(re.findall(r"(?:consumer|producer|coordinator|fetcher)\._([a-z]\w*)", source))
    named = " ".join(seam.name for seam in SEAMS)
    assert used, "the pattern no longer finds anything"
    assert {name for name in used if f"_{name}" not in named} == set()
    for module in (ROOT / "trio_tables").rglob("*.py"):
        if module.parent.name == "kafka" and module.name in ("_bridge.py", "_seams.py"):
            continue
        text = module.read_text()
        # (``self._fetcher`` and the like are trio_tables' own attributes; ``~._fetcher``
        # and ``from ._fetcher`` refer to the module.)
        assert not re.search(r"(?<!self)(?<!~)(?<!from )\._(?:net|coordinator|fetcher|sender|"
                             r"transaction_manager|join_task|next_partition_records)\b",
                             text), module


async def _gone_coroutine(self: Any, timeout_ms: Any = None) -> bool:
    return True


def _no_parking(self: Any, max_records: Any = None, update_offsets: Any = True) -> Any:
    return {}, False


def _wait_without_timeout(self: Any) -> bool:
    return True


# One way per seam to make kafka-python "change": (class, attribute, replacement or None
# to delete it).
CHANGES: dict[str, tuple[type, str, Callable[..., Any] | None]] = {
    "KafkaConsumer._net": (NetworkSelector, "call_soon_threadsafe", None),
    "KafkaConsumer._coordinator.commit_offsets_async": (
        ConsumerCoordinator, "commit_offsets_async", None,
    ),
    "KafkaConsumer._coordinator.fetch_committed_offsets": (
        ConsumerCoordinator, "fetch_committed_offsets", None,
    ),
    "KafkaConsumer._fetcher": (Fetcher, "fetched_records", _no_parking),
    "KafkaProducer._sender": (Sender, "add_topic", None),
    "KafkaProducer._transaction_manager": (
        TransactionalRequestResult, "wait", _wait_without_timeout,
    ),
    "ConsumerCoordinator.join_group_async": (BaseCoordinator, "join_group_async", _gone_coroutine),
}


@pytest.mark.parametrize("seam", SEAMS, ids=[s.name.split(" ")[0] for s in SEAMS])
def test_a_missing_or_changed_seam_is_a_typed_error_naming_version_and_seam(
    seam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cls, attribute, replacement), = (
        change for prefix, change in CHANGES.items() if seam.name.startswith(prefix)
    )
    if replacement is None:
        monkeypatch.delattr(cls, attribute)
    else:
        monkeypatch.setattr(cls, attribute, replacement)
    with pytest.raises(KafkaClientIncompatible) as info:
        check_seams()
    assert info.value.seam == seam.name
    assert info.value.version == kafka_python_version()
    assert f"kafka-python {kafka_python_version()}" in str(info.value)
    assert seam.name in str(info.value)


async def test_the_transport_checks_the_seams_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(Sender, "add_topic")
    check_kafka_python_seams.cache_clear()
    try:
        # Nothing listens on the discard port: without the check this would be
        # BrokerUnavailable after the connect timeout.
        with pytest.raises(KafkaClientIncompatible, match=r"KafkaProducer\._sender"):
            async with open_transport("kafka://127.0.0.1:9", connect_timeout=30):
                pass
    finally:
        check_kafka_python_seams.cache_clear()
