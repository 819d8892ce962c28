"""The enqueue's chunks (drain/store/enqueue.py, lua/enqueue.lua): the message table names a
message's domain and tenant by their place in the chunk's lists in 2 bytes each, so a chunk
with more than 255 of each gives every message its own; large mail goes in chunks cut by
their bytes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.message import Envelope
from drain.settings import Settings
from drain.store import body, enqueue, keys


def test_a_chunk_of_300_tenants_and_300_domains_gives_each_message_its_own(
        client: Client, rclient: redis.Redis) -> None:
    """Mutants caught: the high byte of a tenant's or a domain's place dropped (messages from
    the 257th on stored with the tenant or domain of the 1st on)."""
    count = 300
    items = [(synthetic(i), Envelope("a@x.example", (f"u@d{i}.example",)), None) for i in range(count)]
    ids = client.store.enqueue_many(items, tenants=[f"t{i}" for i in range(count)])
    pipe = rclient.pipeline()
    for msg_id in ids:
        pipe.hmget(keys.message(msg_id), ["dom", "tn"])
    got = [(dom.decode(), tn.decode()) for dom, tn in pipe.execute()]
    assert got == [(f"d{i}.example", f"t{i}") for i in range(count)]
    assert rclient.llen(keys.lane("fresh", "t299")) == 1


def test_large_mail_goes_in_chunks_of_at_most_the_byte_limit_and_one_message(
        client: Client, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten 3 KB messages under a 10 KB limit: chunks of 4 (the one that reaches the limit
    closes it), so 3 script calls, and every message queued in order. Mutant caught: the
    byte limit not applied (one call of 10)."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK_BYTES", 10_000)
    raws = [synthetic(i, size=3000) for i in range(10)]
    rclient.config_resetstat()
    ids = client.store.enqueue_many([(raw, Envelope("a@x.example", ("u@y.example",)), None) for raw in raws])
    calls = int(rclient.info("commandstats")["cmdstat_evalsha"]["calls"])
    assert calls == 3 and len(ids) == 10
    assert [body.unpack(rclient.hget(keys.message(i), "raw") or b"") for i in ids] == raws


def test_drain_enqueue_groups_large_mail_by_its_bytes_too(
        client: Client, rclient: redis.Redis, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`drain enqueue` of ten 3 KB files under a 10 KB limit hands the API groups of 4, 4 and
    2 (it holds no more mail at once than a chunk does), and prints every id. Mutant caught:
    the CLI's groups cut by count alone (one group of 10)."""
    from drain.cli import main

    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK_BYTES", 10_000)
    monkeypatch.setenv("DRAIN_REDIS_URL", settings.redis_url or "")
    paths = []
    for n in range(10):
        paths.append(tmp_path / f"m{n}.eml")
        paths[-1].write_bytes(synthetic(n, size=3000))
    groups: list[int] = []
    real = Client.enqueue_many

    def counted(self: Client, items: Iterable[Any], **kw: Any) -> Any:
        given = list(items)
        groups.append(len(given))
        return real(self, given, **kw)

    monkeypatch.setattr(Client, "enqueue_many", counted)
    main(["enqueue", *map(str, paths)])
    assert groups == [4, 4, 2]
    assert len(capsys.readouterr().out.split()) == 10 == client.store.books().accepted
