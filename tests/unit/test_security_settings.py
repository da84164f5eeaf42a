"""TLS and SASL settings: validation naming the variable, the aiokafka keyword
arguments and Faust credentials built from them (which must agree), and the bounded
access check's one-line causes, against local sockets (no broker)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from typer.testing import CliRunner

from streams.app import faust_config
from streams.broker import BrokerError
from streams.cli import app as cli
from streams.kafka_local import SecureListener, _server_properties
from streams.security import (
    KafkaAccessError,
    broker_credentials,
    check_access,
    client_kwargs,
    client_security,
    without_security,
)
from streams.settings import Settings, SettingsError, to_env

SASL_ENV = {
    "CHURNWATCH_SECURITY_PROTOCOL": "SASL_SSL",
    "CHURNWATCH_SASL_MECHANISM": "SCRAM-SHA-512",
    "CHURNWATCH_SASL_USERNAME": "alice",
    "CHURNWATCH_SASL_PASSWORD": "secret",
}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({"CHURNWATCH_SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL", "expected one of PLAIN"),
        ({**SASL_ENV, "CHURNWATCH_SASL_MECHANISM": "GSSAPI"}, "SASL_MECHANISM", "SCRAM-SHA-512"),
        ({**SASL_ENV, "CHURNWATCH_SASL_USERNAME": ""}, "SASL_USERNAME", "required when"),
        ({**SASL_ENV, "CHURNWATCH_SASL_PASSWORD": ""}, "SASL_PASSWORD", "required when"),
        ({"CHURNWATCH_SASL_USERNAME": "alice"}, "SASL_USERNAME", "is PLAINTEXT"),
        ({"CHURNWATCH_SASL_PASSWORD": "x"}, "SASL_PASSWORD", "use SASL_PLAINTEXT or SASL_SSL"),
        ({**SASL_ENV, "CHURNWATCH_SASL_PASSWORD_FILE": "/x"}, "SASL_PASSWORD_FILE", "not both"),
        ({**SASL_ENV, "CHURNWATCH_SSL_CAFILE": "/nonexistent.pem"}, "SSL_CAFILE", "no such file"),
        (
            {"CHURNWATCH_SECURITY_PROTOCOL": "SSL", "CHURNWATCH_SSL_CHECK_HOSTNAME": "maybe"},
            "SSL_CHECK_HOSTNAME",
            "expected true or false",
        ),
    ],
)
def test_bad_security_settings_name_the_variable(
    env: dict[str, str], variable: str, message: str
) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert f"CHURNWATCH_{variable}" in str(error.value)
    assert message in str(error.value)


def test_tls_files_need_a_tls_protocol_and_a_key_needs_its_certificate(cafile: str) -> None:
    with pytest.raises(SettingsError, match=r"CHURNWATCH_SSL_CAFILE set but .* SASL_PLAINTEXT"):
        Settings.from_env({**SASL_ENV, "CHURNWATCH_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "CHURNWATCH_SSL_CAFILE": cafile})  # fmt: skip
    with pytest.raises(SettingsError, match="CHURNWATCH_SSL_KEYFILE: needs CHURNWATCH_SSL_CERT"):
        Settings.from_env({**SASL_ENV, "CHURNWATCH_SSL_KEYFILE": cafile})


def test_security_round_trips_through_the_environment_and_hides_the_password(
    cafile: str,
) -> None:
    settings = Settings.from_env(
        {**SASL_ENV, "CHURNWATCH_SSL_CAFILE": cafile, "CHURNWATCH_SSL_CHECK_HOSTNAME": "false"}
    )
    assert settings.ssl_check_hostname is False
    assert Settings.from_env(to_env(settings)) == settings
    assert "secret" not in repr(settings)


def test_plaintext_is_the_default_for_every_client() -> None:
    security = client_security(Settings())
    assert security.kwargs() == client_kwargs(None) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(security) is None
    assert "broker_credentials" not in faust_config(Settings())


def test_sasl_ssl_kwargs(cafile: str) -> None:
    settings = Settings.from_env({**SASL_ENV, "CHURNWATCH_SSL_CAFILE": cafile})
    kwargs = client_security(settings).kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "secret",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1  # the given CA, not the system's


def test_hostname_check_can_be_turned_off_but_never_verification(cafile: str) -> None:
    settings = Settings(security_protocol="SSL", ssl_cafile=cafile, ssl_check_hostname=False)
    security = client_security(settings)
    assert security.ssl_context is not None
    assert not security.ssl_context.check_hostname
    assert security.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert not security.sasl and "sasl_mechanism" not in security.kwargs()


def test_sasl_plaintext_has_no_tls() -> None:
    env = {**SASL_ENV, "CHURNWATCH_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    kwargs = client_security(Settings.from_env(env)).kwargs()
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in kwargs


def test_client_certificate_and_password_file(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("client")
    cert, key, secret = tmp_path / "c.pem", tmp_path / "c.key", tmp_path / "password"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    secret.write_text("pass word \n")  # a mounted secret's trailing newline is not in it
    env = {**SASL_ENV, "CHURNWATCH_SASL_PASSWORD": "", "CHURNWATCH_SASL_PASSWORD_FILE": str(secret),
           "CHURNWATCH_SSL_CERTFILE": str(cert), "CHURNWATCH_SSL_KEYFILE": str(key)}  # fmt: skip
    security = client_security(Settings.from_env(env))
    assert security.password == "pass word "
    with pytest.raises(SettingsError, match=r"CHURNWATCH_.*SSL_KEYFILE.*cannot be loaded"):
        client_security(Settings.from_env({**env, "CHURNWATCH_SSL_KEYFILE": str(secret)}))


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_faust_credentials_give_the_same_client_settings(
    protocol: str, mechanism: str, cafile: str
) -> None:
    """What Faust's driver derives from broker_credentials (credentials_to_aiokafka_auth,
    used for its producer and consumers) equals churnwatch's own clients' kwargs."""
    sasl = protocol.startswith("SASL_")
    settings = Settings(
        security_protocol=protocol,  # type: ignore[arg-type]
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="alice" if sasl else "",
        sasl_password="secret" if sasl else "",
        ssl_cafile=cafile if protocol != "SASL_PLAINTEXT" else "",
    )
    security = client_security(settings)
    faust_side = dict(credentials_to_aiokafka_auth(broker_credentials(security)))
    ours = security.kwargs()
    if not sasl:  # Faust's SSL form carries no SASL keys at all
        assert set(faust_side) == {"security_protocol", "ssl_context"}
    faust_side = {k: v for k, v in faust_side.items() if k in ours or v is not None}
    assert faust_side == ours
    assert faust_config(settings)["broker_credentials"] is not None


def test_without_security_is_plaintext_and_valid(cafile: str) -> None:
    settings = Settings.from_env({**SASL_ENV, "CHURNWATCH_SSL_CAFILE": cafile})
    plain = without_security(settings)
    assert client_security(plain).kwargs() == {"security_protocol": "PLAINTEXT"}
    assert plain.replace() == plain  # still passes validation
    assert plain.sasl_password == "" and plain.ssl_cafile == ""


@asynccontextmanager
async def tls_server(ca: trustme.CA, *, silent: bool = False) -> AsyncIterator[int]:
    """A TLS server on a free port with a certificate of ``ca`` for 127.0.0.1; with
    ``silent`` a plain TCP server that accepts and never answers."""
    context = None
    if not silent:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def ssl_settings(port: int, cafile: str, **changes: Any) -> Settings:
    return Settings(broker=f"kafka://127.0.0.1:{port}", security_protocol="SSL",
                    ssl_cafile=cafile, **changes)  # fmt: skip


async def access_error(settings: Settings, timeout: float = 5.0) -> tuple[str, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(KafkaAccessError) as error:
        await check_access(settings.bootstrap, client_security(settings), timeout=timeout)
    return str(error.value), loop.time() - started


async def test_untrusted_certificate_is_named(cafile: str, tmp_path: Path) -> None:
    async with tls_server(trustme.CA()) as port:  # signed by a CA the client does not know
        message, _ = await access_error(ssl_settings(port, cafile))
    assert "TLS certificate verification failed" in message
    assert "CHURNWATCH_SSL_CAFILE" in message and f"127.0.0.1:{port}" in message


async def test_hostname_mismatch_is_named_and_can_be_allowed(ca: trustme.CA, cafile: str) -> None:
    async with tls_server(ca) as port:
        settings = ssl_settings(port, cafile).replace(broker=f"kafka://localhost:{port}")
        message, _ = await access_error(settings)
        assert "TLS certificate verification failed: Hostname mismatch" in message
        # Past the handshake the test server says nothing: "no answer" within the bound.
        lax = settings.replace(ssl_check_hostname=False)
        message, elapsed = await access_error(lax, timeout=0.5)
    assert "no answer" in message and elapsed < 3


async def test_a_silent_listener_cannot_stall_the_check(cafile: str) -> None:
    async with tls_server(trustme.CA(), silent=True) as port:
        message, elapsed = await access_error(ssl_settings(port, cafile), timeout=0.5)
    assert "no answer (is the listener SSL?)" in message
    assert elapsed < 3


async def test_closed_port_is_named(cafile: str) -> None:
    port = closed_port()
    message, _ = await access_error(ssl_settings(port, cafile))
    assert f"127.0.0.1:{port}: cannot connect: Connect call failed" in message


def test_cli_command_fails_in_one_line_without_a_traceback(cafile: str) -> None:
    port = closed_port()
    env = {"CHURNWATCH_SECURITY_PROTOCOL": "SSL", "CHURNWATCH_SSL_CAFILE": cafile,
           "CHURNWATCH_BROKER": f"kafka://127.0.0.1:{port}"}  # fmt: skip
    result = CliRunner().invoke(cli, ["worker"], env=env)
    assert result.exit_code == 1, result.output
    assert f"cannot use Kafka over SSL: 127.0.0.1:{port}: cannot connect" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    bad = CliRunner().invoke(cli, ["worker"], env={**env, "CHURNWATCH_SASL_USERNAME": "a"})
    assert bad.exit_code == 2 and "configuration error" in bad.output


def pem(ca: trustme.CA, tmp_path: Path, convert: Callable[[bytes], bytes]) -> Path:
    leaf = ca.issue_cert("127.0.0.1")
    path = tmp_path / "keystore.pem"
    path.write_bytes(convert(leaf.private_key_pem.bytes()) + leaf.cert_chain_pems[0].bytes())
    return path


def test_secure_listener_checks_its_key_store_and_users(ca: trustme.CA, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization as s

    def pkcs8(key: bytes) -> bytes:
        loaded = s.load_pem_private_key(key, None)
        return loaded.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())

    traditional = SecureListener(pem(ca, tmp_path, lambda key: key), {"alice": "secret"})
    with pytest.raises(BrokerError, match="PKCS#8"):
        traditional.check()
    good = SecureListener(pem(ca, tmp_path, pkcs8), {"alice": "secret"}, client_ca=tmp_path)
    good.check()
    with pytest.raises(BrokerError, match="must not contain"):
        SecureListener(good.keystore_pem, {"alice": "a,b"}).check()
    properties = _server_properties(1, 2, tmp_path, good)
    assert f"SASL_SSL://127.0.0.1:{good.port}" in properties
    assert "listener.name.sasl_ssl.ssl.client.auth=required" in properties
    assert 'user_alice="secret"' in properties
