"""The worker's self-audit (drain/worker/audit.py): mail Redis holds under a live worker's name
that none of its batches is working (a settle lost in a Sentinel failover) is healed without a
restart: settled again with its known outcome, or given back to ready.

The lost settle is simulated below the worker's ledger: the store drops settles, journal
writes and commits while `dropping` is set and answers as the old master did (acknowledged),
so Redis keeps the state of before the settle, as the promoted replica does. Real redis-server,
real SMTP relay; the audits are given their clock (`now`), no waiting."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import redis

from drain import validate
from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys, record
from drain.store.store import Outcome, Store
from drain.worker import lanes
from drain.worker.audit import GRACE_S, AuditedStore, Healed, Ledger, audit
from drain.worker.batch import Batch
from drain.worker.delivery import Relay, RelayConfig
from drain.worker.dispatch import ensure_tokens
from drain.worker.housekeeping import Housekeeper
from drain.worker.resilience import ResilientStore
from drain.worker.runtime import Runtime
from tests.conftest import wait_for


class _Dropping(ResilientStore):
    """Below the ledger: writes the old master acknowledged and lost with it."""

    dropping = False

    def settle(self, owner: str, outcomes: Any) -> tuple[int, int]:
        return (len(outcomes), 0) if self.dropping else super().settle(owner, outcomes)

    def journal(self, owner: str, outcomes: Sequence[Outcome], first: bool) -> None:
        if not self.dropping:
            super().journal(owner, outcomes, first)

    def journal_many(self, journals: Sequence[tuple[str, Sequence[Outcome], bool]]) -> None:
        if not self.dropping:
            super().journal_many(journals)

    def commit(self, owner: str) -> tuple[int, int]:
        return (0, 0) if self.dropping else super().commit(owner)


class Lossy(AuditedStore, _Dropping):
    """A worker's store whose settles are lost while `dropping` is set."""


def _batch(store: Store, settings: Settings, owner: str = "w1") -> int:
    sender = Relay(RelayConfig.from_url(settings.relay), timeout_s=5.0)
    try:
        return Batch(store, sender, owner, validate.Limits()).run()
    finally:
        sender.close()


def _sent(relay: Sink) -> Counter[str]:
    """How many times the relay took each message (by Message-ID)."""
    return Counter(m.message_id for m in relay.messages)


def _heal(store: AuditedStore, owner: str = "w1") -> Healed:
    """Two audits a grace period apart: the first finds the stuck mail, the second heals it."""
    assert audit(store, owner, store.ledger, now=1000.0) == Healed()
    return audit(store, owner, store.ledger, now=1000.0 + GRACE_S)


def test_deliveries_whose_settle_was_lost_are_settled_again_not_sent_again(
        client: Client, rclient: redis.Redis, settings: Settings, relay: Sink, work: Callable[..., bool]) -> None:
    """Journal writes and the final settle of a batch are lost: the 12 delivered messages stay
    in flight under the live worker. The audit settles them as delivered. Mutants caught: the
    housekeeper's audit gone (in flight stays 12); AuditedStore.journal not keeping the
    outcomes (10 of them given back and sent again); every stuck id given back whatever is known
    (all 12 sent twice)."""
    ids = client.enqueue_many([synthetic(i) for i in range(12)]).ids
    store = Lossy(rclient, settings)
    store.dropping = True
    assert _batch(store, settings) == 12
    store.dropping = False
    books = store.books()
    assert (books.in_flight, books.delivered) == (12, 0), books
    assert len(_sent(relay)) == 12

    assert _heal(store) == Healed(again=12)
    books = store.books()
    assert (books.in_flight, books.delivered, books.ready) == (0, 12, 0) and books.balanced, books
    assert not any(rclient.exists(keys.message(i)) for i in ids)
    ensure_tokens(rclient, settings)
    work()
    assert set(_sent(relay).values()) == {1} and len(_sent(relay)) == 12, _sent(relay)


def test_each_known_outcome_is_settled_again_and_unknown_claims_go_back_to_ready(
        client: Client, rclient: redis.Redis, settings: Settings, relay: Sink, work: Callable[..., bool]) -> None:
    """Delivered, deferred and bounced outcomes of a lost settle are applied as they were; a
    claim of a lane of this process that no batch knows (its reply lost) goes back to ready and
    is delivered once; a claim of another process ("w10", whose name starts like this one's) is
    left alone. Mutants caught: deferred/bounced not kept (all 6 back to ready); the owner match
    by prefix without the "/" (w10's claim taken); the audit gone (9 + 2 stay in flight)."""
    relay.set_policy(rcpt_policy=lambda a: "451 4.3.0 later" if a.startswith(("user1@", "user4@", "user7@"))
                     else "550 5.1.1 no such user" if a.startswith(("user2@", "user5@", "user8@")) else None)
    ids = client.enqueue_many([synthetic(i) for i in range(9)]).ids
    store = Lossy(rclient, settings)
    store.dropping = True
    assert _batch(store, settings) == 9
    store.dropping = False
    later = client.enqueue_many([synthetic(i) for i in range(9, 12)]).ids
    plain = Store(rclient, settings)
    assert plain.claim("w1/1", 2).ids == later[:2]  # its reply never reached the lane
    assert plain.claim("w10", 1).ids == later[2:]
    assert store.books().in_flight == 12

    assert _heal(store) == Healed(again=9, back=2)
    books = store.books()
    assert (books.delivered, books.deferred, books.bounced, books.ready, books.in_flight) == (3, 3, 3, 2, 1), books
    deferred = {i.decode() for i in rclient.zrange(keys.DEFERRED, 0, -1)}
    assert deferred == {ids[1], ids[4], ids[7]}
    assert all(rclient.hget(keys.message(i), record.ATTEMPTS) == b"1" for i in deferred)
    bounced = sorted(f[b"id"].decode() for _id, f in rclient.xrange(keys.BOUNCES))
    assert bounced == sorted([ids[2], ids[5], ids[8]])
    assert rclient.hget(keys.INFLIGHT, later[2]) == b"w10"

    plain.settle("w10", [Outcome(later[2], "requeue")])
    ensure_tokens(rclient, settings)
    work()
    sent = _sent(relay)
    assert set(sent.values()) == {1} and len(sent) == 6, sent  # 3 delivered before, 3 now


def test_mail_of_a_live_batch_and_mail_within_the_grace_period_is_left_alone(
        client: Client, rclient: redis.Redis, settings: Settings) -> None:
    """Mutants caught: the live check gone (the live claim given back); the grace check gone
    (the orphan given back on first sight)."""
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    store = AuditedStore(rclient, settings)
    assert store.claim("w1", 2).ids == ids[:2]  # a batch is working these
    assert Store(rclient, settings).claim("w1", 1).ids == ids[2:]  # this one no batch knows
    ledger = store.ledger

    assert audit(store, "w1", ledger, now=0.0) == Healed()
    assert audit(store, "w1", ledger, now=GRACE_S / 2) == Healed()
    assert store.books().in_flight == 3
    assert audit(store, "w1", ledger, now=GRACE_S) == Healed(back=1)
    assert audit(store, "w1", ledger, now=10 * GRACE_S) == Healed()
    books = store.books()
    assert (books.in_flight, books.ready) == (2, 1), books
    store.settle("w1", [Outcome(i, "requeue") for i in ids[:2]])


def test_the_housekeeper_audits_its_process(client: Client, rclient: redis.Redis, settings: Settings) -> None:
    """The housekeeper thread runs the audit on its own. Mutant caught: the audit call gone
    from Housekeeper.run (the claim stays in flight: timed out)."""
    client.enqueue_many([synthetic(0)])
    store = AuditedStore(rclient, settings, Ledger(grace_s=0.1))
    Store(rclient, settings).claim("w1", 1)
    keeper = Housekeeper(store, "w1", ledger=store.ledger, audit_every_s=0.05)
    keeper.start()
    try:
        wait_for(lambda: store.books().in_flight == 0, timeout=10, what="the audit to give the claim back")
    finally:
        keeper.stop()
    assert store.books().ready == 1


def test_a_worker_with_lanes_heals_the_settles_it_lost(
        client: Client, rclient: redis.Redis, settings: Settings, relay: Sink, work: Callable[..., bool]) -> None:
    """A worker's lanes (two relay sessions, two owners) claim and settle through the runtime's
    store, which keeps the process's ledger: the audit under the process's owner heals both
    lanes' mail. Mutants caught: the runtime's store a plain ResilientStore; the owner match
    without the lanes' "<owner>/<n>" (the second lane's mail stays in flight)."""
    s = settings.with_(relay_sessions=2, batch_size=10)
    client.enqueue_many([synthetic(i) for i in range(30)])
    rt = Runtime.build(rclient, s)
    assert isinstance(rt.store, AuditedStore)
    lossy = Lossy(rclient, s, rt.store.ledger)
    rt.store = lossy
    rt.start(housekeeping=False)
    try:
        lossy.dropping = True
        while lossy.books().ready:
            lanes.deliver(rt)
        lossy.dropping = False
        owners = set(lossy.held())
        assert owners == {rt.owner, f"{rt.owner}/1"}, owners
        assert _heal(lossy, rt.owner) == Healed(again=30)
    finally:
        rt.stop()
    books = client.store.books()
    assert (books.in_flight, books.delivered) == (0, 30) and books.balanced, books
    ensure_tokens(rclient, s)
    work()
    assert set(_sent(relay).values()) == {1} and len(_sent(relay)) == 30
