"""The enqueue script's message table names a message's domain and tenant by their place in
the chunk's lists in 2 bytes each (lua/enqueue.lua): a chunk with more than 255 of each
gives every message its own."""

from __future__ import annotations

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.message import Envelope
from drain.store import keys


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
