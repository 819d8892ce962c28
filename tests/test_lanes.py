"""Lanes (DRAIN_RELAY_SESSIONS): one worker process works several claims at once, each on
its own relay session, and still has at most DRAIN_SETTLE_EVERY messages in the relay's
hands without their outcome recorded (the duplicate window of one worker death)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from drain.demo.seeding import synthetic
from drain.demo.sink import Received, Sink, Stall
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.settings import Settings
from drain.store import keys
from drain.store.store import Outcome, Stored
from drain.worker.batch import Batch


def test_a_second_lane_delivers_while_the_first_waits_on_the_relay(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """The relay holds the first message until another message reaches it: only a second
    session of the same worker process can send that one meanwhile."""
    client.enqueue_many([synthetic(i) for i in range(10)])
    release = threading.Event()
    overlapped: list[bool] = []

    def policy(index: int, _msg: Received) -> Stall | None:
        if index == 0:
            return Stall(seconds=3, release=release)
        if index == 1:
            overlapped.append(relay.handler.accepted == 0)  # the first is still unanswered
            release.set()
        return None

    relay.set_policy(data_policy=policy)
    work(relay_sessions=2, batch_size=5)
    assert overlapped == [True]
    books = client.store.books()
    assert books.delivered == 10 and books.in_flight == 0


# Of ids (ARGV[2...]), how many are in flight (KEYS[1]) and in no journal (keys ARGV[1]), read
# in one atomic step.
UNSETTLED = """
local journalled = {}
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  for _, element in ipairs(redis.call('LRANGE', key, 0, -1)) do  -- entries of drain/store/journal.py
    local entries, at = {}, 2
    if string.byte(element, 1) == 20 then  -- a write's bundle of entries
      while at <= #element do
        local e, after = struct.unpack('>I4c0', element, at)
        entries[#entries + 1], at = e, after
      end
    else
      entries[1] = element
    end
    for _, e in ipairs(entries) do
      local id
      if string.byte(e, 1) >= 16 then _, id = struct.unpack('>BI4c0', e)
      else _, _, id = struct.unpack('>BI4c0I4c0', e) end
      journalled[id] = true
    end
  end
end
local count = 0
for i = 2, #ARGV do
  if not journalled[ARGV[i]] and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then count = count + 1 end
end
return count
"""


def _on_local_disk(folder: str) -> set[str]:
    """The ids in the lanes' local journal files (drain/store/localjournal.py)."""
    found: set[str] = set()
    for path in Path(folder).glob("*.journal"):
        data, at = path.read_bytes(), 0
        while at + 4 <= len(data):
            (size,) = struct.unpack_from(">I", data, at)
            record = data[at + 4: at + 4 + size]
            at += 4 + size
            if len(record) == size and record[:1] != b"d":  # (the header starts with MAGIC)
                (length,) = struct.unpack_from(">I", record, 1)
                found.add(record[5: 5 + length].decode())
    return found


@pytest.mark.parametrize("local", [False, True])
def test_lanes_share_one_settle_window(client: Client, relay: Sink, rclient: redis.Redis, settings: Settings,
                                       work: Callable[..., bool], local: bool) -> None:
    """Whenever the relay takes a message, the messages it has taken that Redis still holds
    in flight and not settled (nor in the journal, where they count as delivered) are at most
    DRAIN_SETTLE_EVERY, across all lanes; with the local journal, at most
    DRAIN_REDIS_JOURNAL_EVERY, and those on no local disk either at most one per lane (the
    one the relay is taking). Mutants caught: size_for ignoring the local journal (Redis
    holds at most 2); _deposit not writing to disk (7 on no disk)."""
    total, window, lanes = 60, 2, 3
    ids = client.enqueue_many([synthetic(i) for i in range(total)]).ids
    by_message_id = {f"<synthetic-{i}@sender.example.com>": ids[i] for i in range(total)}
    taken: list[str] = []
    most: list[int] = []
    nowhere: list[int] = []
    probe = redis.Redis(connection_pool=rclient.connection_pool)

    def policy(_index: int, msg: Received) -> None:
        taken.append(by_message_id[msg.message_id])
        on_disk = _on_local_disk(settings.local_journal) if local else set()  # (read first: see the docstring)
        most.append(int(probe.eval(UNSETTLED, 1, keys.INFLIGHT, keys.journal("*"), *taken)))
        nowhere.append(int(probe.eval(UNSETTLED, 1, keys.INFLIGHT, keys.journal("*"),
                                      *(i for i in taken if i not in on_disk))))

    relay.set_policy(data_policy=policy)
    work(relay_sessions=lanes, batch_size=10, settle_every=window, redis_journal_every=8,
         local_journal=settings.local_journal if local else "off")
    assert client.store.books().delivered == total
    assert len(most) == total and max(most) <= (8 if local else window), most
    assert max(nowhere) <= (lanes if local else window), nowhere
    if local:
        assert max(most) > window, most  # Redis's journal is written less often


@pytest.mark.parametrize("limit", ["global", "domain"])
def test_rated_mail_is_sent_by_one_lane_at_a_time_only_for_a_domain(
        client: Client, relay: Sink, work: Callable[..., bool], limit: str) -> None:
    """A domain's rate is booked when it is asked for and its sends are paced by a second GCRA,
    which lanes side by side could bunch: mail to a rated domain goes one send at a time. The
    global rate is booked by the claim, before any send, so lanes go on side by side under it
    (the k-th delivery still comes after the k-th booking: tests/test_ratelimit.py checks that
    with lanes on). Mutants caught: lanes under a rated domain overlap; a global rate forcing
    one lane (the replay's rate then cannot be reached)."""
    if limit == "global":
        ratelimit.set_global(client.redis, 1000.0)
    else:
        ratelimit.set_domain(client.redis, "rated.example.com", 1000.0)
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@rated.example.com",)) for i in range(6)])
    overlapped: list[bool] = []

    def policy(index: int, _msg: Received) -> Stall | None:
        if index == 0:
            return Stall(seconds=1)
        if index == 1:
            overlapped.append(relay.handler.accepted == 0)
        return None

    relay.set_policy(data_policy=policy)
    work(relay_sessions=2, batch_size=3)
    assert overlapped == [limit == "global"]
    assert client.store.books().delivered == 6


def test_a_failing_lane_fails_the_job_and_every_message_is_accounted(
        client: Client, relay: Sink, rclient: redis.Redis, work: Callable[..., bool],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a lane of its own thread (here drain's own decide raising, once) stops the
    others between messages, the job fails as with one lane, and nothing is left in flight:
    the rest goes back to ready and a later worker delivers it."""
    client.enqueue_many([synthetic(i) for i in range(30)])
    original = Batch.decide
    raised: list[str] = []

    def decide(self: Batch, msg: Stored) -> Outcome:
        if not raised and threading.current_thread() is not threading.main_thread():
            raised.append(msg.id)
            raise RuntimeError("a bug in drain")
        return original(self, msg)

    monkeypatch.setattr(Batch, "decide", decide)
    work(relay_sessions=2, batch_size=10)
    queue = Queue(keys.RQ_QUEUE, connection=rclient, serializer=JSONSerializer)
    assert raised and len(FailedJobRegistry(queue=queue).get_job_ids()) >= 1
    assert client.store.books().in_flight == 0
    monkeypatch.setattr(Batch, "decide", original)
    work(relay_sessions=2, batch_size=10)
    books = client.store.books()
    assert books.delivered == 30 and books.in_flight == 0
    assert len({m.message_id for m in relay.messages}) == 30
