"""The one app factory: a Faust app wired from ``Settings``.

Nothing here runs at import time and no module holds a global app, so tests and
tools can build as many apps as they need. Agents live in ``agents/`` and plug in
through the ``churnwatch.components`` entry point group declared in
pyproject.toml, which keeps this package free of imports from ``agents``.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

import faust
from faust import transport
from faust.transport.drivers import aiokafka as aiokafka_driver

from retention.alerts import Lifecycle
from retention.model import Model, load_model
from retention.risk import RiskConfig, load_risk_config
from schemas.decode import EventDecoder
from streams import topics
from streams.consumer import InlineTransport
from streams.metrics import PipelineMetrics
from streams.partitions import partition_states
from streams.redis_sink import RedisSink
from streams.redis_view import RedisView
from streams.restore import RestoringTableManager
from streams.security import broker_credentials, client_security
from streams.settings import Settings
from streams.tansu import install_end_offset_fix
from streams.web import install_views

COMPONENT_GROUP = "churnwatch.components"
QUIET_LOGGERS = ("faust", "mode", "aiokafka", "kafka")


class ChurnwatchApp(faust.App):
    """A Faust app that also carries churnwatch's settings and shared components."""

    settings: Settings
    decoder: EventDecoder
    metrics: PipelineMetrics
    customers: Any  # faust.Table[bytes, bytes]
    inputs: faust.TopicT
    clock_topic: faust.TopicT
    deadletter_topic: faust.TopicT
    alerts_topic: faust.TopicT
    model: Model | None
    risk: RiskConfig
    lifecycle: Lifecycle
    redis_view: RedisView | None
    redis_sink: RedisSink | None

    #: Topics InlineConsumer hands over as record batches (streams/consumer.py).
    batched_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> Any:
        # Kafka input is consumed through InlineConsumer (streams/consumer.py).
        if self.on_kafka():
            return InlineTransport(self.conf.broker_consumer, self)
        return super()._new_transport()

    def on_kafka(self) -> bool:
        """Whether the app consumes Kafka (through InlineConsumer), not Faust's
        in-memory transport."""
        return transport.by_url(self.conf.broker_consumer[0]) is aiokafka_driver.Transport


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings for throughput and quick start-up (see README, Performance)."""
    heartbeat = max(0.5, min(3.0, settings.session_timeout / 4))
    # Faust passes these to its producer and consumers (whose client also creates the
    # topics): the same TLS and SASL as churnwatch's own clients (streams/security.py).
    credentials = broker_credentials(client_security(settings))
    return {
        "broker": settings.broker,
        **({"broker_credentials": credentials} if credentials is not None else {}),
        "store": settings.store,
        "datadir": settings.datadir,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication,
        "table_standby_replicas": settings.standby_replicas,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_in_thread": False,
        "canonical_url": settings.canonical_url,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": heartbeat,
        # How long the group waits for a member to rejoin: a member that takes longer
        # (its revocation waits until its buffered writes are acknowledged) is
        # dropped, and its late writes would land after the new owner's recovery.
        # A dead member is still detected by the session timeout.
        "broker_rebalance_timeout": max(settings.session_timeout * 6, 60.0),
        "broker_commit_interval": settings.commit_interval,
        "broker_max_poll_records": max(500, settings.batch_max),
        "stream_recovery_delay": 0.0,
        "stream_wait_empty": False,
        "producer_linger": 0.02,
        "producer_max_batch_size": 1024 * 1024,
        "producer_max_request_size": 4 * 1024 * 1024,
        "topic_disable_leader": True,
        # Recovery preceded by a batched restore of the changelogs (streams/restore.py).
        **({"TableManager": RestoringTableManager} if settings.batched_restore else {}),
        "timezone": "UTC",
    }


def consumer_lag(app: faust.App) -> list[tuple[str, int, int]]:
    """Unread messages per assigned input partition, from the consumer's own view."""
    try:
        consumer = app.consumer
        assigned = consumer.assignment()
    except Exception:  # not started, or stopping: no partitions to report
        return []
    lag = []
    for tp in sorted(assigned):
        if tp.topic not in topics.CONSUMED_TOPICS:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        read = consumer._read_offset.get(tp)  # type: ignore[attr-defined]
        if highwater is None or (read is None and highwater > 0):
            continue  # nothing read since assignment: the position is not known here
        position = 0 if read is None else read + 1
        lag.append((tp.topic, tp.partition, max(0, highwater - position)))
    return lag


def create_app(settings: Settings) -> ChurnwatchApp:
    if settings.broker_quirks == "tansu":
        install_end_offset_fix(settings.bootstrap)
    app = ChurnwatchApp(settings.app_id, **faust_config(settings))
    app.settings = settings
    app.decoder = EventDecoder(settings.max_event_bytes)
    # Loaded once, before any agent starts: a bad file stops the worker at launch
    # with the file's name and problem, not at the first event.
    app.model = load_model(settings.model) if settings.model else None
    app.risk = load_risk_config(settings.risk or None)
    app.lifecycle = Lifecycle(app.risk, app.model, settings.window)
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    app.inputs = app.topic(*topics.CONSUMED_TOPICS, partitions=settings.partitions, **raw)
    app.batched_topics = frozenset(topics.CONSUMED_TOPICS if settings.record_batches else ())
    app.clock_topic = app.topic(topics.CLOCK, partitions=settings.partitions, **raw)
    app.deadletter_topic = app.topic(topics.DEADLETTER, partitions=settings.partitions, **raw)
    app.alerts_topic = app.topic(topics.ALERTS, partitions=settings.partitions, **raw)
    app.customers = app.Table(
        topics.CUSTOMERS_TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help="Per-customer state (and one record per partition), msgpack-encoded",
        extra_topic_configs={"cleanup.policy": "compact"},
    )
    # Faust derives a table's serializers from its types ("json" for plain types) and
    # uses them to read the changelog back on recovery; the state is already bytes.
    app.customers.key_serializer = app.customers.value_serializer = "raw"
    app.metrics = PipelineMetrics(
        lambda: partition_states(app, app.customers),
        lambda: consumer_lag(app),
        lambda: app.risk.segment_churn_targets,
    )
    app.metrics.flush_interval.set(settings.batch_within)
    app.redis_view = app.redis_sink = None
    if settings.redis_url:
        app.redis_view = RedisView(settings.redis_url, settings.redis_prefix)
        app.redis_sink = RedisSink(
            app.redis_view,
            app.lifecycle,
            app.metrics,
            settings.redis_buffer,
            lambda: app.customers.items(),
        )
    components = sorted(entry_points(group=COMPONENT_GROUP), key=lambda ep: ep.name)
    if not components:
        raise RuntimeError(
            f"no churnwatch components found in entry point group {COMPONENT_GROUP!r}: "
            "install the package (make install) so the agents are registered"
        )
    for component in components:
        component.load()(app)
    install_views(app)

    # A faust.Worker replaces on_startup_finished with its own when it starts:
    # streams/worker.py calls after_start from there.
    app.on_startup_finished = lambda: after_start(app)

    return app


def producer_buffer_size(settings: Settings) -> int:
    """Messages Faust's producer buffer holds before the stream waits for it to drain:
    about two batches' changelog writes. More buys little speed, and everything
    buffered must reach the broker before a revocation completes."""
    return max(2 * settings.batch_max, 1000)


async def after_start(app: ChurnwatchApp) -> None:
    """Tuning that needs the started app."""
    # Below WARNING Faust and aiokafka log several records per event, which costs
    # more than processing it; their own records stay at WARNING unless debugging.
    if app.settings.log_level.lower() != "debug":
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    # A batch writes one changelog record per touched customer. At Faust's default
    # of 100 the stream stops before every message once the buffer holds more, and
    # drains it a message at a time.
    app.producer.buffer.max_messages = producer_buffer_size(app.settings)
