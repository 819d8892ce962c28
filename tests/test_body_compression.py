"""Compressed bodies (issue 16 item 2): large mail is stored compressed in the real test Redis,
and every reader (delivery, quarantine show and export, rules) gets the original bytes back."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from pathlib import Path

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import body, keys
from drain.worker.delivery import wire_form
from tests.test_cli import drain

WORDS = ("account", "invoice", "order", "shipped", "total", "customer", "support", "update", "offer", "news",
         "week", "team")


def html_mail(index: int, rows: int = 300) -> bytes:
    """A newsletter-like HTML message of some tens of KB, different words on every row."""
    rng = random.Random(index)
    cells = "".join(
        f'<tr><td class="item" style="padding:4px;color:#333">{" ".join(rng.choices(WORDS, k=6))}</td>'
        f'<td class="price" style="text-align:right">{rng.randint(1, 9999) / 100:.2f} EUR</td></tr>\n'
        for _ in range(rows))
    head = (f"From: News <news@sender.example.com>\nTo: Reader {index} <reader{index}@example.net>\n"
            f"Subject: Weekly news {index}\nDate: Mon, 30 Nov 2026 00:00:00 +0000\n"
            f"Message-ID: <html-{index}@sender.example.com>\nMIME-Version: 1.0\n"
            "Content-Type: text/html; charset=utf-8\n\n")
    return (head + f"<html><body><table>\n{cells}</table></body></html>\n").encode()


def stored(rclient: redis.Redis, msg_id: str) -> bytes:
    value = rclient.hget(keys.message(msg_id), "raw")
    assert isinstance(value, bytes)
    return value


def test_large_mail_is_stored_compressed_and_delivered_unchanged(
        client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool]) -> None:
    big, small = html_mail(1), synthetic(2, size=600)
    marked = body.MARK + b" not a zlib stream\n" + synthetic(3, size=600)  # starts like a stored form
    ids = [client.enqueue(raw) for raw in (big, small, marked)]
    kept = [stored(rclient, i) for i in ids]
    assert kept[0].startswith(body.MARK) and len(kept[0]) <= 0.55 * len(big), len(kept[0]) / len(big)
    assert kept[1] == small
    assert kept[2] != marked and body.unpack(kept[2]) == marked
    work()
    delivered = {m.message_id: m.data for m in relay.messages}
    assert delivered["<html-1@sender.example.com>"] == wire_form(big)
    assert delivered["<synthetic-2@sender.example.com>"] == wire_form(small)
    books = client.store.books()  # the third starts with a NUL byte: quarantined, as before
    assert (books.delivered, books.quarantined) == (2, 1)
    assert body.unpack(stored(rclient, ids[2])) == marked


def test_quarantined_compressed_mail_shows_and_exports_the_original(
        client: Client, settings: Settings, rclient: redis.Redis, work: Callable[..., bool], tmp_path: Path) -> None:
    raw = html_mail(7).replace(b"From: News <news@sender.example.com>\n", b"")  # no From: quarantined
    msg_id = client.enqueue(raw, sender="news@sender.example.com", recipients=["reader@example.net"])
    assert stored(rclient, msg_id).startswith(body.MARK)
    work()
    shown = drain(settings, "quarantine", "show", "--json", msg_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["size"] == len(raw)
    out = tmp_path / "out"
    exported = drain(settings, "quarantine", "export", msg_id, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    (eml,) = out.glob("*.eml")
    assert eml.read_bytes().endswith(raw[-2000:])


def test_a_damaged_compressed_body_costs_only_its_message(
        client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool]) -> None:
    ids = [client.enqueue(html_mail(i)) for i in range(3)]
    victim = ids[1]
    rclient.hset(keys.message(victim), "raw", stored(rclient, victim)[:-40])  # a truncated stream
    work()
    assert {m.message_id for m in relay.messages} == {"<html-0@sender.example.com>", "<html-2@sender.example.com>"}
    assert rclient.zscore(keys.QUARANTINE, victim) is not None
    assert b"store.corrupt" in (rclient.hget(keys.message(victim), "why") or b"")


def test_a_rule_sweeps_compressed_mail_by_its_headers(client: Client, settings: Settings,
                                                      rclient: redis.Redis) -> None:
    ids = [client.enqueue(html_mail(i)) for i in range(3)]
    assert all(stored(rclient, i).startswith(body.MARK) for i in ids)
    added = drain(settings, "quarantine", "rule", "add", "--header", "Subject: ^Weekly news 1$", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["swept"] == 1
    assert rclient.zscore(keys.QUARANTINE, ids[1]) is not None


def test_mail_that_is_mostly_an_attachment_is_stored_as_it_is(
        client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool]) -> None:
    """Base64 shrinks too little to pay for compressing it; text beside it still pays."""
    payload = base64.encodebytes(random.Random(7).randbytes(75_000))
    head = (b"From: Billing <billing@sender.example.com>\nTo: Customer <customer@example.net>\n"
            b"Subject: Your statement\nMessage-ID: <attached@sender.example.com>\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="=_mix"\n\n--=_mix\nContent-Type: text/plain\n\nAttached.\n\n'
            b"--=_mix\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n")
    attached = head + payload + b"--=_mix--\n"
    half = head.replace(b"Attached.", html_mail(2)[-60_000:].replace(b"--", b"- -")) + payload[:60_000] + b"--=_mix--\n"
    ids = [client.enqueue(raw) for raw in (attached, half)]
    assert stored(rclient, ids[0]) == attached
    assert stored(rclient, ids[1]).startswith(body.MARK)
    work()
    assert [m.data for m in relay.messages] == [wire_form(attached), wire_form(half)]


def test_mail_stored_zlib_compressed_by_an_earlier_drain_is_delivered_unchanged(
        client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool]) -> None:
    """Bodies are zstd frames now; a queue written when they were zlib streams still drains."""
    import zlib
    old, new = html_mail(11), html_mail(12)
    ids = [client.enqueue(raw) for raw in (old, new)]
    assert stored(rclient, ids[1]).startswith(body.MARK) and body.MARK != body.ZLIB_MARK
    rclient.hset(keys.message(ids[0]), "raw", body.ZLIB_MARK + zlib.compress(old, 1))
    work()
    assert {m.message_id: m.data for m in relay.messages} == {"<html-11@sender.example.com>": wire_form(old),
                                                             "<html-12@sender.example.com>": wire_form(new)}


def test_a_zstd_body_is_read_back_only_within_its_limit_and_whole() -> None:
    """The size a frame claims is checked before it is inflated; a cut frame is refused."""
    raw = html_mail(5)
    packed = body.pack(raw)
    assert packed.startswith(body.MARK) and len(packed) < len(raw) // 2
    assert body.unpack(packed) == raw and body.unpack(packed, limit=len(raw)) == raw
    for damaged, limit in ((packed, len(raw) - 1), (packed[:-20], body.MAX_BODY), (body.MARK + b"\x01\x02", 100)):
        try:
            body.unpack(damaged, limit=limit)
        except body.BodyError:
            continue
        raise AssertionError(f"read back a damaged or oversized body ({len(damaged)} bytes, limit {limit})")
    assert body.shown(packed[:-20]) == packed[:-20]


def many_forms() -> list[bytes]:
    """Bodies of every stored form: small, compressed, incompressible (short and probed),
    starting like a stored form."""
    rng = random.Random(3)
    attached = b"Subject: a\n\n" + base64.encodebytes(rng.randbytes(40_000))
    return [synthetic(1, size=600), synthetic(2, size=1024), synthetic(3), html_mail(4), attached,
            rng.randbytes(3000), body.MARK + synthetic(5), body.ESCAPE + b"x" * 2000, b"\x00\xdc", b"x"]


def test_a_chunk_of_bodies_is_packed_as_one_by_one() -> None:
    """pack_many (one zstd call for a chunk, off the GIL) gives each body pack's form."""
    raws = many_forms()
    packed = body.pack_many(raws)
    assert packed == [body.pack(raw) for raw in raws]
    assert [body.unpack(p) for p in packed] == raws
    assert sum(p.startswith(body.MARK) for p in packed) == 4  # 2 KB text, HTML and the two led by a mark


def test_a_full_chunk_of_every_stored_form_reads_back(client: Client, rclient: redis.Redis) -> None:
    """A chunk of ENQUEUE_CHUNK messages has its bodies packed in a helper thread and put in
    their places: each message keeps its own body and its own size."""
    from drain.store.enqueue import ENQUEUE_CHUNK
    forms = many_forms()
    raws = [b"To: u%d@example.net\nFrom: s@example.com\n\n" % i + forms[i % len(forms)] + b"%d" % i
            for i in range(ENQUEUE_CHUNK + 5)]
    ids = client.enqueue_many(raws).ids
    assert len(ids) == len(raws)
    got = rclient.pipeline()
    for msg_id in ids:
        got.hmget(keys.message(msg_id), ["raw", "sz"])
    for raw, (kept, size) in zip(raws, got.execute(), strict=True):
        assert body.unpack(kept) == raw and kept == body.pack(raw)
        assert size == (str(len(raw)).encode() if kept.startswith(body.MARK) else None)
