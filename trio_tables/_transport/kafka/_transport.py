"""The Kafka transport: kafka-python 3 driven from Trio (URL ``kafka://host:port,...``).

Each kafka-python client (admin, producer, consumers, the high-watermark probe) has one
:class:`~._bridge.ClientOwner`: calls go through a worker thread one at a time.
Consumers poll with short timeouts (``poll(timeout=...)``, 0.2 s by default), which bounds
how long a cancellation waits for the worker thread.

Clients per worker (one transport per worker), whatever the number of tables: the
admin client, the producer (librdkafka without a transaction by default,
:mod:`._librdkafka_producer`), the group consumer (a kafka-python member plus a record
fetcher), one restore consumer serving every table's changelog reads
(:meth:`KafkaTransport.open_changelog_reader`, :mod:`._changelog_reader`) and one
high-watermark probe per isolation level, shared by the consumers.

Threads: every client is created in a worker thread and then called only through its
owner (a shared probe's calls queue on its owner); what crosses threads inside a client
is described in
:mod:`._producer`, :mod:`._librdkafka_producer`, :mod:`._consumer` and
:mod:`._membership`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import trio
from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from ...errors import BrokerUnavailable, PartitionCountMismatch, UnknownTopic
from .._assignment import CoPartitionedAssignor
from .._base import (
    TP,
    Assignor,
    GroupConsumer,
    IsolationLevel,
    Producer,
    RebalanceListener,
    RebalanceProtocol,
    RestoreConsumer,
    TopicDescription,
)
from .._changelog_reader import open_shared_reader
from .._retry import RetryPolicy
from ._assignor import KafkaAssignorAdapter
from ._bridge import ClientOwner
from ._consumer import HighWatermarkProbe, KafkaGroupConsumer
from ._fetcher import Fetcher, KafkaPythonFetcher
from ._librdkafka import (
    REPLAY,
    STREAMING,
    LibrdkafkaFetcher,
    librdkafka_config,
    new_librdkafka_consumer,
)
from ._librdkafka_group import MEMBERSHIP_ONLY_CONFIG, LibrdkafkaGroupConsumer
from ._librdkafka_producer import open_librdkafka_producer
from ._producer import KafkaTransportProducer
from ._restore import FetcherRestoreConsumer
from ._seams import check_kafka_python_seams

__all__ = ["KafkaSettings", "KafkaTransport", "open_kafka_transport"]

logger = logging.getLogger("trio_tables.transport.kafka")

_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION


@attrs.frozen(kw_only=True)
class KafkaSettings:
    """Connection and client settings shared by every client of a Kafka transport.

    Which client each field reaches (``attrs.fields(KafkaSettings).<name>.metadata
    ["reaches"]`` says the same, and a test checks it against the configurations built):

    ==========================================================  ==========================
    field                                                       reaches
    ==========================================================  ==========================
    ``bootstrap_servers``, ``client_id``, ``connect_timeout``,  both clients (kafka-python
    ``request_timeout_ms``, ``security_protocol``,              and librdkafka, translated
    ``sasl_mechanism``, ``sasl_plain_username``,                to librdkafka's names)
    ``sasl_plain_password``, ``ssl_cafile``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_password``
    ``session_timeout_ms``, ``heartbeat_interval_ms``,          kafka-python (the group
    ``max_poll_interval_ms``                                    member)
    ``end_transaction_timeout``                                 kafka-python (producer)
    ``extra``                                                   kafka-python (every client
                                                                that knows the setting)
    ``confluent_config``                                        librdkafka
    ``reconnect_timeout``, ``fetch_client``,                    trio_tables itself (retries
    ``produce_client``                                          of calls on both clients;
                                                                the choice of clients)
    ==========================================================  ==========================

    The defaults suit a production cluster. Against the embedded Tansu broker use
    ``session_timeout_ms=6000, heartbeat_interval_ms=1000`` (Tansu holds each join round
    for about half the session timeout). ``extra`` passes any other kafka-python setting
    to every client that knows it (e.g. ``{"ssl_check_hostname": False}``).

    ``fetch_client``: the client that reads records (the group consumer's source
    records, changelog replay for recovery, standby copies and global tables).
    ``"confluent-kafka"`` (the default): librdkafka, which parses records in C: on a
    2-core machine about twice the replay speed and a third less time per processed
    event. ``confluent_config`` adds librdkafka settings to it. ``"kafka-python"``: the
    same client as everything else. Group membership, rebalances, commits, producers
    and admin are kafka-python in both cases (the table assignor, which places standbys,
    is Python code, which librdkafka cannot call).

    ``produce_client``: the client of the non-transactional producer (changelog
    records under ``at_least_once``, ``manager.send()`` outputs). ``"confluent-kafka"``
    (the default): librdkafka, about 8x less CPU per produced record than kafka-python
    (it is what bounded a table with many distinct keys). ``confluent_config`` adds
    librdkafka settings to it. ``"kafka-python"``: the same client as everything else.
    Transactional producers (``exactly_once``) are kafka-python in both cases (their
    offsets commit needs the group metadata of kafka-python's group member).

    ``reconnect_timeout``: while no broker answers (a broker restart, a network cut),
    commits, offset and metadata requests and polls are retried with exponential backoff
    (0.1 s doubling to 5 s, each attempt logged) for at most this many seconds, then fail
    with :class:`~trio_tables.errors.BrokerUnavailable`. Produced records are retried
    by kafka-python itself for ``delivery_timeout_ms`` (default 120 s), then fail with
    :class:`~trio_tables.errors.DeliveryFailed`.
    """

    bootstrap_servers: str = attrs.field(metadata={"reaches": "both"})
    client_id: str = attrs.field(default="trio-tables", metadata={"reaches": "both"})
    connect_timeout: float = attrs.field(default=10.0, metadata={"reaches": "both"})
    reconnect_timeout: float = attrs.field(default=60.0, metadata={"reaches": "trio_tables"})
    request_timeout_ms: int = attrs.field(default=30_000, metadata={"reaches": "both"})
    session_timeout_ms: int = attrs.field(default=45_000, metadata={"reaches": "kafka-python"})
    heartbeat_interval_ms: int = attrs.field(default=3_000, metadata={"reaches": "kafka-python"})
    max_poll_interval_ms: int = attrs.field(default=300_000, metadata={"reaches": "kafka-python"})
    #: Seconds a transaction's commit or abort may take before the producer is given up
    #: (a broker may never answer a fenced producer).
    end_transaction_timeout: float = attrs.field(default=30.0, metadata={"reaches": "kafka-python"})
    security_protocol: str = attrs.field(default="PLAINTEXT", metadata={"reaches": "both"})
    sasl_mechanism: str | None = attrs.field(default=None, metadata={"reaches": "both"})
    sasl_plain_username: str | None = attrs.field(default=None, metadata={"reaches": "both"})
    sasl_plain_password: str | None = attrs.field(
        default=None, repr=False, metadata={"reaches": "both"}
    )
    ssl_cafile: str | None = attrs.field(default=None, metadata={"reaches": "both"})
    ssl_certfile: str | None = attrs.field(default=None, metadata={"reaches": "both"})
    ssl_keyfile: str | None = attrs.field(default=None, metadata={"reaches": "both"})
    ssl_password: str | None = attrs.field(default=None, repr=False, metadata={"reaches": "both"})
    extra: Mapping[str, Any] = attrs.field(
        factory=dict, eq=False, hash=False, metadata={"reaches": "kafka-python"}
    )
    fetch_client: Literal["kafka-python", "confluent-kafka"] = attrs.field(
        default="confluent-kafka",
        validator=attrs.validators.in_(("kafka-python", "confluent-kafka")),
        metadata={"reaches": "trio_tables"},
    )
    produce_client: Literal["kafka-python", "confluent-kafka"] = attrs.field(
        default="confluent-kafka",
        validator=attrs.validators.in_(("kafka-python", "confluent-kafka")),
        metadata={"reaches": "trio_tables"},
    )
    confluent_config: Mapping[str, Any] = attrs.field(
        factory=dict, eq=False, hash=False, metadata={"reaches": "librdkafka"}
    )

    def for_client(self, client_class: Any, **specific: Any) -> dict[str, Any]:
        """kafka-python configuration for one client class: the shared settings it
        knows, then ``specific`` (which wins)."""
        shared: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "bootstrap_timeout_ms": int(self.connect_timeout * 1000),
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": self.ssl_password,
            **self.extra,
            **specific,
        }
        known = client_class.DEFAULT_CONFIG
        return {k: v for k, v in shared.items() if k in known and v is not None}


class KafkaTransport:
    """Implements :class:`~trio_tables._transport._base.Transport` on kafka-python."""

    def __init__(self, settings: KafkaSettings, admin: Any) -> None:
        self.settings = settings
        self._admin = admin
        self._admin_owner = ClientOwner("Kafka admin client")
        self._retry = RetryPolicy(settings.bootstrap_servers, settings.reconnect_timeout)
        self._probes: dict[IsolationLevel, HighWatermarkProbe] = {}
        self._probe_lock = trio.Lock()

    @property
    def url(self) -> str:
        return f"kafka://{self.settings.bootstrap_servers}"

    async def _connect(self, make: Any, config: dict[str, Any]) -> Any:
        """Create a kafka-python client in a worker thread; typed error if unreachable.

        Cancellation returns at once (a client being created has no other caller, so
        the thread may be abandoned, unlike calls on a client): the client the thread
        still creates is closed, by whichever side sees it last (its connections would
        keep the broker waiting, e.g. a broker stopping)."""
        lock = threading.Lock()
        made: list[Any] = []
        abandoned = False

        def create() -> Any:
            client = make(**config)
            with lock:
                made.append(client)
                if not abandoned:
                    return client
            client.close()
            return None

        try:
            return await trio.to_thread.run_sync(create, abandon_on_cancel=True)
        except (kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError) as exc:
            raise BrokerUnavailable(
                self.settings.bootstrap_servers, self.settings.connect_timeout, str(exc)
            ) from exc
        except BaseException:
            with lock:
                abandoned = True
                client = made[0] if made else None
            if client is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(client.close)
            raise

    # -- Admin -----------------------------------------------------------------------------
    async def create_topic(
        self,
        name: str,
        partitions: int,
        *,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
        exist_ok: bool = True,
    ) -> TopicDescription:
        topic = NewTopic(name, partitions, replication_factor, topic_configs=dict(configs or {}))
        try:
            await self._retry.run(
                f"creating topic {name!r}",
                lambda: self._admin_owner.run(self._admin.create_topics, [topic]),
            )
        except kafka_errors.TopicAlreadyExistsError:
            if not exist_ok:
                raise
            existing = await self.describe_topic(name)
            if existing.partitions != partitions:
                raise PartitionCountMismatch(
                    name, expected=partitions, actual=existing.partitions
                ) from None
            return existing
        return await self._describe_until_visible(name)

    async def _describe_until_visible(self, name: str) -> TopicDescription:
        with trio.fail_after(self.settings.request_timeout_ms / 1000):
            while True:
                try:
                    return await self.describe_topic(name)
                except UnknownTopic:
                    await trio.sleep(0.05)  # metadata of a new topic propagates

    async def describe_topic(self, name: str) -> TopicDescription:
        def describe() -> tuple[Any, dict[str, str]]:
            (info,) = self._admin.describe_topics([name])
            if info["error_code"] == _UNKNOWN_TOPIC or not info["partitions"]:
                return info, {}
            configs: dict[str, str] = {}
            try:
                raw = self._admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
                configs = {str(k): str(v) for k, v in raw.get("topic", {}).get(name, {}).items()}
            except kafka_errors.KafkaError as exc:  # some brokers cannot describe configs
                logger.debug("describe_configs(%s) failed: %r", name, exc)
            return info, configs

        info, configs = await self._retry.run(
            f"describing topic {name!r}", lambda: self._admin_owner.run(describe)
        )
        if info["error_code"] == _UNKNOWN_TOPIC or not info["partitions"]:
            raise UnknownTopic(name)
        if info["error_code"]:
            raise kafka_errors.for_code(info["error_code"])(f"describe_topics({name!r})")
        return TopicDescription(name, len(info["partitions"]), configs)

    async def list_topics(self) -> frozenset[str]:
        return frozenset(
            await self._retry.run(
                "listing topics", lambda: self._admin_owner.run(self._admin.list_topics)
            )
        )

    async def group_offsets(self, group_id: str) -> dict[TP, int]:
        # OffsetFetch for all of the group's partitions (no JoinGroup).
        found = await self._admin_owner.run(self._admin.list_group_offsets, {group_id: None})
        return {
            TP(ktp.topic, ktp.partition): meta.offset
            for ktp, meta in found.get(group_id, {}).items()
            if meta.offset is not None and meta.offset >= 0
        }

    # -- Clients -----------------------------------------------------------------------
    @asynccontextmanager
    async def _open_producer(
        self, *, transactional_id: str | None, max_in_flight: int, linger: float
    ) -> AsyncIterator[Producer]:
        if transactional_id is None and self.settings.produce_client == "confluent-kafka":
            opening = open_librdkafka_producer(
                self.settings, linger, max_in_flight=max_in_flight, check_topic=self.describe_topic
            )
            async with opening as fast:
                yield fast
            return
        ordering: dict[str, Any] = {}
        if transactional_id is None and "enable_idempotence" not in self.settings.extra:
            # Not idempotent: a broker that loses a producer's sequence state (Tansu
            # after a restart) fails an idempotent producer fatally (OutOfOrderSequence,
            # then InitProducerId refused). One request in flight keeps retries in order;
            # a retried duplicate is harmless (changelog replay is last-write-wins, and
            # at_least_once outputs may repeat anyway).
            ordering = {"enable_idempotence": False, "max_in_flight_requests_per_connection": 1}
        config = self.settings.for_client(
            KafkaProducer,
            acks="all",
            linger_ms=int(linger * 1000),
            batch_size=256 * 1024,
            transactional_id=transactional_id,
            **ordering,
        )
        client = await self._connect(KafkaProducer, config)
        producer = KafkaTransportProducer(
            ClientOwner(f"Kafka producer {transactional_id or ''}".strip()),
            client,
            max_in_flight=max_in_flight,
            transactional=transactional_id is not None,
            check_topic=self.describe_topic,
            end_transaction_timeout=self.settings.end_transaction_timeout,
        )
        failed = True
        try:
            yield producer
            failed = False
        finally:
            await producer.close(flush=not failed)

    def open_producer(
        self,
        *,
        transactional_id: str | None = None,
        max_in_flight: int = 10_000,
        linger: float = 0.005,
    ) -> Any:
        return self._open_producer(
            transactional_id=transactional_id, max_in_flight=max_in_flight, linger=linger
        )

    @asynccontextmanager
    async def _open_probe(
        self, isolation_level: IsolationLevel
    ) -> AsyncIterator[HighWatermarkProbe]:
        """The transport's one high-watermark probe for ``isolation_level`` (made on
        first use, shared by every consumer, closed with the transport): one end-offset
        client per worker, whatever the number of tables."""
        async with self._probe_lock:
            probe = self._probes.get(isolation_level)
            if probe is None:
                config = self.settings.for_client(
                    KafkaConsumer,
                    group_id=None,
                    enable_auto_commit=False,
                    isolation_level=isolation_level,
                    max_partition_fetch_bytes=1,  # a fetch still returns one batch (KIP-74)
                    # Only the fetch response's high watermark is wanted: the broker must
                    # not hold the fetch of an empty partition for data (500 ms default).
                    fetch_max_wait_ms=10,
                    auto_offset_reset="earliest",
                )
                client = await self._connect(KafkaConsumer, config)
                probe = HighWatermarkProbe(
                    ClientOwner(f"Kafka high-watermark probe ({isolation_level})"),
                    client,
                    self.settings.connect_timeout,
                    retry=self._retry,
                )
                self._probes[isolation_level] = probe
        yield probe

    @asynccontextmanager
    async def _open_group_consumer(
        self,
        group_id: str,
        topics: Iterable[str],
        *,
        listener: RebalanceListener,
        assignors: Sequence[Assignor] | None,
        rebalance_protocol: RebalanceProtocol,
        isolation_level: IsolationLevel,
        auto_offset_reset: Literal["earliest", "latest"],
        max_poll_records: int,
    ) -> AsyncIterator[GroupConsumer]:
        topic_list = sorted(set(topics))
        for topic in topic_list:
            await self.describe_topic(topic)  # UnknownTopic before joining anything
        adapters = [
            KafkaAssignorAdapter(assignor, rebalance_protocol)
            for assignor in (assignors or [CoPartitionedAssignor()])
        ]
        s = self.settings
        config = s.for_client(
            KafkaConsumer,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            isolation_level=isolation_level,
            max_poll_records=max_poll_records,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            partition_assignment_strategy=adapters,
            allow_auto_create_topics=False,
            fetch_max_bytes=50 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        async with self._open_probe(isolation_level) as probe, trio.open_nursery() as nursery:
            consumer: KafkaGroupConsumer
            owner = ClientOwner(f"Kafka group consumer {group_id}")
            if s.fetch_client == "confluent-kafka":
                config.update(MEMBERSHIP_ONLY_CONFIG)
                # First: a bad confluent_config fails before any client exists.
                fetcher = await self._librdkafka_fetcher(isolation_level, STREAMING)
                try:
                    client = await self._connect(KafkaConsumer, config)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(fetcher.close)
                    raise
                consumer = LibrdkafkaGroupConsumer(
                    owner,
                    client,
                    probe,
                    fetcher=fetcher,
                    max_poll_records=max_poll_records,
                    listener=listener,
                    nursery=nursery,
                    reset_to_latest=auto_offset_reset == "latest",
                    retry=self._retry,
                )
            else:
                client = await self._connect(KafkaConsumer, config)
                consumer = KafkaGroupConsumer(
                    owner,
                    client,
                    probe,
                    listener=listener,
                    nursery=nursery,
                    reset_to_latest=auto_offset_reset == "latest",
                    retry=self._retry,
                )
            for adapter in adapters:
                # Set before subscribe(): the IO thread calls it from the first join on.
                adapter.on_join = consumer.note_join
            try:
                await consumer.subscribe(topic_list)
                yield consumer
            finally:
                # Revokes through the listener (still served by this nursery), commits
                # what it returns, and leaves the group.
                await consumer.close()

    def open_group_consumer(
        self,
        group_id: str,
        topics: Iterable[str],
        *,
        listener: RebalanceListener,
        assignors: Sequence[Assignor] | None = None,
        rebalance_protocol: RebalanceProtocol = "eager",
        isolation_level: IsolationLevel = "read_uncommitted",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        max_poll_records: int = 5000,
    ) -> Any:
        return self._open_group_consumer(
            group_id,
            topics,
            listener=listener,
            assignors=assignors,
            rebalance_protocol=rebalance_protocol,
            isolation_level=isolation_level,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=max_poll_records,
        )

    @asynccontextmanager
    async def _open_restore_consumer(
        self, *, isolation_level: IsolationLevel, max_poll_records: int
    ) -> AsyncIterator[RestoreConsumer]:
        async with self._open_probe(isolation_level) as probe:
            fetcher: Fetcher
            if self.settings.fetch_client == "confluent-kafka":
                fetcher = await self._librdkafka_fetcher(isolation_level, REPLAY)
            else:
                config = self.settings.for_client(
                    KafkaConsumer,
                    group_id=None,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    isolation_level=isolation_level,
                    max_poll_records=max_poll_records,
                    fetch_max_bytes=50 * 1024 * 1024,
                    max_partition_fetch_bytes=8 * 1024 * 1024,
                )
                fetcher = KafkaPythonFetcher(await self._connect(KafkaConsumer, config))
            consumer = FetcherRestoreConsumer(
                ClientOwner(f"Kafka restore consumer ({self.settings.fetch_client})"),
                fetcher,
                probe,
                max_poll_records=max_poll_records,
                retry=self._retry,
            )
            try:
                yield consumer
            finally:
                await consumer.close()

    async def _librdkafka_fetcher(
        self, isolation_level: IsolationLevel, sizes: Mapping[str, Any]
    ) -> LibrdkafkaFetcher:
        config = librdkafka_config(
            self.settings,
            isolation_level=isolation_level,
            sizes=sizes,
            extra=self.settings.confluent_config,
        )
        # librdkafka connects lazily: an unreachable broker shows up in the first call.
        client = await trio.to_thread.run_sync(new_librdkafka_consumer, config)
        return LibrdkafkaFetcher(client, timeout=self.settings.connect_timeout)

    def open_changelog_reader(self, *, isolation_level: IsolationLevel = "read_uncommitted") -> Any:
        return open_shared_reader(self.open_restore_consumer, isolation_level=isolation_level)

    def open_restore_consumer(
        self,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        max_poll_records: int = 10_000,
    ) -> Any:
        return self._open_restore_consumer(
            isolation_level=isolation_level, max_poll_records=max_poll_records
        )

    async def aclose(self) -> None:
        try:
            for probe in self._probes.values():
                await probe.close()
        finally:
            await self._admin_owner.close(self._admin.close)


@asynccontextmanager
async def open_kafka_transport(servers: str, **options: Any) -> AsyncIterator[KafkaTransport]:
    """Connect to the Kafka cluster at ``servers`` (``host:port[,host:port...]``).

    ``options`` are :class:`KafkaSettings` fields. Raises
    :class:`~trio_tables.errors.BrokerUnavailable` when no broker answers within
    ``connect_timeout`` seconds, and
    :class:`~trio_tables.errors.KafkaClientIncompatible` (before connecting) when the
    installed kafka-python lacks a private part trio_tables relies on
    (:mod:`._seams`, checked once per process).
    """
    if not servers:
        raise ValueError("kafka:// URL without servers: use kafka://host:port")
    check_kafka_python_seams()
    settings = KafkaSettings(bootstrap_servers=servers, **options)
    transport = KafkaTransport(settings, None)
    transport._admin = await transport._connect(
        KafkaAdminClient, settings.for_client(KafkaAdminClient)
    )
    try:
        yield transport
    finally:
        await transport.aclose()
