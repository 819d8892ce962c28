"""Security: nothing from Redis is unpickled, AUTH through the URL, secrets never in logs or
errors, operator regexes cannot hang anything, and the relay's TLS certificate is verified."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from aiosmtpd.controller import Controller
from rq import Callback, Queue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink, free_port
from drain.errors import ConfigError
from drain.intake.api import Client
from drain.intake.rules import Rule
from drain.message import Envelope
from drain.observe.deferred import records
from drain.settings import Settings
from drain.store import keys
from drain.store.connection import redacted
from tests.chaos_kit import RedisProc, one_line
from tests.chaos_kit import run_drain as drain
from tests.conftest import wait_for
from tests.test_ingress import self_signed

REDIS_SECRET = "redis-Secret-4711"
RELAY_SECRET = "relay-Secret-0815"
SMTPD_SECRET = "smtpd-Secret-2342"


class Planted:
    """Unpickling this creates a file: proof that a payload was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


# -- nothing read from Redis is unpickled ---------------------------------------------------


def test_planted_pickle_job_is_refused_without_running(client: Client, rclient: redis.Redis, relay: Sink,
                                                       work: Callable[..., bool], tmp_path: Path) -> None:
    proof = tmp_path / "unpickled"
    client.enqueue_many([synthetic(i) for i in range(5)])
    # A job in drain's queue as a pickling RQ would write it, its data swapped for the payload.
    job = Queue(keys.RQ_QUEUE, connection=rclient).enqueue("workers.jobs.deliver_batch")
    rclient.hset(job.key, "data", zlib.compress(pickle.dumps(Planted(proof))))
    work()
    assert not proof.exists()
    books = client.store.books()
    assert books.delivered == 5 and books.queued == 0  # the real jobs ran all the same


TRACES: list[tuple[object, ...]] = []


def leave_a_trace(*args: object) -> None:
    """A harmless importable function: if a worker (in this process) ever calls it, TRACES shows it."""
    TRACES.append(args)


def test_a_job_for_any_other_function_is_refused_without_calling_it(
        client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool], tmp_path: Path) -> None:
    client.enqueue_many([synthetic(i) for i in range(5)])
    queue = Queue(keys.RQ_QUEUE, connection=rclient, serializer=JSONSerializer)
    # Jobs as anyone with write access to Redis could push them: plain JSON, any dotted path.
    TRACES.clear()
    traced = queue.enqueue(f"{__name__}.leave_a_trace", "called as a job")
    shell = queue.enqueue("os.system", f"touch {tmp_path / 'pwned'}")
    # The right name, but with callbacks that would be imported and called on failure.
    sneaky = queue.enqueue("workers.jobs.deliver_batch", on_failure=Callback(f"{__name__}.leave_a_trace"))
    rclient.hset(sneaky.key, "data", json.dumps(["workers.jobs.deliver_batch", "an instance", [], {}]))

    work()

    assert TRACES == [] and not (tmp_path / "pwned").exists()
    failed = FailedJobRegistry(queue=queue).get_job_ids()
    for job in (traced, shell, sneaky):
        job.refresh()
        assert job.get_status() == JobStatus.FAILED and job.id in failed
        assert "refused by drain" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert rclient.llen(queue.intermediate_queue_key) == 0
    books = client.store.books()
    assert books.delivered == 5 and books.queued == 0  # drain's own jobs ran all the same


def test_planted_pickle_in_a_message_is_refused(client: Client, rclient: redis.Redis, relay: Sink,
                                                work: Callable[..., bool], tmp_path: Path) -> None:
    proof = tmp_path / "unpickled"
    ids = client.enqueue_many([synthetic(i) for i in range(4)]).ids
    rclient.hset(keys.message(ids[1]), "env", pickle.dumps(Planted(proof)))
    work()
    assert not proof.exists()
    books = client.store.books()
    # The planted message is quarantined as store.corrupt (its raw bytes kept, never unpickled);
    # its batch-mates are delivered.
    assert (books.delivered, books.quarantined, books.queued) == (3, 1, 0)
    assert b"store.corrupt" in (rclient.hget(keys.message(ids[1]), "why") or b"")
    with pytest.raises(Exception, match="not valid"):
        Envelope.from_json(pickle.dumps(Planted(proof)))
    assert not proof.exists()


def test_no_pickle_anywhere_in_drain() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("drain/**/*.py"), *root.glob("workers/**/*.py")]:
        text = path.read_text()
        assert "import pickle" not in text and "pickle.loads" not in text, path


# -- AUTH through the URL; secrets never shown -------------------------------------------------


@pytest.fixture
def locked_redis(tmp_path: Path) -> RedisProc:
    server = RedisProc(tmp_path / "locked", "--requirepass", REDIS_SECRET).start(password=REDIS_SECRET)
    yield server
    server.stop()


def test_auth_through_the_url(locked_redis: RedisProc, relay: Sink) -> None:
    url = f"redis://:{REDIS_SECRET}@127.0.0.1:{locked_redis.port}/0"
    api = Client.connect(Settings(redis_url=url, relay=relay.url))
    api.enqueue(synthetic(1))
    assert api.store.books().accepted == 1
    assert REDIS_SECRET not in redacted(url) and "***" in redacted(url)
    assert REDIS_SECRET not in repr(api.settings)

    for bad in (f"redis://:wrong-{REDIS_SECRET}@127.0.0.1:{locked_redis.port}/0",
                f"redis://127.0.0.1:{locked_redis.port}/0"):
        result = drain({"DRAIN_REDIS_URL": bad}, "status", "--json")
        assert result.returncode == 1 and result.stdout == b""
        err = one_line(result)
        assert REDIS_SECRET not in err
        assert "credentials" in err or "password" in err


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_never_in_worker_logs_or_errors(locked_redis: RedisProc, relay: Sink, log_format: str) -> None:
    url = f"redis://:{REDIS_SECRET}@127.0.0.1:{locked_redis.port}/0"
    api = Client.connect(Settings(redis_url=url, relay=relay.url))
    api.enqueue_many([synthetic(i) for i in range(3)])
    # The sink offers no AUTH: the login fails, and mail is deferred with the relay's reply.
    env = {"DRAIN_REDIS_URL": url, "DRAIN_RELAY": f"smtp://mailer:{RELAY_SECRET}@127.0.0.1:{relay.port}",
           "DRAIN_SMTPD_AUTH_USER": "app", "DRAIN_SMTPD_AUTH_PASSWORD": SMTPD_SECRET,
           "DRAIN_LEASE_TTL": "1", "DRAIN_LOG_FORMAT": log_format}
    worker = drain(env, "worker", "--burst", "--log-level", "DEBUG")
    assert worker.returncode == 0, worker.stderr.decode()[-2000:]
    assert api.store.books().deferred == 3
    replies = " ".join(r.last_reply for r in records(api.store))
    errors = [drain({**env, "DRAIN_REDIS_URL": url.replace(REDIS_SECRET, REDIS_SECRET + "x")}, "status"),
              drain({**env, "DRAIN_RELAY": f"smtp://mailer:{RELAY_SECRET}@127.0.0.1:notaport"}, "worker", "--burst"),
              drain({**env, "DRAIN_REDIS_URL": f"http://:{REDIS_SECRET}@127.0.0.1:1/0"}, "status")]
    for text in [worker.stderr.decode(), worker.stdout.decode(), replies,
                 *(e.stderr.decode() + e.stdout.decode() for e in errors)]:
        for secret in (REDIS_SECRET, RELAY_SECRET, SMTPD_SECRET):
            assert secret not in text
    assert all(e.returncode != 0 for e in errors)
    assert "DEBUG" in worker.stderr.decode()  # the check ran against verbose logs
    if log_format == "json":  # ...in the format asked for
        assert '"level": "DEBUG"' in worker.stderr.decode()


# -- operator regexes cannot hang ---------------------------------------------------------------


def test_pathological_rule_pattern_cannot_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's re would take longer than the universe's age on this; RE2 is linear. Counted,
    # not timed: the operator's pattern never reaches Python's backtracking engine.
    import re

    compile_re = re._compile  # what re.compile, re.search... all go through
    given_to_re: list[str] = []

    def watched(pattern: object, flags: object) -> object:
        if isinstance(pattern, str) and "(a+)+" in pattern:
            given_to_re.append(pattern)
            raise AssertionError("an operator pattern reached Python's re")
        return compile_re(pattern, flags)

    monkeypatch.setattr(re, "_compile", watched)
    rule = Rule(id="1", header="Subject", pattern="(a+)+$")
    raw = b"From: a@example.com\nTo: b@example.org\nSubject: " + b"a" * 4000 + b"!\n\nbody\n"
    for _ in range(100):
        assert not rule.matches(raw, Envelope("a@example.com", ("b@example.org",)))
    assert given_to_re == []
    assert Rule(id="2", header="Subject", pattern="^A+!$").matches(raw, Envelope("a@example.com", ("b@x.org",)))


def test_patterns_that_need_backtracking_are_refused(client: Client, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="RE2"):
        Rule(id="1", header="Subject", pattern=r"(a)\1")
    result = drain({"DRAIN_REDIS_URL": settings.redis_url or "", "DRAIN_RELAY": settings.relay},
                   "quarantine", "rule", "add", "--header", r"Subject: (?=x)y")
    assert result.returncode == 2
    one_line(result)
    assert client.redis.hlen(keys.RULES) == 0


def test_a_stored_rule_drain_cannot_use_does_not_stop_the_workers(client: Client, relay: Sink,
                                                                  work: Callable[..., bool]) -> None:
    client.redis.hset(keys.RULES, "9", b'{"id": "9", "header": "Subject", "pattern": "(a)\\\\1"}')
    client.redis.hset(keys.RULES, "10", b"\x80\x04garbage")
    client.enqueue_many([synthetic(i) for i in range(3)])
    work()
    assert client.store.books().delivered == 3


# -- the relay's TLS is verified by default ------------------------------------------------------


@pytest.fixture
def tls_relay(tmp_path: Path) -> tuple[Sink, Path]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = Sink(keep=True)
    sink.controller = Controller(sink.handler, hostname="127.0.0.1", port=sink.port, ssl_context=context,
                                 server_hostname="sink.drain.test", ready_timeout=10)
    with sink:
        yield sink, cert


def test_relay_with_an_unverifiable_certificate_is_refused(client: Client, tls_relay: tuple[Sink, Path],
                                                           work: Callable[..., bool]) -> None:
    sink, cert = tls_relay
    url = f"smtps://127.0.0.1:{sink.port}"
    client.enqueue_many([synthetic(i) for i in range(2)])
    work(relay=url, breaker_failures=1000)
    assert client.store.books().deferred == 2 and not sink.messages
    assert all("CERTIFICATE_VERIFY_FAILED" in r.last_reply for r in records(client.store))

    client.store.promote_due(now=10**10)
    work(relay=url, relay_ca_file=cert)  # trusted through a CA file: verified, and delivered
    assert client.store.books().delivered == 2

    client.enqueue(synthetic(3))
    work(relay=url, relay_tls_verify=False)  # verification off, on purpose
    assert client.store.books().delivered == 3 and len(sink.messages) == 3


@pytest.fixture
def starttls_relay(tmp_path: Path) -> Iterator[tuple[Sink, Path]]:
    """A relay that speaks plain SMTP first and refuses mail until STARTTLS (self-signed cert)."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = Sink(keep=True)
    sink.controller = Controller(sink.handler, hostname="127.0.0.1", port=sink.port, tls_context=context,
                                 require_starttls=True, server_hostname="sink.drain.test", ready_timeout=10)
    with sink:
        yield sink, cert


def test_relay_starttls_is_verified_against_the_ca_file(client: Client, starttls_relay: tuple[Sink, Path],
                                                        work: Callable[..., bool]) -> None:
    sink, cert = starttls_relay
    url = f"smtp+starttls://127.0.0.1:{sink.port}"
    client.enqueue_many([synthetic(i) for i in range(2)])
    work(relay=url, breaker_failures=1000)  # the self-signed certificate is not trusted
    assert client.store.books().deferred == 2 and not sink.messages
    assert all("CERTIFICATE_VERIFY_FAILED" in r.last_reply for r in records(client.store))

    client.store.promote_due(now=10**10)
    env = Settings.from_env({"DRAIN_RELAY": url, "DRAIN_RELAY_CA_FILE": str(cert)})
    assert env.relay_ca_file == cert
    work(relay=url, relay_ca_file=env.relay_ca_file)  # trusted through DRAIN_RELAY_CA_FILE
    # The relay takes mail only after STARTTLS, so delivered means it went over TLS.
    assert client.store.books().delivered == 2 and len(sink.messages) == 2


def test_relay_tls_settings_from_env(tmp_path: Path) -> None:
    assert Settings.from_env({}).relay_tls_verify is True
    assert Settings.from_env({"DRAIN_RELAY_TLS_VERIFY": "false"}).relay_tls_verify is False
    with pytest.raises(ConfigError, match="DRAIN_RELAY_CA_FILE"):
        Settings.from_env({"DRAIN_RELAY_CA_FILE": str(tmp_path / "missing.pem")})


# -- Redis over TLS (rediss://): through a TLS proxy, as the embedded Redis is built without TLS --


class TlsProxy:
    """Terminates TLS on a free port and forwards the bytes to a plain Redis port."""

    def __init__(self, cert: Path, key: Path, target: int) -> None:
        import socket
        import threading

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import socket
        import threading

        while True:
            try:
                raw, _addr = self.listener.accept()
            except OSError:
                return
            try:
                tls = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()  # the client refused our certificate
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((tls, upstream), (upstream, tls)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: ssl.SSLSocket | object, dst: object) -> None:
        try:
            while data := src.recv(65536):  # type: ignore[attr-defined]
                dst.sendall(data)  # type: ignore[attr-defined]
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.listener.close()


def test_redis_over_tls_is_verified(redis_server: int, tmp_path: Path, settings: Settings) -> None:
    cert, key = self_signed(tmp_path)
    proxy = TlsProxy(cert, key, redis_server)
    try:
        trusted = f"rediss://127.0.0.1:{proxy.port}/0?ssl_ca_certs={cert}"
        api = Client.connect(settings.with_(redis_url=trusted))
        assert api.redis.ping()
        result = drain({"DRAIN_REDIS_URL": f"rediss://127.0.0.1:{proxy.port}/0"}, "status", "--json")
        assert result.returncode == 1
        assert "certificate verify failed" in one_line(result).lower()
    finally:
        proxy.close()


def _forms(user: str, secret: str) -> list[str]:
    """The secret as it could leak: plain, and base64 as AUTH LOGIN and AUTH PLAIN send it."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return [secret, b64(secret.encode()), b64(f"\0{user}\0{secret}".encode()),
            b64(f"{user}\0{user}\0{secret}".encode())]


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_relay_password_never_logged_with_auth_login_or_plain(locked_redis: RedisProc, tmp_path: Path,
                                                              mechanism: str) -> None:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[str, str]] = []

    def check(_server: object, _session: object, _envelope: object, used: str, data: object) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((used, data.password.decode()))
        return AuthResult(success=data.password.decode() == RELAY_SECRET)

    sink = Sink(keep=True)
    others = [m for m in ("LOGIN", "PLAIN") if m != mechanism]
    sink.controller = Controller(sink.handler, hostname="127.0.0.1", port=sink.port, authenticator=check,
                                 auth_require_tls=False, auth_exclude_mechanism=others,
                                 server_hostname="sink.drain.test", ready_timeout=10)
    url = f"redis://:{REDIS_SECRET}@127.0.0.1:{locked_redis.port}/0"
    with sink:
        api = Client.connect(Settings(redis_url=url, relay=sink.url))
        api.redis.flushdb()
        api.enqueue_many([synthetic(i) for i in range(2)])
        env = {"DRAIN_REDIS_URL": url, "DRAIN_RELAY": f"smtp://mailer:{RELAY_SECRET}@127.0.0.1:{sink.port}"}
        worker = drain(env, "worker", "--burst", "--log-level", "DEBUG")
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
        assert api.store.books().delivered == 2 and len(sink.messages) == 2
    assert logins and {m for m, _p in logins} == {mechanism} and all(p == RELAY_SECRET for _m, p in logins)
    text = worker.stderr.decode() + worker.stdout.decode()
    assert "DEBUG" in text
    leaked = [form for secret in (REDIS_SECRET, RELAY_SECRET) for form in _forms("mailer", secret) if form in text]
    assert leaked == []


def test_smtpd_process_logs_no_auth_secret(settings: Settings, rclient: redis.Redis) -> None:
    """`drain smtpd` with AUTH, logging at DEBUG; clients log in with PLAIN and LOGIN, good and
    bad passwords; its own standard error holds neither password in any form."""
    port = free_port()
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay,
               DRAIN_SMTPD_AUTH_USER="app", DRAIN_SMTPD_AUTH_PASSWORD=SMTPD_SECRET, DRAIN_SMTPD_AUTH_PLAINTEXT="true")
    proc = subprocess.Popen([sys.executable, "-m", "drain", "smtpd", "--listen", f"127.0.0.1:{port}",
                             "--log-level", "debug"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wrong = SMTPD_SECRET[::-1]
    try:
        def listening() -> bool:
            assert proc.poll() is None
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=30, what="drain smtpd")
        for mechanism in ("PLAIN", "LOGIN"):
            for password in (SMTPD_SECRET, wrong):
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                    smtp.ehlo()
                    smtp.user, smtp.password = "app", password
                    method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
                    try:
                        smtp.auth(mechanism, method, initial_response_ok=mechanism == "PLAIN")
                        ok = True
                    except smtplib.SMTPAuthenticationError:
                        ok = False
                    assert ok is (password == SMTPD_SECRET), (mechanism, password)
                    if ok:
                        smtp.sendmail("a@example.com", ["b@example.org"], synthetic(1).replace(b"\n", b"\r\n"))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    text = (out + err).decode()
    assert "listening on 127.0.0.1:" in text
    leaked = [form for secret in (SMTPD_SECRET, wrong) for form in _forms("app", secret) if form in text]
    assert leaked == []


def test_relay_that_requires_starttls_given_as_plain_smtp_defers(
        client: Client, starttls_relay: tuple[Sink, Path], work: Callable[..., bool]) -> None:
    sink, _cert = starttls_relay
    client.enqueue_many([synthetic(i) for i in range(2)])
    work(relay=f"smtp://127.0.0.1:{sink.port}", breaker_failures=1000)
    books = client.store.books()
    assert books.bounced == 0 and books.deferred == 2, books
