"""The SMTP ingress against real SMTP clients (smtplib, raw sockets, swaks) and a real Redis."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller

from drain.demo.seeding import synthetic as synthetic_lf
from drain.demo.sink import Sink, free_port
from drain.errors import ConfigError
from drain.intake import door as intake
from drain.intake.api import Client
from drain.intake.smtpd import AuthGuard, Features, Ingress
from drain.message import Envelope
from drain.ops.quarantine import Quarantine
from drain.settings import Settings
from drain.store import body, keys, tenancy
from drain.store.embedded import server_binary
from drain.worker.delivery import wire_form
from tests.conftest import wait_for

USER, PASSWORD = "producer", "s3cret-Pa55"
BOTH = Features(smtputf8=True, eightbitmime=True)
StartIngress = Callable[..., Ingress]


@pytest.fixture
def ingress(client: Client) -> Iterator[StartIngress]:
    """Start an ingress on a free port of 127.0.0.1 (settings overrides as keywords); stopped after the test."""
    started: list[Ingress] = []

    def start(api: Client | None = None, features: Features | None = BOTH, recheck_s: float = 0.0,
              guard: AuthGuard | None = None, **overrides: Any) -> Ingress:
        api = api or client
        if overrides:
            api = Client(api.redis, api.settings.with_(**overrides))
        server = Ingress(api, "127.0.0.1", 0, features=features, recheck_s=recheck_s, hostname="drain.test",
                         guard=guard or AuthGuard(delay_s=0.01))
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def synthetic(index: int, size: int = 2048) -> bytes:
    """A generated message with CRLF line ends, as an SMTP client sends it (smtplib sends bytes as given)."""
    return wire_form(synthetic_lf(index, size=size))


def connect(server: Ingress, source: str | None = None) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10,
                        source_address=(source, 0) if source else None)


def submit(smtp: smtplib.SMTP, raw: bytes, sender: str = "billing@sender.example.com",
           recipients: tuple[str, ...] = ("user1@example.net",)) -> tuple[int, str]:
    """MAIL, RCPT..., DATA step by step; returns the reply to DATA."""
    smtp.ehlo_or_helo_if_needed()
    code, reply = smtp.mail(sender)
    assert code == 250, reply
    for rcpt in recipients:
        code, reply = smtp.rcpt(rcpt)
        assert code == 250, reply
    code, reply = smtp.data(raw)
    return code, reply.decode()


def queued_id(reply: str) -> str:
    assert "queued as " in reply, reply
    return reply.rsplit(" ", 1)[1]


def stored(rclient: redis.Redis, msg_id: str) -> tuple[bytes, Envelope]:
    raw, env = rclient.hmget(keys.message(msg_id), ["raw", "env"])
    assert isinstance(raw, bytes) and env is not None, f"message {msg_id} is not in Redis"
    return body.unpack(raw), Envelope.from_json(env)


def test_submission_is_queued_then_delivered_unchanged(client: Client, rclient: redis.Redis, ingress: StartIngress,
                                                       relay: Sink, work: Callable[..., bool]) -> None:
    server = ingress()
    raw = synthetic(1)
    with connect(server) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("pipelining") and smtp.has_extn("size") and smtp.has_extn("8bitmime")
        code, reply = submit(smtp, raw, recipients=("user1@example.net", "other@example.org", "user1@example.net"))
        assert code == 250, reply
        msg_id = queued_id(reply)
    # The 250 came after the write: the message is there now, with the envelope given at RCPT.
    books = client.store.books()
    assert (books.accepted, books.ready) == (1, 1)
    body, envelope = stored(rclient, msg_id)
    assert body == raw
    assert envelope == Envelope("billing@sender.example.com", ("user1@example.net", "other@example.org"))
    assert rclient.llen(f"rq:queue:{keys.RQ_QUEUE}") >= 1  # a batch job is there to work it
    work()
    assert client.store.books().delivered == 1
    # One delivery per destination domain, each with the bytes as submitted.
    assert [m.data for m in relay.messages] == [raw, raw]
    assert [m.recipients for m in relay.messages] == [("user1@example.net",), ("other@example.org",)]


def test_250_waits_for_the_write_while_other_sessions_go_on(rclient: redis.Redis, ingress: StartIngress) -> None:
    server = ingress()
    raw = synthetic(9)
    replies: list[tuple[int, bytes]] = []
    with connect(server) as slow, connect(server) as other:
        slow.ehlo()
        assert slow.mail("a@example.com")[0] == 250 and slow.rcpt("b@example.com")[0] == 250
        rclient.execute_command("CLIENT", "PAUSE", 20000, "WRITE")  # Redis holds every write back
        try:
            sender = threading.Thread(target=lambda: replies.append(slow.data(raw)))
            sender.start()
            wait_for(lambda: not server.committer.idle, timeout=10, what="the write to start")
            # Another session is served meanwhile, and the first still has no reply.
            assert other.ehlo()[0] == 250 and other.noop()[0] == 250
            assert not replies and not tenancy.ready_ids(rclient, "fresh")
        finally:
            rclient.execute_command("CLIENT", "UNPAUSE")
        sender.join(timeout=10)
    assert replies and replies[0][0] == 250, replies
    assert stored(rclient, queued_id(replies[0][1].decode()))[0] == raw


def test_null_sender_and_smtputf8(rclient: redis.Redis, ingress: StartIngress) -> None:
    server = ingress()
    with connect(server) as smtp:
        code, reply = submit(smtp, synthetic(2), sender="")
        assert code == 250, reply
        assert stored(rclient, queued_id(reply))[1].sender == ""
        smtp.ehlo()
        assert smtp.has_extn("smtputf8")
        # A non-ASCII address needs SMTPUTF8 on MAIL FROM...
        assert smtp.mail("sender@example.com")[0] == 250
        smtp.command_encoding = "utf-8"  # smtplib would not send it otherwise
        code, text = smtp.rcpt("jürgen@example.de")
        assert (code, text.split()[0]) == (553, b"5.6.7")
        smtp.rset()
        # ...and is taken with it.
        assert smtp.mail("sender@example.com", ["SMTPUTF8"])[0] == 250
        assert smtp.rcpt("jürgen@example.de")[0] == 250
        code, reply = smtp.data(synthetic(3))
        assert code == 250, reply
        assert stored(rclient, queued_id(reply.decode()))[1].recipients == ("jürgen@example.de",)


def read_replies(stream: Any, count: int) -> list[str]:
    """The next `count` complete replies (a multi-line reply counts once), as their last lines."""
    replies = []
    while len(replies) < count:
        line = stream.readline().decode()
        assert line, f"connection closed after {replies}"
        if line[3:4] != "-":
            replies.append(line.rstrip("\r\n"))
    return replies


def test_pipelined_commands(rclient: redis.Redis, ingress: StartIngress) -> None:
    server = ingress()
    first = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: one\r\n\r\n..a line that began with a dot\r\n"
    second = b"From: a@example.com\r\nTo: d@example.net\r\nSubject: two\r\n\r\nbody\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        assert read_replies(stream, 1)[0].startswith("220 ")
        sock.sendall(b"EHLO client.test\r\n")
        read_replies(stream, 1)
        # One write: the whole envelope with DATA last, as RFC 2920 lets a client do.
        sock.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<bad..dots@example.com>\r\n"
                     b"RCPT TO:<c@example.org>\r\nDATA\r\n")
        codes = [r[:3] for r in read_replies(stream, 5)]
        assert codes == ["250", "250", "553", "250", "354"]
        # The end of one message and the next envelope, in one write.
        sock.sendall(first + b".\r\nMAIL FROM:<>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n")
        replies = read_replies(stream, 4)
        assert [r[:3] for r in replies] == ["250", "250", "250", "354"]
        first_id = queued_id(replies[0])
        sock.sendall(second + b".\r\nQUIT\r\n")
        replies = read_replies(stream, 2)
        assert [r[:3] for r in replies] == ["250", "221"]
        second_id = queued_id(replies[0])
    assert stored(rclient, first_id) == (first.replace(b"\n..a", b"\n.a"),
                                         Envelope("a@example.com", ("b@example.com", "c@example.org")))
    assert stored(rclient, second_id) == (second, Envelope("", ("d@example.net",)))


def test_oversize_is_refused_and_the_session_goes_on(client: Client, ingress: StartIngress) -> None:
    server = ingress(smtpd_max_bytes=4096)
    with connect(server) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "4096"
        # Declared too big at MAIL FROM...
        assert smtp.mail("a@example.com", ["SIZE=10000"])[0] == 552
        # ...or found too big while reading DATA.
        assert smtp.mail("a@example.com")[0] == 250
        assert smtp.rcpt("b@example.com")[0] == 250
        assert smtp.data(synthetic(4, size=8192))[0] == 552
        code, reply = submit(smtp, synthetic(5, size=1024))
        assert code == 250, reply
    assert client.store.books().accepted == 1


@pytest.mark.parametrize(("command", "address", "status"), [
    ("mail", "bad..dots@example.com", "553 5.1.7"),
    ("mail", "no-at-sign", "553 5.1.7"),
    ("rcpt", "user@example.invalid", "553 5.1.3"),
    ("rcpt", "user@localhost", "553 5.1.3"),
    ("rcpt", "user@ex_ample.com", "553 5.1.3"),
    ("rcpt", "<user@>", "553 5.1.3"),  # aiosmtpd's own parser refuses this one
])
def test_bad_addresses(client: Client, ingress: StartIngress, command: str, address: str, status: str) -> None:
    server = ingress()
    with connect(server) as smtp:
        smtp.ehlo()
        if command == "rcpt":
            assert smtp.mail("a@example.com")[0] == 250
        arg = address if address.startswith("<") else f"<{address}>"
        code, text = smtp.docmd("MAIL FROM:" if command == "mail" else "RCPT TO:", arg)
        reply = f"{code} {text.decode()}"
        assert reply.startswith(status), reply
        assert "address" in reply  # says what is wrong
        assert smtp.noop()[0] == 250  # the session goes on
    assert client.store.books().accepted == 0


def test_auth_required(client: Client, ingress: StartIngress, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    server = ingress(smtpd_auth_user=USER, smtpd_auth_password=PASSWORD, smtpd_auth_plaintext=True)
    with connect(server) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("auth")
        code, text = smtp.mail("a@example.com")
        assert code == 530, text
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(USER, "wrong")
        assert refused.value.smtp_code == 535
        assert smtp.login(USER, PASSWORD)[0] == 235
        assert submit(smtp, synthetic(6))[0] == 250
    assert client.store.books().accepted == 1
    assert PASSWORD not in caplog.text


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made now (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drain test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls_then_auth(client: Client, ingress: StartIngress, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = ingress(smtpd_tls_cert=cert, smtpd_tls_key=key, smtpd_auth_user=USER, smtpd_auth_password=PASSWORD)
    with connect(server) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert smtp.docmd("AUTH", f"PLAIN {plain}")[0] == 538  # not in clear text
        smtp.starttls(context=ssl.create_default_context(cafile=str(cert)))
        smtp.ehlo()
        assert smtp.has_extn("auth") and not smtp.has_extn("starttls")
        assert smtp.mail("a@example.com")[0] == 530
        assert smtp.login(USER, PASSWORD)[0] == 235
        assert submit(smtp, synthetic(7))[0] == 250
    assert client.store.books().accepted == 1


def test_auth_without_tls_is_refused_at_start(client: Client) -> None:
    settings = client.settings.with_(smtpd_auth_user=USER, smtpd_auth_password=PASSWORD)
    with pytest.raises(ConfigError, match="STARTTLS"):
        Ingress(Client(client.redis, settings), "127.0.0.1", 0, features=BOTH)


def test_client_network_not_allowed(client: Client, ingress: StartIngress) -> None:
    server = ingress(smtpd_allow=(ipaddress.ip_network("10.0.0.0/8"),))
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        connect(server)
    assert refused.value.smtp_code == 554
    assert b"not allowed" in refused.value.smtp_error


def test_intake_pause(client: Client, rclient: redis.Redis, ingress: StartIngress) -> None:
    server = ingress()
    with connect(server) as open_session:
        open_session.ehlo()
        intake.pause(rclient)
        # A new connection is told at once...
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            connect(server)
        assert refused.value.smtp_code == 421
        # ...and a session already open at its next MAIL FROM, which closes it.
        code, text = open_session.mail("a@example.com")
        assert code == 421 and b"intake paused" in text
        with pytest.raises(smtplib.SMTPServerDisconnected):
            open_session.noop()
    intake.resume(rclient)
    with connect(server) as smtp:
        assert submit(smtp, synthetic(8))[0] == 250
    assert client.store.books().accepted == 1


def drain_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    return subprocess.run([sys.executable, "-m", "drain", *args], capture_output=True, env=env, timeout=60,
                          check=False)


def test_pause_and_resume_intake_commands(client: Client, rclient: redis.Redis, settings: Settings) -> None:
    assert drain_cli(settings, "pause", "--intake").returncode == 0
    assert rclient.exists(keys.INTAKE_PAUSED) and not rclient.exists(keys.PAUSED)
    assert drain_cli(settings, "resume", "--intake").returncode == 0
    assert not rclient.exists(keys.INTAKE_PAUSED)


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    """A redis-server of this test's own, fsyncing every write to its append-only file."""
    proc = subprocess.Popen(
        [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            assert proc.poll() is None, "redis-server exited"
            return False

    wait_for(up, timeout=10, what="redis-server")
    probe.close()
    return proc


def test_redis_stopped_mid_session(settings: Settings, ingress: StartIngress, tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(port, tmp_path)
    try:
        api = Client.connect(settings.with_(redis_url=f"redis://127.0.0.1:{port}/0"))  # as `drain smtpd` does
        own = api.redis
        # The gate re-reads Redis only after a failed write here, so MAIL passes and DATA meets the dead Redis.
        server = ingress(api=api, recheck_s=3600)
        raws = [synthetic(i) for i in range(10, 13)]
        with connect(server) as smtp:
            code, reply = submit(smtp, raws[0])
            assert code == 250
            first_id = queued_id(reply)
            proc.kill()
            proc.wait()
            code, reply = submit(smtp, raws[1])
            assert code == 451, reply
            # After a failed write the gate looks again: Redis is down, so 421 and the session ends.
            code, text = smtp.mail("a@example.com")
            assert code == 421, text
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            connect(server)
        assert refused.value.smtp_code == 421

        proc = start_redis(port, tmp_path)  # the same files: what was acknowledged is there
        server.gate.recheck()
        with connect(server) as smtp:
            code, reply = submit(smtp, raws[2])
            assert code == 250
            third_id = queued_id(reply)
        books = api.store.books()
        assert (books.accepted, books.ready) == (2, 2) and books.balanced
        ready = tenancy.ready_ids(own, "fresh")
        assert ready == [first_id, third_id]
        assert [stored(own, i)[0] for i in ready] == [raws[0], raws[2]]
    finally:
        proc.kill()
        proc.wait()


def test_concurrent_sessions_all_stored(client: Client, rclient: redis.Redis, ingress: StartIngress) -> None:
    server = ingress()
    sessions, each = 6, 25
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def producer(n: int) -> None:
        try:
            with connect(server) as smtp:
                for i in range(each):
                    code, reply = submit(smtp, synthetic(n * 1000 + i), recipients=(f"u{n}.{i}@example.com",))
                    assert code == 250, reply
                    with lock:
                        ids.append(queued_id(reply))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(set(ids)) == sessions * each
    assert client.store.books().accepted == sessions * each
    for msg_id in ids:
        raw, envelope = stored(rclient, msg_id)
        n, i = (int(x) for x in envelope.recipients[0][1:].split("@")[0].split("."))
        assert raw == synthetic(n * 1000 + i)


def test_smtputf8_and_8bitmime_follow_the_relay(client: Client, ingress: StartIngress) -> None:
    class Accept:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    plain = Controller(Accept(), hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    plain.start()
    try:
        server = ingress(features=None, relay=f"smtp://127.0.0.1:{plain.port}")
        assert server.features == Features(smtputf8=False, eightbitmime=True)
        with connect(server) as smtp:
            smtp.ehlo()
            assert not smtp.has_extn("smtputf8")
            assert smtp.docmd("MAIL FROM:<a@example.com> SMTPUTF8")[0] == 501  # smtplib itself would not ask
    finally:
        plain.stop()
    # A relay that does not answer: both offered (delivery bounces what the relay refuses, with the reason).
    unreachable = ingress(features=None, relay=f"smtp://127.0.0.1:{free_port()}")
    assert unreachable.features == Features(smtputf8=True, eightbitmime=True)
    # Configured off: not offered, and BODY=8BITMIME is refused.
    off = ingress(features=None, smtpd_smtputf8=False, smtpd_8bitmime=False)
    with connect(off) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("8bitmime") and not smtp.has_extn("smtputf8")
        assert smtp.mail("a@example.com", ["BODY=8BITMIME"])[0] == 555


def test_settings_from_env() -> None:
    env = {"DRAIN_SMTPD_LISTEN": "[::1]:2600", "DRAIN_SMTPD_ALLOW": "10.0.0.0/8, ::1", "DRAIN_SMTPD_MAX_BYTES": "5000",
           "DRAIN_SMTPD_AUTH_USER": USER, "DRAIN_SMTPD_AUTH_PASSWORD": PASSWORD, "DRAIN_SMTPD_SMTPUTF8": "false"}
    s = Settings.from_env(env)
    assert s.smtpd_listen == ("::1", 2600)
    assert s.smtpd_allow == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert s.smtpd_size_limit == 5000 and s.smtpd_smtputf8 is False and s.smtpd_8bitmime is None
    assert PASSWORD not in repr(s)
    assert Settings.from_env({}).smtpd_listen == ("127.0.0.1", 2526)  # not the default relay's 2525
    assert Settings.from_env({"DRAIN_SMTPD_MAX_BYTES": "999999999"}).smtpd_size_limit == Settings.max_message_bytes
    for bad in ({"DRAIN_SMTPD_ALLOW": "10.0.0.0/33"}, {"DRAIN_SMTPD_LISTEN": "localhost"},
                {"DRAIN_SMTPD_AUTH_USER": USER}, {"DRAIN_SMTPD_TLS_CERT": "/x.pem"},
                {"DRAIN_SMTPD_SMTPUTF8": "maybe"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


def test_smtpd_command(client: Client, rclient: redis.Redis, settings: Settings) -> None:
    bad = drain_cli(settings, "smtpd", "--listen", "nowhere")
    assert bad.returncode == 2 and len(bad.stderr.decode().strip().splitlines()) == 1
    port = free_port()
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    proc = subprocess.Popen([sys.executable, "-m", "drain", "smtpd", "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def listening() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=30, what="drain smtpd")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("a@example.com", ["b@example.org"], synthetic(20))
        assert client.store.books().accepted == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"listening on 127.0.0.1:" in err


@pytest.mark.skipif(shutil.which("swaks") is None and not os.environ.get("CI"),
                    reason="swaks is not installed (Debian package swaks)")
def test_swaks(client: Client, rclient: redis.Redis, ingress: StartIngress) -> None:
    assert shutil.which("swaks"), "swaks is not installed: CI must run this test (.ci/run installs it)"
    server = ingress(smtpd_auth_user=USER, smtpd_auth_password=PASSWORD, smtpd_auth_plaintext=True)
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{server.port}", "--helo", "client.test", "--pipeline",
         "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD,
         "--from", "swaks@example.com", "--to", "one@example.org,two@example.net", "--header", "Subject: from swaks"],
        capture_output=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout.decode()[-2000:]
    assert b"PIPELINING" in result.stdout
    (msg_id,) = tenancy.ready_ids(rclient, "fresh")
    raw, envelope = stored(rclient, msg_id)
    assert envelope == Envelope("swaks@example.com", ("one@example.org", "two@example.net"))
    assert b"Subject: from swaks" in raw
    assert client.store.books().accepted == 1


def test_stop_closes_the_listener(client: Client, ingress: StartIngress) -> None:
    server = ingress()
    with connect(server) as smtp:
        assert submit(smtp, synthetic(30))[0] == 250
    server.stop(grace_s=600)  # nothing is being written: returns at once, not after the grace
    with pytest.raises(OSError):
        connect(server)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_guessing_is_cut_off_per_session_and_per_address(client: Client, ingress: StartIngress) -> None:
    guard = AuthGuard(delay_s=0.01, per_session=3, per_address=5, window_s=600)
    server = ingress(guard=guard, smtpd_auth_user=USER, smtpd_auth_password=PASSWORD, smtpd_auth_plaintext=True)
    replies: list[int] = []
    with connect(server) as smtp:
        smtp.ehlo()
        for n in range(3):
            replies.append(smtp.docmd("AUTH", "PLAIN " + b64(f"\0{USER}\0guess{n}"))[0])
        with pytest.raises(smtplib.SMTPServerDisconnected):  # closed after the third failure
            smtp.noop()
    assert replies == [535, 535, 421]
    with connect(server) as smtp:  # a new session from the same address: two more failures reach 5
        smtp.ehlo()
        replies = [smtp.docmd("AUTH", "PLAIN " + b64(f"\0{USER}\0again{n}"))[0] for n in range(2)]
        assert replies == [535, 421]
    # The address is now refused at connect, even with the right password...
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        connect(server)
    assert refused.value.smtp_code == 421 and b"AUTH" in refused.value.smtp_error
    # ...while another client (another loopback address) still logs in and sends.
    with connect(server, source="127.0.0.2") as smtp:
        smtp.ehlo()
        assert smtp.docmd("AUTH", "PLAIN " + b64(f"\0{USER}\0{PASSWORD}"))[0] == 235
        assert submit(smtp, synthetic(30))[0] == 250
    assert client.store.books().accepted == 1


def test_failed_auth_logs_neither_user_nor_password(client: Client, ingress: StartIngress,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    server = ingress(guard=AuthGuard(delay_s=0.01, per_session=10, per_address=100),
                     smtpd_auth_user=USER, smtpd_auth_password=PASSWORD, smtpd_auth_plaintext=True)
    typed_user, typed_password = "Typed-In-User-Field-9", "Wrong-Pass-Word-7"
    secrets = [typed_user, typed_password, PASSWORD]
    with connect(server) as smtp:
        smtp.ehlo()
        for user, password in ((typed_user, typed_password), (PASSWORD, typed_password)):
            # PLAIN with an initial response, PLAIN after a challenge, LOGIN both ways.
            plain = b64(f"\0{user}\0{password}")
            assert smtp.docmd("AUTH", f"PLAIN {plain}")[0] == 535
            assert smtp.docmd("AUTH", "PLAIN")[0] == 334
            assert smtp.docmd(plain)[0] == 535
            assert smtp.docmd("AUTH", f"LOGIN {b64(user)}")[0] == 334
            assert smtp.docmd(b64(password))[0] == 535
            assert smtp.docmd("AUTH", "LOGIN")[0] == 334
            assert smtp.docmd(b64(user))[0] == 334
            assert smtp.docmd(b64(password))[0] == 535
            secrets += [plain, b64(user), b64(password)]
    logged = caplog.text
    assert "AUTH refused from 127.0.0.1" in logged
    for secret in secrets:
        assert secret not in logged, secret


def test_recipients_beyond_the_setting_get_452_at_rcpt(client: Client, rclient: redis.Redis,
                                                         ingress: StartIngress) -> None:
    server = ingress(max_recipients=3)
    with connect(server) as smtp:
        smtp.ehlo()
        assert smtp.mail("a@example.com")[0] == 250
        for n in range(3):
            assert smtp.rcpt(f"r{n}@example.org")[0] == 250
        code, text = smtp.rcpt("r3@example.org")
        assert (code, text) == (452, b"4.5.3 Too many recipients")
        code, reply = smtp.data(synthetic(31))
        assert code == 250, reply
    _raw, env = stored(rclient, queued_id(reply.decode()))
    assert list(env.recipients) == [f"r{n}@example.org" for n in range(3)]


def test_sessions_beyond_the_cap_get_421(client: Client, ingress: StartIngress) -> None:
    server = ingress(smtpd_max_sessions=2)
    first, second = connect(server), connect(server)
    try:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            connect(server)
        assert refused.value.smtp_code == 421 and refused.value.smtp_error.startswith(b"4.3.2")
        assert submit(first, synthetic(32))[0] == 250  # the open sessions go on
    finally:
        first.quit()

    def answered() -> bool:
        try:
            connect(server).quit()
            return True
        except smtplib.SMTPConnectError:
            return False

    wait_for(answered, what="a free session slot")  # a slot freed by QUIT is taken again
    second.quit()
    assert client.store.books().accepted == 1


def test_smtpd_on_a_port_in_use_says_one_line(client: Client, settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay,
                   DRAIN_SMTPD_SMTPUTF8="true", DRAIN_SMTPD_8BITMIME="true")
        done = subprocess.run([sys.executable, "-m", "drain", "smtpd", "--listen", f"127.0.0.1:{port}"], env=env,
                              capture_output=True, timeout=60, check=False)
    # The start-up line (which Redis, relay and rates) comes first; then the error, in one line.
    lines = [line for line in done.stderr.decode().strip().splitlines() if not line.startswith("drain smtpd: Redis")]
    assert done.returncode != 0
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines


def test_long_header_line_is_taken_then_quarantined(client: Client, ingress: StartIngress,
                                                    work: Callable[..., bool]) -> None:
    long_value = "x" * 1500
    raw = (f"From: a@example.com\r\nTo: b@example.org\r\nSubject: long line\r\nX-Long: {long_value}\r\n"
           "Message-ID: <long@example.com>\r\n\r\nbody\r\n").encode()
    server = ingress()
    with connect(server) as smtp:
        code, reply = submit(smtp, raw, sender="a@example.com", recipients=("b@example.org",))
    assert code == 250, reply
    msg_id = queued_id(reply)
    work()
    (record,) = list(Quarantine(client.store).records())
    assert record.id == msg_id and "header.line-too-long" in record.reasons
