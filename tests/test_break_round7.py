"""Breaks found in round 7 of trying drain as a new, careless or hostile operator, each turned
into a test. Each docstring says what happened before the fix and the mutant it catches."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import pytest

from drain import validate
from drain.demo.sink import Sink, free_port
from drain.errors import InputError
from drain.intake.api import Client, Submission
from drain.message import envelope_from_headers
from drain.settings import Settings
from drain.store.store import ENQUEUE_CHUNK
from tests.conftest import seed
from tests.test_cli import drain


@dataclass
class LfRelay:
    """A raw SMTP server (asyncio streams, no library) that ends every reply line with a bare
    LF, as some hand-written relays do; RCPT to an address starting with `refuse` gets a
    two-line 550, to `later` a 451; each message it takes is kept with its envelope."""

    pipelining: bool
    port: int = field(default_factory=free_port)
    taken: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 lf.example ESMTP\n")
        sender, rcpts, good = "", [], 0
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                extensions = b"250-PIPELINING\n" if self.pipelining else b""
                writer.write(b"250-lf.example hello\n" + extensions + b"250 SIZE 10000000\n")
            elif verb == b"MAIL":
                sender, rcpts, good = line[10:].strip().strip(b"<>").decode(), [], 0
                writer.write(b"250 2.1.0 OK\n")
            elif verb == b"RCPT":
                address = line[8:].strip().strip(b"<>").decode()
                if address.startswith("refuse"):
                    writer.write(b"550-5.1.1 no such user\n550 5.1.1 gone\n")
                elif address.startswith("later"):
                    writer.write(b"451 4.3.0 try later\n")
                else:
                    rcpts.append(address)
                    good += 1
                    writer.write(b"250 2.1.5 OK\n")
            elif verb == b"DATA":
                if not good:
                    writer.write(b"554 no valid recipients\n")
                    continue
                writer.write(b"354 go ahead\n")
                body = []
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    body.append(data)
                self.taken.append((sender, tuple(rcpts), b"".join(body)))
                writer.write(b"250 2.0.0 OK queued as Q%d\n" % len(self.taken))
            elif verb == b"QUIT":
                writer.write(b"221 bye\n")
                break
            else:  # RSET, NOOP
                writer.write(b"250 OK\n")
            await writer.drain()
        await writer.drain()
        writer.close()

    def run(self) -> Iterator[LfRelay]:
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", self.port))
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            server.close()
            loop.close()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


def _message(n: int) -> bytes:
    return (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: m%d\r\n"
            b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m%d@example.com>\r\n\r\nbody %d\r\n" % (n, n, n))


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_relay_answering_with_bare_lf_stays_in_step(pipelining: bool, client: Client,
                                                      work: Callable[..., bool], settings: Settings) -> None:
    """A relay whose reply lines end in a bare LF (smtplib's getreply takes them): every
    message gets its own reply, message by message, on one session. Before the fix the
    session fell out of step and the next message was deferred with "250 OK" as its reply."""
    for relay in LfRelay(pipelining).run():
        rcpts = [["ok1@example.org"], ["refuse@example.org", "ok2@example.org"], ["refuse@example.org"],
                 ["later@example.org"], ["ok3@example.org", "ok4@example.org"], ["ok5@example.org"]]
        ids = [client.enqueue(_message(i), sender="a@example.com", recipients=r) for i, r in enumerate(rcpts)]
        work(relay=relay.url)
        got = {body.split(b"body ")[1].strip(): r for _s, r, body in relay.taken}
        assert got == {b"0": ("ok1@example.org",), b"1": ("ok2@example.org",),
                       b"4": ("ok3@example.org", "ok4@example.org"), b"5": ("ok5@example.org",)}, relay.taken
        books = client.store.books()
        assert (books.delivered, books.bounced, books.deferred) == (4, 1, 1), books
        traced = drain(settings, "trace", "--sender", "a@example.com", "--json")
        assert traced.returncode == 0, traced.stderr
        replies = {doc["id"]: [(e["event"], e.get("reply", "")) for e in doc["events"] if e["event"] != "received"]
                   for doc in map(json.loads, traced.stdout.splitlines())}
        for n in (0, 4, 5):
            assert replies[ids[n]] == [("delivered", "250 ok")], (n, replies)
        assert replies[ids[1]] == [("bounced", '{"refuse@example.org": "550 5.1.1 no such user 5.1.1 gone"}'),
                                   ("delivered", "250 accepted for some recipients")], replies
        ((event, reply),) = replies[ids[2]]
        assert event == "bounced" and "550" in reply and "gone" in reply, replies
        ((event, reply),) = replies[ids[3]]
        assert event == "deferred" and "451" in reply, replies


INJECTED_FROM = (b"From: =?utf-8?b?RXZpbA0KQmNjOiB4QGV2aWwuZXhhbXBsZQ==?= <a@example.com>\r\n"
                 b"To: b@example.org\r\nSubject: hi\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
                 b"Message-ID: <inj@example.com>\r\n\r\nbody\r\n")


@pytest.mark.parametrize("field", [b"From", b"To", b"Cc", b"Reply-To"])
def test_an_encoded_word_decoding_to_cr_lf_has_its_own_code(field: bytes, client: Client,
                                                          work: Callable[..., bool], settings: Settings) -> None:
    """An RFC 2047 encoded-word that decodes to "Evil\\r\\nBcc: x@evil.example" in an address
    field was quarantined as parse.crash (the strict parser's ValueError about CR or LF),
    which told the operator nothing. Now it is header.encoded-newline, from `drain check`
    and from a worker. Mutant caught: the _encoded_newline branch in validate._addresses."""
    word = b"=?utf-8?b?RXZpbA0KQmNjOiB4QGV2aWwuZXhhbXBsZQ==?="
    fields = {b"From": b"a@example.com", b"To": b"b@example.org", field: word + b" <c@example.org>"}
    rest = INJECTED_FROM.split(b"\r\n", 2)[2]  # Subject, Date, Message-ID and the body
    raw = b"".join(name + b": " + value + b"\r\n" for name, value in fields.items()) + rest
    checked = drain(settings, "check", "--json", "-", stdin=raw)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["reasons"] == ["header.encoded-newline"], checked.stdout
    client.enqueue(raw)
    work()
    listed = drain(settings, "quarantine", "list", "--json")
    assert [json.loads(line)["reason"] for line in listed.stdout.splitlines()] == ["header.encoded-newline"]


def test_an_encoded_newline_only_recorded_is_delivered_as_it_came(client: Client, work: Callable[..., bool],
                                                                  relay: Sink) -> None:
    """With DRAIN_RECORD_CODES=header.encoded-newline the operator lets such mail through: it
    goes out with the field as it came (still encoded, one line), to the envelope's recipient."""
    client.enqueue(INJECTED_FROM)
    work(record_codes=("header.encoded-newline",))
    (got,) = relay.messages
    assert got.recipients == ("b@example.org",) and client.store.books().delivered == 1
    assert b"From: =?utf-8?b?RXZpbA0KQmNjOiB4QGV2aWwuZXhhbXBsZQ==?= <a@example.com>\r\n" in got.data


@pytest.mark.parametrize("value", ["65", "1000000"])
def test_relay_sessions_past_64_stop_a_worker_at_start(value: str, client: Client, settings: Settings) -> None:
    """DRAIN_RELAY_SESSIONS=1000000 was taken: the worker built a million relay sessions (a TLS
    context each), grew to 10 GB and claimed nothing for ten minutes. Now a start-up error,
    one line, exit 2, the mail still ready. Mutant caught: relay_sessions declared whole(1)."""
    client.enqueue(_message(1), sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, "worker", "--burst", env={"DRAIN_RELAY_SESSIONS": value})
    lines = [line for line in result.stderr.decode().splitlines() if not line.startswith("drain worker:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "DRAIN_RELAY_SESSIONS must be at most 64" in lines[0], lines
    assert client.store.books().ready == 1
    assert drain(settings, "worker", "--burst", env={"DRAIN_RELAY_SESSIONS": "64"}).returncode == 0
    assert client.store.books().delivered == 1


def test_a_file_over_the_size_limit_is_not_given_the_size_read(client: Client, settings: Settings,
                                                               tmp_path: Path) -> None:
    """`drain enqueue` of a 1 GB file said "message is 26214401 bytes, over the 26214400-byte
    limit": the reader stops one byte past the limit, and that count was quoted as the size
    (`drain check` likewise: "26214401 bytes > 26214400"). Now no size is quoted for a message
    read only to the limit. Mutant caught: api.prepare quoting len(raw) always."""
    big = tmp_path / "big.eml"
    with open(big, "wb") as out:
        out.write(_message(1))
        out.truncate(50_000_000)
    env = {"DRAIN_MAX_MESSAGE_BYTES": "2000"}
    queued = drain(settings, "enqueue", str(big), env=env)
    assert queued.returncode == 1 and b"2001" not in queued.stderr, queued.stderr
    assert b"message is larger than the 2000-byte limit" in queued.stderr, queued.stderr
    checked = drain(settings, "check", "--json", str(big), env=env)
    (finding,) = json.loads(checked.stdout)["findings"]
    assert finding == {"code": "size.over-limit", "detail": "more > 2000"}, finding
    assert client.store.books().accepted == 0
    with pytest.raises(InputError, match="message is 2500 bytes, over the 2000-byte limit"):
        Client(client.redis, settings.with_(max_message_bytes=2000)).enqueue(b"x" * 2500)


def _interrupt_at(name: str, event: str, count: int) -> Callable[[FrameType, str, object], None]:
    """A profile hook that sends this process SIGINT (Ctrl-C) on the count-th `event` of a
    function called `name`: the interrupt lands at an exact point of a real run."""
    seen = [0]

    def hook(frame: FrameType, what: str, _arg: object) -> None:
        if what == event and frame.f_code.co_name == name:
            seen[0] += 1
            if seen[0] == count:
                os.kill(os.getpid(), signal.SIGINT)

    return hook


@pytest.mark.parametrize(("where", "as_json"), [(("echo", "call", 10), False),
                                                (("enqueue_many", "return", 1), True),
                                                (("enqueue_many", "return", 1), False)])
def test_ctrl_c_in_enqueue_leaves_no_queued_id_unreported(
        where: tuple[str, str, int], as_json: bool, client: Client, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while `drain enqueue` printed a chunk's ids (or just after Redis took the chunk,
    before its ids came back) left ids of queued mail unprinted: 14,000 accepted, 13,977 ids
    printed; with --json the document's "accepted" fell short of the books. Now Ctrl-C waits
    for the chunk to be queued and reported, then stops (exit 130). Mutant caught: commit()
    without interrupt.held()."""
    from drain.cli import main

    paths = []
    for n in range(ENQUEUE_CHUNK + 5):
        paths.append(tmp_path / f"m{n}.eml")
        paths[-1].write_bytes(_message(n))
    monkeypatch.setenv("DRAIN_REDIS_URL", settings.redis_url or "")
    # Python's own Ctrl-C handler, as `drain` has (an in-process RQ worker of an earlier test
    # leaves its own behind).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.setprofile(_interrupt_at(*where))
    try:
        with pytest.raises(SystemExit) as stopped:
            main(["enqueue", *(["--json"] if as_json else []), *map(str, paths)])
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGINT, previous)
    out = capsys.readouterr().out
    assert stopped.value.code == 130
    books = client.store.books()
    assert books.accepted == books.ready == ENQUEUE_CHUNK  # the chunk; the rest never queued
    printed = json.loads(out)["ids"] if as_json else out.split()
    assert len(printed) == books.accepted, (len(printed), books)


def _enqueue_peak_kb(box: Path, env: dict[str, str]) -> tuple[int, bytes, int]:
    """`drain enqueue --mbox box` in a child: its exit code, standard error and peak memory
    (KB). Linux keeps the parent's peak in a child's across fork and exec: compare runs."""
    with open(box.with_suffix(".err"), "w+b") as err:
        proc = subprocess.Popen([sys.executable, "-m", "drain", "enqueue", "--mbox", str(box)],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), err.read(), usage.ru_maxrss


def test_an_mbox_message_far_over_the_limit_is_not_read_whole(client: Client, settings: Settings,
                                                               tmp_path: Path) -> None:
    """`drain enqueue --mbox` of a 300 MB mbox holding one message peaked at 630 MB: each
    message was read whole (mailbox's get_bytes) before the size check refused it. Now it is
    read to the limit + 1, as a file is (98 MB peak). Here a 160 MB message with a 1 MB limit
    is refused, and the command's peak memory stays within 60 MB of its peak on a one-line
    mbox (it was some 320 MB above). Mutant caught: _mbox_message back to box.get_bytes."""
    head = b"From a@example.com Mon Nov 30 10:00:00 2026\nFrom: a@example.com\nTo: b@example.org\n\n"
    small, big = tmp_path / "small.mbox", tmp_path / "big.mbox"
    small.write_bytes(head + b"a" * 2_000_000 + b"\n")
    with open(big, "wb") as out:
        out.write(head)
        out.write((b"a" * 76 + b"\n") * (160_000_000 // 77))
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_MAX_MESSAGE_BYTES=str(2**20))
    code, said, baseline = _enqueue_peak_kb(small, env)
    assert code == 1 and b"the 1048576-byte limit" in said, said
    code, said, peak = _enqueue_peak_kb(big, env)
    assert code == 1 and b"the 1048576-byte limit" in said, said
    assert peak < baseline + 60_000, f"peak {peak} KB, {baseline} KB on a small mbox"
    assert client.store.books().accepted == 0


@pytest.mark.parametrize("name", ["DRAIN_RELAY", "DRAIN_RELAY_FALLBACK"])
@pytest.mark.parametrize(("url", "why"), [("smtp://127.0.0.1:0", "port 0"),
                                          ("smtp://127.0.0.1:2525/relay?tls=1", "path, query or fragment"),
                                          ("smtp://127.0.0.1:2525#x", "path, query or fragment")])
def test_drain_relay_with_port_0_or_a_path_stops_a_worker_at_start(name: str, url: str, why: str, client: Client,
                                                                  settings: Settings) -> None:
    """DRAIN_RELAY=smtp://127.0.0.1:0 started a worker that delivered to port 25 (port 0 was
    taken for "the default"), and smtp://h:2525/relay?tls=1 one that dropped the path and
    query without a word; `drain route set` refused both already. Now DRAIN_RELAY and its
    fallbacks do too: one line, exit 2, the mail still ready. Mutant caught: RelayConfig.from_url
    without the port-0 and path checks (they were in routing.check_url only)."""
    client.enqueue(_message(1), sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, "worker", "--burst", env={name: url})
    lines = [line for line in result.stderr.decode().splitlines() if not line.startswith("drain worker:")]
    assert result.returncode == 2 and len(lines) == 1 and why in lines[0], result.stderr
    assert client.store.books().ready == 1


@pytest.mark.parametrize("args", [("show", ""), ("release", ""), ("delete", "--dry-run", " "), ("hold", "\t"),
                                  ("quarantine", "release", ""), ("quarantine", "show", ""),
                                  ("quarantine", "delete", "X", ""), ("trace", "--id", "")])
def test_an_empty_message_id_is_a_usage_error(args: tuple[str, ...], client: Client, work: Callable[..., bool],
                                              settings: Settings) -> None:
    """`drain release ""` (a script's unset variable) said "unknown id: (not queued, held or
    quarantined)" and exited 1, as if it were looked for. Now a usage error naming the
    argument, exit 2, and nothing changes. Mutant caught: MessageIdType.convert without the
    empty check."""
    client.enqueue(dict(seed("bad"))["body_nul-byte.eml"])
    work()
    before = client.store.books()
    result = drain(settings, *[a.replace("X", "1") for a in args])
    err = result.stderr.decode()
    assert result.returncode == 2 and "a message ID is empty" in err and len(err.splitlines()) == 1, err
    assert client.store.books() == before


def test_a_message_id_pasted_with_spaces_around_it_is_found(client: Client, work: Callable[..., bool],
                                                            settings: Settings) -> None:
    """`drain show " 4"` (copied from a table with its padding) said "unknown message id: 4"
    of a message that was there. White space around an id is dropped now. Mutant caught:
    MessageIdType.convert without strip()."""
    msg_id = client.enqueue(dict(seed("bad"))["body_nul-byte.eml"])
    work()
    padded = f" {msg_id}\t"
    assert drain(settings, "show", padded).returncode == 0
    assert drain(settings, "trace", "--id", padded).returncode == 0
    assert drain(settings, "quarantine", "show", padded).returncode == 0
    deleted = drain(settings, "quarantine", "delete", padded, "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert client.store.books().deleted == 1


@pytest.mark.parametrize(("args", "said"), [(("--malformed", "nan"), "not a finite number"),
                                           (("--rate", "1/h"), "give at least 2/m"),
                                           (("--rate", "1/m"), "give at least 2/m")])
def test_a_demo_that_could_not_finish_is_a_usage_error(args: tuple[str, ...], said: str, settings: Settings,
                                                      tmp_path: Path) -> None:
    """`drain demo --malformed nan` ran (click's FloatRange lets nan through), and `drain demo
    --rate 1/h` seeded, delivered one message and ended a minute later with "stopped: no
    progress for 60s", exit 1. Both are usage errors now, before anything starts. Mutants
    caught: --malformed back to FloatRange; the demo's slowest-rate check removed."""
    result = drain(settings, "demo", "-n", "5", *args, env={"DRAIN_HOME": str(tmp_path / "home")})
    err = result.stderr.decode()
    assert result.returncode == 2 and said in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("value", [b"\xff\xfe", b"acme\xc0", b"\xe9t\xe9"])
def test_a_tenant_header_that_is_not_utf8_names_no_tenant(value: bytes, client: Client, settings: Settings) -> None:
    """With DRAIN_TENANT_HEADER, a header of bytes that are not UTF-8 named a tenant of
    replacement characters ("\\ufffd\\ufffd"): any two such headers the same tenant, shown as
    such. It names none now; the sender's domain is the tenant, as for any value that is not
    a tenant name. Mutant caught: from_header decoding with errors="replace"."""
    raw = _message(1).replace(b"Subject:", b"X-Tenant: " + value + b"\r\nSubject:")
    Client(client.redis, settings.with_(tenant_header="X-Tenant")).enqueue(raw)
    listed = drain(settings, "tenant", "list", "--json")
    assert [t["tenant"] for t in json.loads(listed.stdout)] == ["example.com"], listed.stdout


def test_api_recipients_given_as_one_string_are_refused(client: Client) -> None:
    """`client.enqueue(raw, recipients="b@example.org")` queued a message for 12 recipients
    "b", "@", "e", ... (the string taken as a list of its characters), which the workers
    then quarantined. Now InputError at the door, and nothing is queued (enqueue_many
    rejects that one item). Mutant caught: prepare without the str check."""
    with pytest.raises(InputError, match="recipients must be a list"):
        client.enqueue(_message(1), recipients="b@example.org")
    with pytest.raises(InputError, match="recipients must be a list"):
        client.enqueue(_message(1), recipients=b"b@example.org")  # type: ignore[arg-type]
    result = client.enqueue_many([Submission(_message(2), None, "b@example.org")])  # type: ignore[arg-type]
    assert result.ids == [] and len(result.rejected) == 1, result
    assert client.store.books().accepted == 0


@pytest.mark.parametrize("tenant", [5, b"acme", ["acme"]])
def test_api_tenant_that_is_not_text_is_an_input_error(tenant: object, client: Client) -> None:
    """`client.enqueue(raw, tenant=5)` raised len()'s TypeError out of drain: the contract is
    that refusals are drain.errors exceptions. Now InputError. Mutant caught: tenancy.valid
    without the isinstance check."""
    with pytest.raises(InputError, match="tenant must be text"):
        client.enqueue(_message(1), tenant=tenant)  # type: ignore[arg-type]
    assert client.store.books().accepted == 0


@pytest.mark.parametrize("fmt", ["eml", "mbox"])
def test_quarantine_export_to_dash_is_a_usage_error(fmt: str, client: Client, work: Callable[..., bool],
                                                    settings: Settings, tmp_path: Path) -> None:
    """`drain quarantine export ID --out -` (read as standard output) wrote a folder, or an
    mbox file, named "-" in the current directory and printed nothing. Now a usage error,
    exit 2, and nothing written. Mutant caught: --out without the _not_stdout callback."""
    msg_id = client.enqueue(dict(seed("bad"))["body_nul-byte.eml"])
    work()
    result = subprocess.run([sys.executable, "-m", "drain", "quarantine", "export", msg_id, "--format", fmt,
                             "--out", "-"], capture_output=True, cwd=tmp_path, timeout=60, check=False,
                            env=dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or ""))
    err = result.stderr.decode()
    assert result.returncode == 2 and "not standard output" in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == [] and result.stdout == b""


@pytest.mark.parametrize("field", [b"From", b"To", b"Cc"])
def test_comments_nested_too_deep_in_an_address_are_not_a_mime_finding(field: bytes) -> None:
    """1,000 nested comments in an address field ("(((x))) a@example.com", folded into
    lines under 998 octets) made the strict header parser hit Python's recursion limit, and
    check() reported it as mime.nesting-too-deep ("structure too deep to walk"): an operator
    would look for a MIME tree that is not there. Now it is parse.crash, naming the field.
    Mutant caught: _addresses without the RecursionError branch."""
    nested = b"(" * 1000 + b"x" + b")" * 1000 + b" c@example.org"
    value = b"\r\n ".join(nested[i:i + 70] for i in range(0, len(nested), 70))
    fields = {b"From": b"a@example.com", b"To": b"b@example.org", field: value}
    raw = b"".join(n + b": " + v + b"\r\n" for n, v in fields.items()) + _message(1).split(b"\r\n", 2)[2]
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert [f.code for f in verdict.findings] == ["parse.crash"], verdict.findings
    assert f"{field.decode()}: comments or groups nested too deep" in verdict.findings[0].detail


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_intake_with_a_domain_is_a_usage_error(command: str, client: Client, settings: Settings) -> None:
    """`drain pause --intake --domain x.org` paused delivery to x.org and left the intake
    open (the --intake flag dropped without a word), while --tenant with either was already
    refused. Now a usage error, exit 2, and no pause is made or lifted. Mutant caught:
    pause/resume without _intake_alone."""
    client.enqueue(_message(1), sender="a@example.com", recipients=["b@example.org"])
    if command == "resume":
        assert drain(settings, "pause", "--domain", "example.org").returncode == 0
    before = json.loads(drain(settings, "pause", "list", "--json").stdout)
    result = drain(settings, command, "--intake", "--domain", "example.org")
    err = result.stderr.decode()
    assert result.returncode == 2 and "--intake does not go with --domain" in err and len(err.splitlines()) == 1, err
    assert json.loads(drain(settings, "pause", "list", "--json").stdout) == before


def _with_closed(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


@pytest.mark.parametrize(("args", "fd", "code", "said"), [
    (("enqueue", "-"), 0, 1, "drain: rejected -: message is empty"),
    (("enqueue", "--mbox", "-"), 0, 0, "accepted 0, rejected 0"),
    (("check", "-"), 0, 0, ""),
    (("status", "--json"), 1, 0, ""),
    (("enqueue", "/nonexistent/x.eml"), 1, 2, "no such file"),
])
def test_a_closed_standard_stream_is_not_a_traceback(args: tuple[str, ...], fd: int, code: int, said: str,
                                                    client: Client, settings: Settings) -> None:
    """`drain enqueue - <&-` (standard input closed, as a cron line or a daemon may leave it)
    raised AttributeError: 'NoneType' object has no attribute 'buffer'; with standard output
    closed (`>&-`) every command died importing drain.cli.render. A closed stream is /dev/null
    now: read as empty, written nowhere. Mutant caught: main without _closed_streams (and the
    render guard)."""
    result = subprocess.run([sys.executable, "-m", "drain", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_with_closed(fd), timeout=60, check=False,
                            env=dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or ""))
    err = result.stderr.decode()
    assert "Traceback" not in err and result.returncode == code, err
    assert said in err
    assert client.store.books().accepted == 0


@pytest.mark.parametrize(("typed", "written"), [("bücher.example", "xn--bcher-kva.example"),
                                                ("xn--bcher-kva.example", "bücher.example")])
def test_a_pause_of_an_idn_holds_its_mail_in_either_form(typed: str, written: str, client: Client, relay: Sink,
                                                        work: Callable[..., bool], settings: Settings) -> None:
    """`drain pause --domain bücher.example` held mail to b@bücher.example but not mail to
    b@xn--bcher-kva.example, the same domain in its ASCII form (and `drain rate set
    --domain` likewise). Both sides now key a domain in A-labels (drain.message.domain_key).
    Mutants caught: parse_domain returning the name as typed; by_domain grouping by the
    domain as written."""
    assert drain(settings, "pause", "--domain", typed).returncode == 0
    client.enqueue(_message(1), sender="a@example.com", recipients=[f"b@{written}"])
    work()
    assert relay.messages == [] and client.store.books().delivered == 0


@pytest.mark.parametrize("given", ["<>", ""])
def test_enqueue_from_the_null_sender_as_smtp_writes_it(given: str, client: Client, settings: Settings,
                                                       tmp_path: Path) -> None:
    """`drain enqueue --from '<>'` (the null sender as SMTP and sendmail -f write it) was
    refused: "'<>' is not a valid address: An email address must have an @-sign". It is the
    null sender now, as --from '' was. Mutant caught: enqueue without the '<>' case."""
    path = tmp_path / "m.eml"
    path.write_bytes(_message(1))
    result = drain(settings, "enqueue", "--from", given, "--json", str(path))
    assert result.returncode == 0, result.stderr
    (msg_id,) = json.loads(result.stdout)["ids"]
    shown = json.loads(drain(settings, "show", msg_id, "--json").stdout)
    assert shown["sender"] == "", shown
