"""What a deferred message's record says: the reply that made it wait, not another group's."""

from __future__ import annotations

from collections.abc import Callable

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.observe.deferred import records


def test_a_deferral_records_the_4xx_that_left_it_waiting_not_a_bounced_groups_5xx(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """A message to two domains: one group answered 451 (it waits), the other 550 (bounced).
    The deferral's reply was the last group's, the 550: `drain show` and the deferred list
    said a deferred message was refused for good, and the 451 it waits for was nowhere."""
    relay.set_policy(data_policy=lambda _i, _m: "451 4.3.0 mailbox locked, try later",
                     rcpt_policy=lambda r: "550 5.1.1 no such user" if r.startswith("gone") else None)
    client.enqueue(synthetic(1), recipients=["ok@example.org", "gone@example.net"])
    work()
    (row,) = records(client.store)
    assert list(row.recipients) == ["ok@example.org"]
    assert row.last_reply.startswith("451 4.3.0"), row.last_reply
    assert row.history[-1]["reply"].startswith("451 4.3.0")
