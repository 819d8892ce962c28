"""Events written per batch: a settle's deliveries are one stream entry naming every message
it settled, an enqueue's received events go up to 50 to an entry, and a value repeated in
one entry is indexed once; each message's trace still shows its own events, found by its id,
its sender, recipient or Message-ID. The lookup index has 256 buckets; records of the
earlier 4,096-bucket format are read too."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.message import envelope_from_headers
from drain.store import events, keys, lookup
from drain.store.store import Outcome, Store
from drain.trace import history

REPLY = "250 2.0.0 Ok: queued as XYZ"


def _traced(client: Client, **q: Any) -> list[dict[str, Any]]:
    return history.trace(client.redis, history.Query(**q), time.time(), client.settings.trace_retention_s)


def _delivered(msg_id: str) -> Outcome:
    return Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.25))


def test_a_settle_of_deliveries_is_one_entry_and_each_trace_shows_its_delivery(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """Mutants caught: deliver.lua recording each delivery as its own entry (lib.event per
    message: 3 entries, not 1); lib.event_batch indexing only the first id (the others'
    traces end at received); decode_entry reading only the first pair of an entry."""
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert store.claim("w1", 3).ids == ids
    before = rclient.xlen(keys.EVENTS)

    assert store.settle("w1", [_delivered(i) for i in ids]) == (3, 0)

    assert rclient.xlen(keys.EVENTS) == before + 1
    for msg_id in ids:
        (doc,) = _traced(client, id=msg_id)
        assert [e["event"] for e in doc["events"]] == ["received", "delivered"], doc
        assert doc["state"] == "delivered" and doc["events"][1]["reply"] == REPLY
    entry = events.decode_all(rclient.xrange(keys.EVENTS, "-", "+")[-1:])
    assert [d["id"] for d in entry] == ids and {d["stream_id"] for d in entry} == {entry[0]["stream_id"]}


def test_received_events_go_fifty_to_an_entry_and_each_is_found(
        client: Client, rclient: redis.Redis) -> None:
    """Mutants caught: PER_ENTRY 1 in enqueue.lua (120 entries, not 3); the index records of
    a shared entry given another entry's place (a message's received not found by its id or
    Message-ID)."""
    items = [synthetic(i) for i in range(120)]
    ids = client.enqueue_many(items).ids

    assert rclient.xlen(keys.EVENTS) == 3
    received = [d for d in events.decode_all(rclient.xrange(keys.EVENTS)) if d["event"] == "received"]
    assert [d["id"] for d in received] == ids
    for k in (0, 49, 50, 119):
        (doc,) = _traced(client, id=ids[k])
        assert [e["event"] for e in doc["events"]] == ["received"], doc
        mid = events.message_id(items[k])
        assert mid and [d["id"] for d in _traced(client, message_id=mid)] == [ids[k]]


def test_a_value_repeated_in_one_entry_is_indexed_once(client: Client, rclient: redis.Redis) -> None:
    """Ten messages from one sender in one entry leave one record of the sender in its bucket,
    and a lookup by sender still finds all ten. Mutant caught: the producer's check of the
    values its entry has already left out (enqueue.py; ten records)."""
    ids = client.enqueue_many([synthetic(i) for i in range(10)]).ids
    sender = events.BY_SENDER + "billing@sender.example.com"
    tag, bucket = lookup._hashed(sender)
    day = int(time.time() // 86400)
    blob = rclient.get(keys.events_index(day, bucket)) or b""

    assert len(lookup.matches(blob, tag, day)) == 1
    assert sorted(d["id"] for d in _traced(client, sender="billing@sender.example.com")) == sorted(ids)


def test_records_of_the_earlier_4096_bucket_format_are_still_read(client: Client, rclient: redis.Redis) -> None:
    """A record appended to a 3-hex-digit bucket key (as before this format) is found.
    Mutant caught: lookup.where reading only the 256-bucket key."""
    ids = client.enqueue_many([synthetic(1)]).ids
    sid = rclient.xrange(keys.EVENTS)[0][0].decode()
    ms, seq = (int(x) for x in sid.split("-"))
    day = ms // 86_400_000
    value = events.BY_RECIPIENT + "someone@old-format.example"
    digest = hashlib.sha1(value.encode()).hexdigest()
    record = bytes.fromhex(digest[:6]) + ((ms - day * 86_400_000) * 8192 + seq).to_bytes(5, "big")
    rclient.append(keys.events_index(day, digest[6:9]), record)

    found = lookup.where(rclient, [value], [day])[value]
    assert found == [(ms, seq)]
    assert [d["id"] for d in lookup.read(rclient, found)] == ids


def test_an_entry_of_several_with_damaged_pairs_gives_the_readable_ones() -> None:
    """An entry's pairs that are not [id, data] are skipped, the rest read. Mutant caught:
    decode_entry without its shape check (a TypeError on a bare number)."""
    fields = {b"e": b"d", b"m": b'[["a1",["250 ok",1,0.5]],7,["a2"],["a3",["250 ok",2]]]'}
    docs = events.decode_all([(b"1700000000000-3", fields)])
    assert [(d["id"], d.get("attempt")) for d in docs] == [("a1", 1), ("a3", 2)]
    assert events.decode_all([(b"1700000000000-4", {b"e": b"d", b"m": b"not json"})]) == []


def test_the_entries_the_producer_groups_hold_fifty_and_a_lone_one_keeps_the_usual_form(
        client: Client, rclient: redis.Redis) -> None:
    """The producer groups the received events (enqueue.py): 51 messages make an entry of
    50 pairs and one lone event in the usual form (i, d). Mutants caught: a group closed at
    another size; the lone event sent as a group of one."""
    ids = client.enqueue_many([synthetic(i) for i in range(51)]).ids

    (_sid1, first), (_sid2, second) = rclient.xrange(keys.EVENTS)
    assert len(json.loads(first[b"m"])) == 50 and b"i" not in first
    assert second[b"i"].decode() == ids[50] and b"m" not in second
    assert [d["id"] for d in events.decode_all(rclient.xrange(keys.EVENTS))] == ids


def test_a_repeated_value_is_found_in_every_entry(client: Client, rclient: redis.Redis) -> None:
    """120 messages from one sender make three entries of one enqueue call, all at one place
    of the stream: the sender has one record for the call, and a lookup by sender finds all
    120. Mutants caught: the call's first entry added at a '*' id (the record's place holds none:
    nothing found); the place's sequence not 8191 (only the first entry read: 50 found)."""
    ids = client.enqueue_many([synthetic(i) for i in range(120)]).ids
    tag, bucket = lookup._hashed(events.BY_SENDER + "billing@sender.example.com")
    day = int(time.time() // 86400)

    assert len(lookup.matches(rclient.get(keys.events_index(day, bucket)) or b"", tag, day)) == 1
    assert sorted(d["id"] for d in _traced(client, sender="billing@sender.example.com")) == sorted(ids)
    assert sorted(d["id"] for d in _traced(client, sender="billing@sender.example.com")) == sorted(ids)


def _mail(n: int, sender: str, to: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: n{n}\r\nMessage-ID: <b{n}@x.example>\r\n"
            f"Date: Mon, 30 Nov 2026 01:00:00 +0000\r\n\r\nHello {n}\r\n").encode()


def test_a_lookup_gives_only_the_messages_it_asks_for_from_a_shared_entry(client: Client) -> None:
    """Messages of two senders and two recipients share one entry: a trace by sender or by
    recipient gives only its own, and by id only that message's events. Mutant caught:
    history.find_ids without its check of each received event (every message of the entry)."""
    ids = client.enqueue_many([_mail(i, "ann@a.example" if i % 2 else "bo@b.example",
                                     "x@one.example" if i < 3 else "y@two.example") for i in range(6)]).ids

    assert [d["id"] for d in _traced(client, sender="ann@a.example")] == [ids[1], ids[3], ids[5]]
    assert [d["id"] for d in _traced(client, recipient="y@two.example")] == ids[3:]
    assert [d["id"] for d in _traced(client, recipient="@one.example")] == ids[:3]
    (doc,) = _traced(client, id=ids[4])
    assert doc["sender"] == "bo@b.example" and [e["event"] for e in doc["events"]] == ["received"]


def test_mail_quarantined_at_enqueue_shows_both_its_events(client: Client, store: Store) -> None:
    """A message held at enqueue (findings given) has its received and its quarantined event,
    both found by its id, beside a ready one. Mutant caught: the quarantined event's index
    record left out of its id's bucket (enqueue.py: the trace stops at received)."""
    findings = '[{"code": "rule.match", "severity": "quarantine", "detail": "test"}]'
    raws = [synthetic(i) for i in range(3)]
    ids = store.enqueue_many([(raw, envelope_from_headers(raw), findings if i == 1 else None)
                              for i, raw in enumerate(raws)])
    for k, msg_id in enumerate(ids):
        (doc,) = _traced(client, id=msg_id)
        assert [e["event"] for e in doc["events"]] == (["received", "quarantined"] if k == 1 else ["received"]), doc


def test_an_enqueue_behind_a_stream_id_ahead_of_the_clock_still_records_and_finds(
        client: Client, rclient: redis.Redis) -> None:
    """The stream's last id is ahead of the clock (a clock set back; a sequence past 8191 in
    that ms): the call's entries go after it, in that ms, and are found. Mutant caught: the
    place taken from the clock alone (XADD refuses an id not after the last: the enqueue fails)."""
    ahead = int(time.time() * 1000) + 60_000
    rclient.xadd(keys.EVENTS, {"e": "R", "i": "x", "d": "[]"}, id=f"{ahead}-9000")

    ids = client.enqueue_many([synthetic(i) for i in range(60)]).ids

    sids = [sid.decode() for sid, _f in rclient.xrange(keys.EVENTS, f"{ahead}-9001", "+")]
    assert sids == [f"{ahead}-9001", f"{ahead}-9002"]
    for k in (0, 59):
        assert [e["event"] for e in _traced(client, id=ids[k])[0]["events"]] == ["received"]
