"""Breaks found in round 8 of trying drain as a careless or hostile user and as a new operator,
each turned into a test. Each docstring says what happened before the fix and the mutant it catches."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drain.demo.sink import Sink
from drain.errors import ConfigError
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.observe import backlog, status
from drain.settings import Settings, declared
from drain.settings.values import Durability
from drain.store import keys
from drain.store.record import DOMAIN
from tests.test_break_round7 import _enqueue_peak_kb
from tests.test_cells import cells, csettings
from tests.test_cli import drain

__all__ = ["cells", "csettings"]  # fixtures of tests.test_cells, used here

ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x660 + i) for i in range(10)))
AR12 = "12".translate(ARABIC_INDIC)


def _numeric_settings() -> list[tuple[str, str]]:
    """(variable, its default written in Arabic-Indic digits) for every number setting."""
    found = []
    for d in declared(Settings):
        default = 2048 if d.field == "smtpd_max_bytes" else d.default
        if isinstance(default, int | float) and not isinstance(default, bool):
            found.append((d.var.name, str(default).translate(ARABIC_INDIC)))
    return found


@pytest.mark.parametrize(("name", "value"), _numeric_settings())
def test_a_number_setting_in_another_scripts_digits_is_refused(name: str, value: str) -> None:
    """DRAIN_BATCH_SIZE=١٢ (Arabic-Indic digits) was taken as 12, as int() and float() read any
    script's digits. Mutant caught: the isascii() check in values._bounded removed."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
    ascii_value = value.translate({0x660 + i: str(i) for i in range(10)})
    Settings.from_env({name: ascii_value})  # the same number in ASCII digits is fine


@pytest.mark.parametrize(("name", "value"), [("DRAIN_SMTPD_LISTEN", ":²"), ("DRAIN_SMTPD_LISTEN", ":٢٥٢٦"),
                                             ("DRAIN_DURABILITY", "replicas:²"), ("DRAIN_DURABILITY", "replicas:٢")])
def test_a_port_or_replica_count_in_other_digits_is_a_one_line_error(name: str, value: str, settings: Settings) -> None:
    """DRAIN_SMTPD_LISTEN=:² and DRAIN_DURABILITY=replicas:² passed str.isdigit() and then
    int() raised ValueError: a traceback at every command (and ':٢٥٢٦' listened on 2526).
    Mutant caught: ascii_digits() back to str.isdigit() in parse_listen / parse_durability."""
    result = drain(settings, "status", env={name: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().count("\n") == 1 and b"Traceback" not in result.stderr
    assert name.encode() in result.stderr
    assert Durability.parse("replicas:2") == Durability("replicas", 2)


@pytest.mark.parametrize("args", [("rate", "set", f"{AR12}/s"), ("hold", "--older-than", f"{AR12}m"),
                                  ("trace", "--since", f"{AR12}m"), ("trace", "--since", AR12),
                                  ("log", "--since", "12345".translate(ARABIC_INDIC))])
def test_rates_durations_and_times_in_other_digits_are_usage_errors(args: tuple[str, ...], settings: Settings,
                                                                     rclient: object) -> None:
    """`rate set 12/s` in Arabic-Indic digits set 12/s, `--older-than 12m` selected mail older than 12 minutes and
    `--since 12` meant 12 s after 1970: the regexes' \\d takes any script's digits.
    Mutant caught: re.ASCII dropped from ratelimit._RATE, select._DURATION or when._AGO/the
    unix-seconds match."""
    result = drain(settings, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.decode().count("\n") == 1 and b"Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:٢٦/mymaster", "redis+sentinel://127.0.0.1:26379/m/٣"])
def test_a_sentinel_url_with_other_digits_is_refused_as_written(url: str, settings: Settings) -> None:
    """A Sentinel port written '٢٦' was asked on port 26 (and a db '٣' was db 3): str.isdigit()
    and int() take any script's digits. Mutant caught: the isascii() checks in SentinelUrl.parse removed."""
    result = drain(settings, "status", env={"DRAIN_REDIS_URL": url})
    assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr
    assert result.stderr.decode().count("\n") == 1
    assert b"sentinel" in result.stderr


MBOXES = [
    b"From a@x Mon Nov 30 10:00:00 2026\nSubject: one\n\nbody\n\nFrom b@x Mon Nov 30 10:00:01 2026\nSubject: two\n\n"
    b">From quoted\nFrom: not a start? it is, as mailbox reads it\n",
    b"From a@x\n\n\n\nFrom b@x\nno end of line",
    b"From a@x\n" + b"y" * 50 + b"From not-a-start\n\nFrom c@x\n" + b"z" * 33 + b"\n\n",
    b"From " + b"q" * 100,
    b"From a@x\nx\n\n",
    b"",
]


@pytest.mark.parametrize("piece", [5, 6, 7, 16, 64 * 1024])
@pytest.mark.parametrize("content", MBOXES)
def test_a_bounded_mbox_finds_the_messages_mailbox_finds(content: bytes, piece: int, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """BoundedMbox (lines read in pieces) cuts an mbox exactly where mailbox.mbox does, whatever
    the piece size: the same keys, the same message bytes with and without the 'From ' line.
    Mutant caught: a piece not at a line's start taken as a 'From ' line (or as a blank line)."""
    import mailbox

    from drain.intake import mboxfile

    monkeypatch.setattr(mboxfile, "PIECE", piece)
    path = tmp_path / "box.mbox"
    path.write_bytes(content)
    theirs, ours = mailbox.mbox(str(path), create=False), mboxfile.BoundedMbox(str(path), create=False)
    try:
        assert list(ours.iterkeys()) == list(theirs.iterkeys())
        for key in theirs.iterkeys():
            for from_ in (False, True):
                with theirs.get_file(key, from_) as a, ours.get_file(key, from_) as b:
                    assert b.read() == a.read()
    finally:
        theirs.close()
        ours.close()


def test_an_mbox_without_a_newline_is_not_read_whole(client: Client, settings: Settings, tmp_path: Path) -> None:
    """`drain enqueue --mbox` of a 1 GB mbox with no newline peaked near 1 GB: mailbox.mbox
    reads each line whole to find the messages. Here a 120 MB one-line mbox (its 'From ' line
    is the whole file) gets a verdict with a peak within 40 MB of a small mbox's (it was some
    240 MB above), and a 120 MB message body on one line is refused at the size limit.
    Mutant caught: BoundedMbox's readline(PIECE) back to readline() (in the table of contents
    or in get_file's 'From ' line skip)."""
    small, one_line, long_body = tmp_path / "small.mbox", tmp_path / "one-line.mbox", tmp_path / "long-body.mbox"
    small.write_bytes(b"From a@example.com\nFrom: a@example.com\nTo: b@example.org\n\nhi\n")
    for path, head in ((one_line, b"From "), (long_body, b"From a@example.com\nFrom: a@example.com\n\n")):
        with open(path, "wb") as out:
            out.write(head)
            for _ in range(120):
                out.write(b"a" * 1_000_000)
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_MAX_MESSAGE_BYTES=str(2**20))
    code, said, baseline = _enqueue_peak_kb(small, env)
    assert code == 0, said
    code, said, peak = _enqueue_peak_kb(one_line, env)
    assert b"Traceback" not in said and peak < baseline + 40_000, (said, peak, baseline)
    code, said, peak = _enqueue_peak_kb(long_body, env)
    assert code == 1 and b"the 1048576-byte limit" in said, said
    assert peak < baseline + 40_000, (peak, baseline)


def _defer(client: Client, relay: Sink, work: Callable[..., bool], domains: dict[str, int]) -> None:
    """Mail to each domain, all deferred by the relay; the breakers the 451s opened are cleared."""
    client.enqueue_many([f"From: a@src.example\r\nTo: u{i}@{domain}\r\nSubject: {i}\r\n\r\nhi\r\n".encode()
                         for domain, n in domains.items() for i in range(n)])
    relay.set_policy(lambda _i, _m: "451 4.3.0 try again later")
    work()
    assert client.store.books().deferred == sum(domains.values())
    client.redis.delete(keys.BREAKER_OPEN, keys.BREAKER_FAILS, keys.BREAKER_TRIPS)


def _due_at(client: Client, when: Callable[[str, int], float]) -> None:
    """Each deferred message's next attempt set to when(its domain, its rank)."""
    members = [m for m in client.redis.zrange(keys.DEFERRED, 0, -1)]
    for rank, member in enumerate(members):
        domain = client.redis.hget(keys.message(member.decode()), DOMAIN)
        client.redis.zadd(keys.DEFERRED, {member: when(domain.decode() if domain else "", rank)})


@pytest.mark.parametrize(("budget", "at_least"), [(5000, False), (20, True)])
def test_a_domain_deferred_behind_many_others_is_not_forecast_as_soon(
        budget: int, at_least: bool, client: Client, relay: Sink, work: Callable[..., bool],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-domain bound of deferred mail read only the 200 messages due last: a domain
    whose mail was due in an hour, behind 200 of another domain due in two, was forecast in a
    second. Now the deferred set is read from its end a page at a time up to a budget (here
    pages of 10, so 30 + 5 messages take four), and a domain past the budget says its ETA is
    only a lower bound. Mutants caught: the loop reading one page only; eta_at_least never set."""
    monkeypatch.setattr(backlog, "DUE_PAGE", 10)
    monkeypatch.setattr(backlog, "DUE_BUDGET", budget)
    _defer(client, relay, work, {"late.example": 30, "soon.example": 5})
    now = time.time()
    _due_at(client, lambda domain, rank: now + (7200 + rank if domain == "late.example" else 3600))
    ratelimit.set_global(client.redis, 100.0)
    shape = {d.domain: d for d in backlog.shape(client.store, now=now).domains}
    late, soon = shape["late.example"], shape["soon.example"]
    assert late.eta_s is not None and late.eta_s >= 7200 and not late.eta_at_least
    assert soon.eta_s is not None and soon.eta_at_least is at_least
    if not at_least:
        assert soon.eta_s >= 3600 - 5, soon.eta_s
    doc = json.loads(drain(client.settings, "backlog", "--json").stdout)
    assert [d.get("eta_at_least") for d in doc["domains"]] == [None, None]  # all read: exact, and said only when not


def test_the_eta_takes_the_measured_pace_when_it_is_slower_than_the_global_rate(client: Client) -> None:
    """With a global rate of 100/s and delivery measured at 2/s (a slow relay), 1,000 queued
    messages were forecast in 10 s; they take some 500. The rate still wins when it is the
    slower. Mutant caught: the min(rate, pace) in forecast removed."""
    client.enqueue_many([f"From: a@src.example\r\nTo: u{i}@slow.example\r\n\r\nhi\r\n".encode()
                         for i in range(1000)])
    ratelimit.set_global(client.redis, 100.0)
    now = time.time()
    client.redis.lpush(keys.PACE, f"{now - 20} 100", f"{now} 140")  # newest first: 40 delivered in 20 s
    assert client.store.pace() == pytest.approx(2.0)
    st = status.read(client.store)
    assert st.eta_s is not None and st.eta_s == pytest.approx(500, rel=0.05), st.eta_s
    assert backlog.shape(client.store, pace=2.0).domains[0].eta_s == pytest.approx(500, rel=0.05)
    assert backlog.shape(client.store, pace=1000.0).eta_s == pytest.approx(10, rel=0.05)


@pytest.mark.parametrize("args", [("show", "bad!id"), ("show", "x"), ("trace", "--id", "1f;"), ("hold", "1f", "zz"),
                                  ("quarantine", "release", "<id>"), ("flush", "c0.1f.2")])
def test_a_malformed_id_is_the_same_usage_error_on_one_redis_and_over_cells(
        args: tuple[str, ...], client: Client, settings: Settings, csettings: Settings) -> None:
    """`drain show x` said "unknown message id: x", exit 1, on one Redis and "does not name a
    cell", exit 2, over cells. Both now refuse an id no drain makes (hex, cell-qualified over
    cells) as a usage error, exit 2, one line, before looking. Mutant caught: the id pattern
    check in MessageIdType.convert removed."""
    one, many = drain(settings, *args), drain(csettings, *args)
    for result in (one, many):
        err = result.stderr.decode()
        assert result.returncode == 2 and "is not a message ID" in err and len(err.splitlines()) == 1, err
    assert one.stderr == many.stderr


def test_an_unknown_id_over_cells_is_named_as_typed(client: Client, settings: Settings, csettings: Settings) -> None:
    """`drain show c1.ff` over cells said "unknown message id: ff", the id within the cell, which
    no command takes. Hex in capitals is the same id. Mutant caught: the InputError re-raised
    with the qualified id in cellcmds.show removed."""
    result = drain(csettings, "show", "c1.ff")
    assert result.returncode == 1 and result.stderr.decode().strip().endswith("unknown message id: c1.ff")
    msg_id = client.enqueue(b"From: a@src.example\r\nTo: b@dst.example\r\n\r\nhi\r\n")
    shown = drain(settings, "show", f" {msg_id.upper()} ", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == msg_id


@pytest.mark.parametrize("action", ["flush", "bounce", "delete", "hold", "release"])
def test_an_action_on_a_finished_message_says_what_became_of_it(action: str, client: Client, relay: Sink,
                                                                work: Callable[..., bool], settings: Settings) -> None:
    """`drain bounce ID` of a delivered message said "unknown id: ID (not queued, held or
    quarantined)" while `drain show ID` told its story: the operator was told drain never had
    it. Now it says "ID is delivered" (bounced, deleted, expired likewise), still exit 1 and
    nothing changed; an id drain never had is still "unknown id". Mutant caught: _not_queued
    without the trace lookup (every id reported unknown)."""
    relay.set_policy(rcpt_policy=lambda r: "550 5.1.1 no such user" if r.startswith("refuse") else None)
    done = client.enqueue(b"From: a@src.example\r\nTo: b@dst.example\r\n\r\nhi\r\n")
    refused = client.enqueue(b"From: a@src.example\r\nTo: refuse@dst.example\r\n\r\nhi\r\n")
    work()
    before = client.store.books()
    for _twice in range(2):
        result = drain(settings, action, done, refused, "ffffff")
        err = result.stderr.decode()
        assert result.returncode == 1 and len(err.splitlines()) == 1, err
        assert f"{done} is delivered" in err and f"{refused} is bounced" in err and "unknown id: ffffff" in err, err
    assert client.store.books() == before


def test_a_drain_session_says_how_much_is_deferred(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """`drain drain` with the relay refusing every message for now showed "0/3 0/s eta -
    quarantined 0 bounced 0" for as long as it ran: nothing said the mail was deferred,
    waiting for its next attempt. The progress line names the deferred count. Mutant caught:
    the deferred part of watch()'s info line removed."""
    import io

    from rich.console import Console

    from drain.cli.progress import watch

    client.enqueue_many([f"From: a@src.example\r\nTo: u{i}@dst.example\r\n\r\nhi\r\n".encode() for i in range(3)])
    relay.set_policy(lambda _i, _m: "451 4.3.0 try again later")
    work()
    out = io.StringIO()
    watched = watch(client.store, None, Console(file=out, width=200), stall_limit_s=0.0)
    assert not watched.finished
    assert "deferred 3" in out.getvalue(), out.getvalue()


@pytest.mark.parametrize(("args", "env"), [
    (("route", "set", "example.com", "smtp://127.0.0.1:2526"), {}),
    (("route", "set", "example.com", "smtp://127.0.0.1:2525", "--fallback", "smtp://localhost:2526"), {}),
    (("route", "set", "--tenant", "t", "smtp://10.1.2.3:2600"), {"DRAIN_SMTPD_LISTEN": "10.1.2.3:2600"}),
    (("worker", "--burst"), {"DRAIN_RELAY": "smtp://localhost:2526"}),
    (("worker", "--burst"), {"DRAIN_RELAY_FALLBACK": "smtp://127.0.0.2:2600", "DRAIN_SMTPD_LISTEN": ":2600"}),
])
def test_a_relay_that_is_drains_own_ingress_is_refused(args: tuple[str, ...], env: dict[str, str], client: Client,
                                                       settings: Settings) -> None:
    """`drain route set example.com smtp://127.0.0.1:2526` (the SMTP ingress's own address)
    was taken: every message to example.com went to the ingress, was queued again as new
    mail and sent there again, for ever (the ingress adds no Received field a hop count
    could stop). The same went for DRAIN_RELAY and its fallbacks. Now a usage error naming
    the loop, and nothing stored. Mutant caught: not_own_ingress returning at once."""
    client.enqueue(b"From: a@src.example\r\nTo: b@example.com\r\n\r\nhi\r\n", tenant="t")
    result = drain(settings, *args, env=env)
    err = result.stderr.decode()
    assert result.returncode == 2 and "own SMTP ingress" in err and "a loop" in err, err
    assert "Traceback" not in err and err.count("drain: error") == 1
    listed = json.loads(drain(settings, "route", "list", "--json").stdout)["routes"]
    assert [r["kind"] for r in listed] == ["default"], listed
    assert client.store.books().ready == 1


def _on_a_terminal(settings: Settings, *args: str) -> str:
    """What `drain ARGS` writes to a terminal (a pseudo-terminal as its standard output)."""
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", COLUMNS="120")
    proc = subprocess.Popen([sys.executable, "-m", "drain", *args], stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_tenant_list_of_thousands_shows_its_first_rows_on_a_terminal(client: Client, settings: Settings) -> None:
    """With 10,000 tenants `drain tenant list` printed 10,000 rows to a terminal (15 s here),
    unlike every other list of drain. It shows the first rows there now and says how to get
    more (--limit N, --limit 0 for all); a pipe and --json still get every row. Mutant
    caught: the rows not cut to rows_wanted in tenant_list."""
    from drain.cli import TTY_ROWS

    client.enqueue_many([Submission(f"From: a@src.example\r\nTo: b@dst.example\r\nSubject: {i}\r\n\r\nhi\r\n".encode(),
                                    tenant=f"tenant{i:03d}") for i in range(TTY_ROWS + 20)])
    shown = _on_a_terminal(settings, "tenant", "list")
    assert shown.count("tenant0") == TTY_ROWS and "--limit 0 for all" in shown, shown[-500:]
    assert drain(settings, "tenant", "list").stdout.count(b"tenant0") == TTY_ROWS + 20
    assert len(json.loads(drain(settings, "tenant", "list", "--json").stdout)) == TTY_ROWS + 20
    assert len(json.loads(drain(settings, "tenant", "list", "--json", "--limit", "5").stdout)) == 5


def test_one_mailbox_with_its_domain_in_two_idn_forms_gets_one_copy(client: Client, relay: Sink,
                                                                    work: Callable[..., bool]) -> None:
    """b@bücher.example, b@xn--bcher-kva.example and b@bu\u0308cher.example (the same name in
    Unicode, in A-labels, decomposed) were three RCPTs: the mailbox got three copies, as the
    duplicate check lowercased the domain only. It is compared as drain keys domains
    (domain_key) now: one RCPT, the first spelling kept. Mutant caught: unique_recipients back
    to domain.lower()."""
    forms = ["b@b\u00fccher.example", "b@xn--bcher-kva.example", "b@bu\u0308cher.example", "b@B\u00dcCHER.example",
             "c@b\u00fccher.example"]
    client.enqueue(b"From: a@src.example\r\nTo: x@y.example\r\nSubject: idn\r\n\r\nhi\r\n", recipients=forms)
    work()
    assert [m.recipients for m in relay.messages] == [("b@b\u00fccher.example", "c@b\u00fccher.example")]
    assert client.store.books().delivered == 1
