"""Quarantine work: list, show, release (re-validated unless --force), delete, export,
operator rules that sweep queued mail and catch new mail, retention, audit."""

from __future__ import annotations

import json
import mailbox
import os
import resource
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake import rules
from drain.intake.api import Client, Submission
from drain.ops.quarantine import Filter, Quarantine
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import one_line
from tests.conftest import seed
from tests.test_cli import drain


def _quarantine_bad_seeds(client: Client, work: Callable[..., bool]) -> dict[str, str]:
    """Queue every malformed seed, let a worker quarantine them; returns file name -> id."""
    bad = seed("bad")
    ids = client.enqueue_many([raw for _n, raw in bad]).ids
    work()
    assert client.store.books().quarantined == len(bad)
    return {name: msg_id for (name, _raw), msg_id in zip(bad, ids, strict=True)}


def test_list_show_and_filters(client: Client, settings: Settings, work: Callable[..., bool]) -> None:
    by_name = _quarantine_bad_seeds(client, work)
    result = drain(settings, "quarantine", "list", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.decode().splitlines()]
    assert len(lines) == len(by_name)
    assert all(set(line) >= {"id", "reason", "sender", "recipients", "quarantined_at"} for line in lines)

    nul = drain(settings, "quarantine", "list", "--json", "--reason", "body.nul-byte")
    (only,) = [json.loads(x) for x in nul.stdout.decode().splitlines()]
    assert only["id"] == by_name["body_nul-byte.eml"]
    prefix = drain(settings, "quarantine", "list", "--json", "--reason", "header.")
    assert len(prefix.stdout.decode().splitlines()) >= 5

    shown = json.loads(drain(settings, "quarantine", "show", "--json", by_name["header_line-too-long.eml"]).stdout)
    (finding,) = [f for f in shown["findings"] if f["code"] == "header.line-too-long"]
    assert "octets" in finding["detail"] and shown["size"] > 1000

    missing = drain(settings, "quarantine", "show", "ffffff")  # an id of no message ("nope" is none: exit 2)
    assert missing.returncode == 1 and b"no message ffffff in quarantine" in missing.stderr


def test_release_revalidates_unless_forced(client: Client, settings: Settings, relay: Sink,
                                           work: Callable[..., bool]) -> None:
    by_name = _quarantine_bad_seeds(client, work)
    target = by_name["header_duplicate-singleton.eml"]
    kept = json.loads(drain(settings, "quarantine", "release", "--json", target).stdout)
    assert kept["released"] == 0 and target in kept["still_failing"]
    assert client.redis.zscore(keys.QUARANTINE, target) is not None

    forced = json.loads(drain(settings, "quarantine", "release", "--json", "--force", target,
                              env={"DRAIN_ACTOR": "ops-alice"}).stdout)
    assert forced["released"] == 1
    work()
    assert client.store.books().delivered == 1
    assert len(relay.messages) == 1
    (entry,) = [e for e in Quarantine(client.store).audit_log(target)]
    assert entry["action"] == "release" and entry["force"] == "1" and entry["actor"] == "ops-alice"


def test_delete_by_filter_with_dry_run(client: Client, settings: Settings, work: Callable[..., bool]) -> None:
    by_name = _quarantine_bad_seeds(client, work)
    address = [n for n in by_name if n.startswith("address_")]
    dry = json.loads(drain(settings, "quarantine", "delete", "--json", "--reason", "address.", "--dry-run").stdout)
    assert dry["would_delete"] == len(address) and dry["deleted"] == 0
    assert client.store.books().deleted == 0
    done = json.loads(drain(settings, "quarantine", "delete", "--json", "--reason", "address.").stdout)
    assert done["deleted"] == len(address)
    books = client.store.books()
    assert books.deleted == len(address) and books.quarantined == len(by_name) - len(address)
    both = drain(settings, "quarantine", "delete", by_name["body_nul-byte.eml"], "--reason", "body.")
    assert both.returncode == 2


def test_export_eml_and_mbox_keep_the_original_bytes(client: Client, settings: Settings, tmp_path: Path,
                                                     work: Callable[..., bool]) -> None:
    by_name = _quarantine_bad_seeds(client, work)
    originals = dict(seed("bad"))
    eml_dir = tmp_path / "eml"
    assert drain(settings, "quarantine", "export", "--reason", "body.", "--out", str(eml_dir)).returncode == 0
    for name in ("body_nul-byte.eml", "body_bare-cr-lf.eml"):
        assert (eml_dir / f"{by_name[name]}.eml").read_bytes() == originals[name]
    box_path = tmp_path / "q.mbox"
    ids = [by_name["header_missing-from.eml"], by_name["parse_crash.eml"]]
    assert drain(settings, "quarantine", "export", "--format", "mbox", "--out", str(box_path), *ids).returncode == 0
    box = mailbox.mbox(box_path)
    assert len(box) == 2
    assert box.get_bytes(0).replace(b"\r\n", b"\n").strip() == originals["header_missing-from.eml"].strip()


def test_rule_sweeps_queued_mail_and_catches_new_mail(client: Client, settings: Settings, relay: Sink,
                                                       work: Callable[..., bool]) -> None:
    ratelimit.pause(client.redis)
    to = {"a": "spam.example.com", "b": "fine.example.org"}
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{to['a' if i % 2 else 'b']}",))
                         for i in range(20)])
    result = drain(settings, "quarantine", "rule", "add", "--domain", "spam.example.com", "--note", "incident 7",
                   "--json")
    assert result.returncode == 0, result.stderr
    added = json.loads(result.stdout)
    assert added["swept"] == 10
    books = client.store.books()
    assert (books.quarantined, books.ready, books.balanced) == (10, 10, True)

    client.enqueue(synthetic(99), recipients=["late@spam.example.com"])  # caught on arrival
    assert client.store.books().quarantined == 11
    ratelimit.resume(client.redis)
    work()
    books = client.store.books()
    assert books.delivered == 10 and books.queued == 0
    assert all(m.recipients[0].endswith("fine.example.org") for m in relay.messages)
    found = Quarantine(client.store).records(Filter(reason="rule.match"))
    assert len(list(found)) == 11

    listed = [json.loads(x) for x in drain(settings, "quarantine", "rule", "list", "--json").stdout.splitlines()]
    assert listed[0]["domain"] == "spam.example.com" and listed[0]["note"] == "incident 7"
    assert drain(settings, "quarantine", "rule", "remove", added["id"]).returncode == 0
    assert rules.load(client.redis) == []


def test_swept_message_released_is_delivered_once(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    ratelimit.pause(client.redis)
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    rule = rules.add(client.redis, "tester", header="Subject", pattern=r"statement no\. 1$")
    assert rules.sweep(client.store, rule) == 1
    rules.remove(client.redis, rule.id)
    q = Quarantine(client.store)
    passing, failing = q.revalidate([ids[1]], *_checks(client))
    assert passing == [ids[1]] and not failing
    assert q.release(passing, "tester") == 1
    books = client.store.books()
    assert (books.ready, books.quarantined, books.balanced) == (3, 0, True)
    ratelimit.resume(client.redis)
    work()
    assert sorted(m.message_id for m in relay.messages) == sorted(
        f"<synthetic-{i}@sender.example.com>" for i in range(3))


def test_sweep_reaches_deferred_mail(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(data_policy=lambda _i, _m: "451 4.7.1 later")
    client.enqueue(synthetic(1), sender="bulk@spammer.example.net")
    work()
    assert client.store.books().deferred == 1
    rule = rules.add(client.redis, "tester", sender="*@spammer.example.net")
    assert rules.sweep(client.store, rule) == 1
    books = client.store.books()
    assert (books.deferred, books.quarantined) == (0, 1)


def test_retention_deletes_old_quarantine(client: Client, work: Callable[..., bool]) -> None:
    by_name = _quarantine_bad_seeds(client, work)
    q = Quarantine(client.store)
    assert q.expire(older_than_s=3600) == 0
    import time

    assert q.expire(older_than_s=3600, now=time.time() + 3601) == len(by_name)
    books = client.store.books()
    assert books.quarantined == 0 and books.deleted == len(by_name)
    assert q.audit_log(count=1)[0]["actor"] == "retention"


def test_severity_overrides(settings: Settings) -> None:
    path = str(next(p for p in (Path(__file__).parent.parent / "seeds" / "bad").glob("header_non-ascii*")))
    strict = json.loads(drain(settings, "check", "--json", path).stdout)
    assert strict["verdict"] == "quarantine"
    relaxed = drain(settings, "check", "--json", path, env={"DRAIN_RECORD_CODES": "header.non-ascii-unencoded"})
    assert json.loads(relaxed.stdout)["verdict"] == "ok"
    assert json.loads(relaxed.stdout)["recorded"] == ["header.non-ascii-unencoded"]
    bad = drain(settings, "check", path, env={"DRAIN_RECORD_CODES": "no.such-code"})
    assert bad.returncode == 2 and b"unknown reason codes" in bad.stderr


def _checks(client: Client) -> tuple[object, dict[str, str]]:
    from drain import validate

    return validate.Limits.from_settings(client.settings), validate.SEVERITY


def _drain_capped(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`drain ARGS` with its memory capped at 2 GB, so a command that reads a device
    forever fails fast instead of taking the machine down."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    return subprocess.run([sys.executable, "-m", "drain", *args], capture_output=True, env=env, timeout=60,
                          check=False, preexec_fn=cap)


def _refused(result: subprocess.CompletedProcess[bytes], words: str) -> None:
    assert result.returncode == 1, result
    err = one_line(result)
    assert words in err, err
    assert result.stdout == b""


def test_export_mbox_refuses_devices_folders_and_existing_files(client: Client, settings: Settings, tmp_path: Path,
                                                                work: Callable[..., bool]) -> None:
    by_name = _quarantine_bad_seeds(client, work)
    one = by_name["body_nul-byte.eml"]
    for device in ("/dev/full", "/dev/zero"):  # never with --force here: a bug must not replace a device
        _refused(_drain_capped(settings, "quarantine", "export", "--format", "mbox", "--out", device, one),
                 "is not a regular file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _refused(_drain_capped(settings, "quarantine", "export", "--format", "mbox", "--out", str(fifo), "--force", one),
             "is not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    _refused(drain(settings, "quarantine", "export", "--format", "mbox", "--out", str(tmp_path / "no" / "q.mbox"),
                   one), "no such folder")
    _refused(drain(settings, "quarantine", "export", "--format", "mbox", "--out", str(tmp_path), one), "is a folder")

    existing = tmp_path / "old.mbox"
    existing.write_bytes(b"keep me\n")
    _refused(drain(settings, "quarantine", "export", "--format", "mbox", "--out", str(existing), one),
             "exists; --force replaces it")
    assert existing.read_bytes() == b"keep me\n"
    forced = drain(settings, "quarantine", "export", "--format", "mbox", "--out", str(existing), "--force", "--json",
                   one)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout) == {"exported": 1, "format": "mbox", "out": str(existing), "ids": [one]}
    assert len(mailbox.mbox(existing)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "old.mbox"]  # no temporary file left


def test_export_eml_refuses_missing_parents_devices_and_existing_files(client: Client, settings: Settings,
                                                                       tmp_path: Path,
                                                                       work: Callable[..., bool]) -> None:
    by_name = _quarantine_bad_seeds(client, work)
    one, two = by_name["body_nul-byte.eml"], by_name["parse_crash.eml"]
    deep = tmp_path / "a" / "b" / "c"
    _refused(drain(settings, "quarantine", "export", "--out", str(deep), one), "no such folder")
    assert not (tmp_path / "a").exists()
    _refused(_drain_capped(settings, "quarantine", "export", "--out", "/dev/full", one), "is not a folder")
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    _refused(drain(settings, "quarantine", "export", "--out", str(plain), one), "is not a folder")

    folder = tmp_path / "out"
    assert drain(settings, "quarantine", "export", "--out", str(folder), one).returncode == 0  # last part made
    (folder / f"{one}.eml").write_bytes(b"edited by hand")
    _refused(drain(settings, "quarantine", "export", "--out", str(folder), one, two), "already exist")
    assert (folder / f"{one}.eml").read_bytes() == b"edited by hand"
    assert not (folder / f"{two}.eml").exists()  # nothing written when anything is refused
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    (folder / f"{two}.eml").symlink_to(victim)
    _refused(drain(settings, "quarantine", "export", "--out", str(folder), "--force", one, two),
             "is not a regular file")
    assert victim.read_bytes() == b"not yours"
    (folder / f"{two}.eml").unlink()
    assert drain(settings, "quarantine", "export", "--out", str(folder), "--force", one, two).returncode == 0
    assert (folder / f"{one}.eml").read_bytes() == dict(seed("bad"))["body_nul-byte.eml"]


def test_rule_that_would_sweep_everything_needs_yes_all(client: Client, settings: Settings) -> None:
    ratelimit.pause(client.redis)
    catch_all = drain(settings, "quarantine", "rule", "add", "--sender", "*")
    assert catch_all.returncode == 2 and "--yes-all" in one_line(catch_all)  # even on an empty queue
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{'big' if i < 15 else 'small'}.example.com",))
                         for i in range(20)])

    dry = drain(settings, "quarantine", "rule", "add", "--sender", "*", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"dry_run": True, "rule": "sender *", "would_sweep": 20, "queued": 20,
                                      "needs_yes_all": True}
    most = drain(settings, "quarantine", "rule", "add", "--domain", "big.example.com")  # 15 of 20
    assert most.returncode == 2 and "15 of 20 queued" in one_line(most)
    assert rules.load(client.redis) == [] and client.store.books().quarantined == 0

    few = json.loads(drain(settings, "quarantine", "rule", "add", "--domain", "small.example.com", "--dry-run",
                           "--json").stdout)
    assert (few["would_sweep"], few["needs_yes_all"]) == (5, False)
    confirmed = drain(settings, "quarantine", "rule", "add", "--sender", "*", "--yes-all", "--json")
    assert confirmed.returncode == 0, confirmed.stderr
    assert json.loads(confirmed.stdout)["swept"] == 20 and client.store.books().quarantined == 20
