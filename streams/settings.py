"""One typed settings object, read from the environment once.

Every knob has a default that runs the demo on one machine; production sets
``CHURNWATCH_BROKER`` (and usually the store and partition count). Durations
accept ``90d``/``12h``/``30s``/``250ms`` and, where unbounded makes sense, ``none``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_type_hints

from retention.apply import Policy
from retention.timeutil import SECOND, Micros, parse_duration

PREFIX: Final = "CHURNWATCH_"
Period = Literal["day", "week", "month", "quarter"]
ClockMode = Literal["live", "off"]
BrokerQuirks = Literal["", "tansu"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


def _duration(name: str, text: str, *, allow_none: bool) -> Micros | None:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}{name.upper()}: {exc}") from None
    if value is None and not allow_none:
        raise SettingsError(f"{PREFIX}{name.upper()}: must be a finite duration")
    return value


@dataclass(frozen=True)
class Settings:
    """See the configuration table in README.md; each field is ``CHURNWATCH_<NAME>``."""

    broker: str = "kafka://localhost:9092"
    app_id: str = "churnwatch"
    partitions: int = 4
    replication: int = 1
    store: str = "memory://"
    datadir: str = "./churnwatch-data"
    activity_window: str = "90d"
    allowed_lateness: str = "6h"
    period: Period = "month"
    #: Segment names each partition keeps figures for (retention/segments.py): the
    #: first it meets; later names count under "other", customers without one "none".
    segment_cap: int = 50
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: The serving view's Redis ("" = none: no at-risk queue, /customers from tables).
    redis_url: str = ""
    redis_prefix: str = "churnwatch"
    #: Customers whose newest view may wait for Redis before a resync is needed.
    redis_buffer: int = 100_000
    #: URL other workers use to reach this one's web port ("" = from web host/port).
    advertised_url: str = ""
    #: "tansu": correct the embedded broker's end offsets (streams/tansu.py).
    broker_quirks: BrokerQuirks = ""
    clock: ClockMode = "live"
    clock_interval: float = 5.0
    #: Most input records in one batch.
    batch_max: int = 1000
    #: Hand the input to the agent as record batches (streams/consumer.py): Faust's
    #: per-message cost paid once per batch. Off: one message a record, as Faust does.
    record_batches: bool = True
    #: The state's flush interval: a batch closes at this age even when it is not
    #: full, and its state is written then, each customer it touched once and the
    #: partition record with the offsets that state covers (processor/commit.py): a
    #: write-back cache per partition. Longer means fewer changelog writes per event
    #: when there is a backlog, for up to that much more latency when input is slow.
    batch_within: float = 0.25
    max_event_bytes: int = 64 * 1024
    dedup_ids: int = 0
    session_timeout: float = 10.0
    commit_interval: float = 1.0
    standby_replicas: int = 1
    #: Restore tables from their changelogs in batches before Faust's recovery
    #: (streams/restore.py), for changelog partitions with at least
    #: ``batched_restore_min`` records to read; Faust's own recovery reads the rest.
    batched_restore: bool = True
    batched_restore_min: int = 10_000
    log_level: str = "warning"
    #: BG/NBD + Gamma-Gamma parameters from ``churnwatch fit`` ("" = score without).
    model: str = ""
    #: Risk weights, thresholds and tiers (JSON); "" = the calibrated defaults.
    risk: str = ""
    #: How every Kafka client connects: TLS (SSL), SASL, both, or neither.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    #: A file holding the SASL password (a mounted secret), instead of SASL_PASSWORD.
    sasl_password_file: str = ""
    #: PEM file of the CAs that sign the brokers' certificates ("" = the system's).
    ssl_cafile: str = ""
    #: Client certificate (PEM, may hold the key too) for brokers that require one.
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        _duration("activity_window", self.activity_window, allow_none=True)
        _duration("allowed_lateness", self.allowed_lateness, allow_none=False)
        if self.partitions < 1:
            raise SettingsError(f"{PREFIX}PARTITIONS: must be at least 1")
        if self.segment_cap < 0:
            raise SettingsError(f"{PREFIX}SEGMENT_CAP: must be 0 or more")
        if self.batch_max < 1:
            raise SettingsError(f"{PREFIX}BATCH_MAX: must be at least 1")
        if self.redis_buffer < 1:
            raise SettingsError(f"{PREFIX}REDIS_BUFFER: must be at least 1")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"{PREFIX}REDIS_URL: expected redis://host:port/db, got {self.redis_url!r}"
            )
        if self.batched_restore_min < 1:
            raise SettingsError(f"{PREFIX}BATCHED_RESTORE_MIN: must be at least 1")
        if self.dedup_ids < 0:
            raise SettingsError(f"{PREFIX}DEDUP_IDS: must be 0 (remember every id) or more")
        if not self.broker.startswith(("kafka://", "aiokafka://")):
            raise SettingsError(
                f"{PREFIX}BROKER: expected kafka://host:port[;host:port], got {self.broker!r}"
            )
        self._check_security()

    def _check_security(self) -> None:
        """Security settings that would be ignored or could never connect are errors:
        a SASL user with a PLAINTEXT protocol must not silently connect without it."""
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        protocol = f"{PREFIX}SECURITY_PROTOCOL is {self.security_protocol}"
        password_given = bool(self.sasl_password or self.sasl_password_file)
        sasl_given = [
            f"{PREFIX}{n.upper()}"
            for n in ("sasl_username", "sasl_password", "sasl_password_file")
            if getattr(self, n)
        ]
        if sasl_given and not sasl:
            raise SettingsError(
                f"{', '.join(sasl_given)} set but {protocol}: use SASL_PLAINTEXT or SASL_SSL"
            )
        if sasl and not self.sasl_username:
            raise SettingsError(f"{PREFIX}SASL_USERNAME: required when {protocol}")
        if sasl and not password_given:
            raise SettingsError(
                f"{PREFIX}SASL_PASSWORD (or SASL_PASSWORD_FILE): required when {protocol}"
            )
        if self.sasl_password and self.sasl_password_file:
            raise SettingsError(
                f"{PREFIX}SASL_PASSWORD_FILE: set either it or {PREFIX}SASL_PASSWORD, not both"
            )
        files = ("sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
        for name in files:
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise SettingsError(f"{PREFIX}{name.upper()}: no such file: {path}")
        given = [f"{PREFIX}{n.upper()}" for n in files[1:] if getattr(self, n)]
        if given and not tls:
            raise SettingsError(f"{', '.join(given)} set but {protocol}: use SSL or SASL_SSL")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise SettingsError(f"{PREFIX}SSL_KEYFILE: needs {PREFIX}SSL_CERTFILE too")

    @property
    def window(self) -> Micros | None:
        """The activity window W of DESIGN section 6, None when unbounded."""
        return _duration("activity_window", self.activity_window, allow_none=True)

    @property
    def lateness(self) -> Micros:
        value = _duration("allowed_lateness", self.allowed_lateness, allow_none=False)
        assert value is not None
        return value

    @property
    def policy(self) -> Policy:
        return Policy(dedup_ids=self.dedup_ids, lateness=self.lateness)

    @property
    def bootstrap(self) -> str:
        """host:port list for plain Kafka clients (aiokafka) from Faust's URL form."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(";"))

    @property
    def canonical_url(self) -> str:
        """How other workers reach this one (routing of ``/customers/{id}``)."""
        if self.advertised_url:
            return self.advertised_url
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()  # a container's name on its network
        return f"http://{host}:{self.web_port}"

    @property
    def clock_interval_micros(self) -> int:
        return round(self.clock_interval * SECOND)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``CHURNWATCH_*`` variables, then apply CLI overrides."""
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _convert(item.name, raw, hints[item.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _convert(name: str, raw: str, hint: Any) -> Any:
    env_name = PREFIX + name.upper()
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{env_name}: expected true or false, got {raw!r}")
    try:
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
    except ValueError:
        raise SettingsError(f"{env_name}: expected a number, got {raw!r}") from None
    choices = get_args(hint)
    if choices and raw not in choices:
        raise SettingsError(f"{env_name}: expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def to_env(settings: Settings) -> dict[str, str]:
    """The ``CHURNWATCH_*`` variables that reproduce ``settings`` in a child process."""
    env: dict[str, str] = {}
    for item in fields(settings):
        env[PREFIX + item.name.upper()] = str(getattr(settings, item.name))
    return env
