"""A ``rediss://`` broker URL with a password, end to end.

A private TLS-only Redis (``redis-server`` from PATH, plain port disabled) presents a certificate
from a throw-away CA made with the ``openssl`` CLI. A real ``callboard worker`` and this process
as a producer both reach it through ``rediss://:<password>@...?ssl_cert_reqs=required&ssl_ca_certs=``,
and ``callboard send`` with a wrong password fails with one clear line.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from dramatiq import Broker

from service import send
from tests.conftest import unavailable
from tests.integration.conftest import StartWorker
from tests.support.processes import run_callboard
from tests.support.producer import producing_on
from tests.support.records import entries
from tests.support.waiting import wait_until

#: Extensions of the throw-away CA and server certificates: what strict verifiers (Python 3.13's
#: VERIFY_X509_STRICT, OpenSSL 3) require, with the server reachable as 127.0.0.1 or localhost.
CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsRedis:
    """A running TLS-only Redis server that requires ``password``."""

    port: int
    password: str
    ca: Path
    log: Path

    def url(self, password: str | None = None) -> str:
        """The ``rediss://`` URL of database 0, verifying the server against the throw-away CA."""
        secret = quote(self.password if password is None else password, safe="")
        query = f"ssl_cert_reqs=required&ssl_ca_certs={quote(str(self.ca))}"
        return f"rediss://:{secret}@127.0.0.1:{self.port}/0?{query}"


def _openssl(command: str, cwd: Path) -> None:
    """Run ``openssl COMMAND`` (split like a shell would) in ``cwd``; fail the test on an error."""
    result = subprocess.run(
        ["openssl", *shlex.split(command)], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"openssl {command} failed ({result.returncode}): {result.stderr}")


def make_certificates(directory: Path) -> Certificates:
    """A throw-away CA and a server certificate it signed for 127.0.0.1, as PEM files."""
    if shutil.which("openssl") is None:
        unavailable("the openssl command is not installed (needed to make test certificates)")
    (directory / "ca.ext").write_text(CA_EXTENSIONS)
    (directory / "server.ext").write_text(SERVER_EXTENSIONS)
    new_key = "req -new -newkey rsa:2048 -nodes"
    _openssl(f"{new_key} -keyout ca.key -out ca.csr -subj '/CN=Callboard test CA'", directory)
    _openssl("x509 -req -in ca.csr -signkey ca.key -days 2 -extfile ca.ext -out ca.pem", directory)
    _openssl(f"{new_key} -keyout server.key -out server.csr -subj /CN=127.0.0.1", directory)
    _openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 -extfile server.ext"
        " -out server.pem",
        directory,
    )
    return Certificates(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _lacks_tls(output: str) -> bool:
    """Whether redis-server's output says it was built without TLS (so ``--tls-port`` fails).

    Redis 6 without TLS rejects the directive (``'tls-port ...' Bad directive``); builds that know
    the directive but lack the support say so (``not built with TLS support``).
    """
    text = output.lower()
    return ("bad directive" in text and "tls-port" in text) or "tls support" in text


def _state(process: subprocess.Popen[bytes], server: TlsRedis) -> str | None:
    """``"exited"``, ``"ready"`` (answers PING over TLS with the password) or None (not yet)."""
    if process.poll() is not None:
        return "exited"
    client = redis.Redis.from_url(server.url(), socket_connect_timeout=1, socket_timeout=1)
    try:
        return "ready" if client.ping() else None
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    finally:
        client.close()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A private TLS-only ``redis-server`` with a password; stopped by its pid at teardown."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not on PATH (needed for the TLS test)")
    assert binary is not None
    directory = tmp_path_factory.mktemp("tls-redis")
    certificates = make_certificates(directory)
    server = TlsRedis(
        port=_free_port(), password=f"pw-{uuid.uuid4().hex}", ca=certificates.ca, log=directory / "redis.log"
    )
    command = [
        binary,
        "--port", "0",
        "--tls-port", str(server.port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(certificates.cert),
        "--tls-key-file", str(certificates.key),
        "--tls-ca-cert-file", str(certificates.ca),
        "--tls-auth-clients", "no",
        "--requirepass", server.password,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    with server.log.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    try:
        state = wait_until(
            lambda: _state(process, server), timeout=30, message=f"redis-server on TLS port {server.port}"
        )
        if state == "exited":
            output = server.log.read_text(errors="replace")
            if _lacks_tls(output):
                unavailable(f"{binary} has no TLS support: {' '.join(output.split()[-12:])}")
            pytest.fail(f"redis-server exited with {process.returncode} before it was ready:\n{output}")
        yield server
    finally:
        if process.poll() is None:
            process.terminate()  # this server only, by its pid
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture
def tls_producer(
    tls_redis: TlsRedis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    """This process as a producer on the TLS Redis (``producer`` of tests/conftest.py, other URL)."""
    with producing_on(tls_redis.url(), redis_url, tmp_path / "var", monkeypatch) as broker:
        yield broker


def test_worker_and_producer_run_a_message_over_rediss_with_a_password(
    tls_redis: TlsRedis, tls_producer: Broker, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    # Given a Redis that speaks TLS only (a plain connection to its port gets nowhere)
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, password=tls_redis.password, socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()
    # And a worker on its rediss:// URL, verifying the certificate and authenticating
    # (the test actors still record to the plain test Redis, CALLBOARD_TEST_RECORD_URL)
    start_worker(CALLBOARD_BROKER_URL=tls_redis.url())
    # When this process sends a message over the same URL
    message_id = send("tb_record", ["tls", 7])
    # Then the worker runs it
    done = wait_until(lambda: entries("tls", "done"), timeout=30, message="the message sent over TLS")
    assert [entry["n"] for entry in done] == [7]
    # And it travelled through the TLS Redis, not the plain one: there it is acked and gone, and the
    # plain test Redis holds no broker keys at all
    from tests.support.actors import QUEUE

    tls = redis.Redis.from_url(tls_redis.url())
    wait_until(lambda: not tls.hexists(f"dramatiq:{QUEUE}.msgs", message_id), message="the ack over TLS")
    assert tls.llen(f"dramatiq:{QUEUE}") == 0
    tls.close()
    assert redis_client.keys("dramatiq:*") == []


def test_send_with_a_wrong_password_fails_with_one_clear_line(tls_redis: TlsRedis, tmp_path: Path) -> None:
    # Given the TLS Redis's URL with a wrong password
    wrong = "not-the-password"
    env = {
        "CALLBOARD_BROKER_URL": tls_redis.url(password=wrong),
        "CALLBOARD_ACTOR_MODULES": "tests.support.actors",
        "CALLBOARD_DATA_DIR": str(tmp_path / "var"),
    }
    # When `callboard send` tries to enqueue a valid message
    result = run_callboard("send", "tb_record", "--args", '["wrong-password"]', env=env)
    # Then it fails with exit code 1 and one line on stderr that says why, without a traceback
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("callboard: "), lines
    assert "password" in lines[0].lower(), lines
    # And neither password is echoed back
    assert wrong not in result.stderr and tls_redis.password not in result.stderr
