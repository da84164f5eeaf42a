"""How churnwatch's Kafka clients reach a secured cluster: TLS and SASL from ``Settings``.

One place turns the ``CHURNWATCH_SECURITY_PROTOCOL``/``SASL_*``/``SSL_*`` settings into
what the clients take: keyword arguments for every plain aiokafka client (admin
helpers, producers of ``produce``/``replay``, clock ticks) and Faust's
``broker_credentials``, which Faust hands to its producer and consumer (whose client
also creates the topics), so both kinds of client always agree.

aiokafka reports a refused login or an untrusted certificate only in a log line, then
raises a bare "Unable to bootstrap from [...]" (a Faust worker dies with that
traceback). ``check_access`` connects once, bounded in time, and raises
``KafkaAccessError`` with the cause in one line: commands call it before starting
any client.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import faust
from aiokafka import errors
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.helpers import create_ssl_context
from faust.types.auth import CredentialsT

from streams.settings import PREFIX, Settings, SettingsError

#: Seconds one access check may take: a TLS handshake and a SASL exchange on a
#: reachable broker take milliseconds, so only a wrong port or a black hole gets here.
ACCESS_TIMEOUT: Final = 15.0

#: The settings' security fields, all at their defaults (what ``without_security`` sets).
_PLAINTEXT_FIELDS: Final[dict[str, Any]] = {
    "security_protocol": "PLAINTEXT",
    "sasl_mechanism": "PLAIN",
    "sasl_username": "",
    "sasl_password": "",
    "sasl_password_file": "",
    "ssl_cafile": "",
    "ssl_certfile": "",
    "ssl_keyfile": "",
    "ssl_check_hostname": True,
}


class KafkaAccessError(RuntimeError):
    """The broker cannot be used with these settings; the message says why."""


@dataclass(frozen=True)
class ClientSecurity:
    """What an aiokafka client needs besides the bootstrap servers.

    Invariant: ``ssl_context`` is set exactly when the protocol uses TLS, and the SASL
    fields exactly when it uses SASL (``client_security`` builds only such values)."""

    protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient and create_conn."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            config["ssl_context"] = self.ssl_context
        if self.sasl:
            config.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return config


#: No TLS, no SASL: the embedded brokers, and the default of every helper.
PLAINTEXT: Final = ClientSecurity()


def client_kwargs(security: ClientSecurity | None) -> dict[str, Any]:
    return (security or PLAINTEXT).kwargs()


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    try:
        context = create_ssl_context(
            cafile=settings.ssl_cafile or None,
            certfile=settings.ssl_certfile or None,
            keyfile=settings.ssl_keyfile or None,
        )
    except ssl.SSLError as exc:
        names = "SSL_CAFILE, SSL_CERTFILE, SSL_KEYFILE"
        raise SettingsError(f"{PREFIX}{{{names}}}: cannot be loaded: {exc}") from None
    # The chain is always verified (CERT_REQUIRED); only the name check can be turned
    # off, for brokers reached by an address their certificate does not name.
    context.check_hostname = settings.ssl_check_hostname
    return context


def _password(settings: Settings) -> str:
    if not settings.sasl_password_file:
        return settings.sasl_password
    try:
        text = Path(settings.sasl_password_file).read_text()
    except OSError as exc:
        raise SettingsError(f"{PREFIX}SASL_PASSWORD_FILE: {exc}") from None
    # A secret file usually ends with a newline the password does not contain.
    return text.rstrip("\r\n")


def client_security(settings: Settings) -> ClientSecurity:
    """The clients' security from settings; raises ``SettingsError`` for unreadable
    certificates, keys or password files (the settings already checked they exist)."""
    protocol = settings.security_protocol
    context = _ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if not protocol.startswith("SASL_"):
        return ClientSecurity(protocol, context) if context else PLAINTEXT
    return ClientSecurity(
        protocol, context, settings.sasl_mechanism, settings.sasl_username, _password(settings)
    )


def broker_credentials(security: ClientSecurity) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the same security (None: plaintext).

    faust-streaming 0.15's ``SASLCredentials`` takes PLAIN and both SCRAM mechanisms
    and picks SASL_SSL exactly when given an SSL context; ``credentials_to_aiokafka_auth``
    passes them to the producer and both consumers unchanged, so nothing is patched."""
    if security.sasl:
        credentials: CredentialsT = faust.SASLCredentials(
            username=security.username,
            password=security.password,
            ssl_context=security.ssl_context,
            mechanism=security.sasl_mechanism,
        )
        return credentials
    if security.ssl_context is not None:
        return faust.SSLCredentials(security.ssl_context)
    return None


def without_security(settings: Settings) -> Settings:
    """``settings`` for an embedded (plaintext, local) broker: no TLS, no SASL."""
    return settings.replace(**_PLAINTEXT_FIELDS)


def explain(exc: BaseException, security: ClientSecurity) -> str:
    """One line naming why a connection failed, and which setting to look at."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed: {exc.verify_message} "
            f"(check {PREFIX}SSL_CAFILE and {PREFIX}SSL_CHECK_HOSTNAME)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc} (is the listener {security.protocol}?)"
    if isinstance(exc, errors.SaslAuthenticationFailed | errors.AuthenticationFailedError):
        detail = exc.args[0] if exc.args else exc
        return (
            f"SASL authentication failed for user {security.username!r} with "
            f"{security.sasl_mechanism}: {detail} "
            f"(check {PREFIX}SASL_USERNAME, SASL_PASSWORD and SASL_MECHANISM)"
        )
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"SASL mechanism {security.sasl_mechanism} refused by the broker: {exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer (is the listener {security.protocol}?)"
    if isinstance(exc, errors.KafkaConnectionError | ConnectionResetError):
        # A TLS listener resets a plaintext hello; a plaintext one closes on a TLS
        # hello; a listener requiring client certificates closes when none came.
        return (
            f"the broker closed the connection during the handshake (is the listener "
            f"{security.protocol}? does it require a client certificate?)"
        )
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


async def check_access(
    bootstrap: str, security: ClientSecurity, timeout: float = ACCESS_TIMEOUT
) -> None:
    """Connect, handshake and authenticate to the bootstrap servers as aiokafka would.

    Passes at the first server that accepts (as aiokafka's bootstrap does); raises
    ``KafkaAccessError`` naming every server's cause otherwise. Bounded by ``timeout``
    per server, so a wrong listener cannot stall a command."""
    causes = []
    for host, port, _ in collect_hosts(bootstrap, randomize=False):
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, port, request_timeout_ms=int(timeout * 1000), **security.kwargs()
                ),
                timeout,
            )
        except (TimeoutError, OSError, errors.KafkaError) as exc:
            causes.append(f"{host}:{port}: {explain(exc, security)}")
            continue
        conn.close()
        return
    raise KafkaAccessError(f"cannot use Kafka over {security.protocol}: " + "; ".join(causes))
