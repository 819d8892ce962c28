"""Replies to a pipelined transaction (RFC 2920) are judged exactly as replies to one
command at a time: per recipient, and only a 5xx about the message or a recipient bounces.

Each scenario runs against a real relay (aiosmtpd) that offers PIPELINING and one that does
not; the results must be the same and what the delivery rules say. Each scenario is followed
by a plain message on the same session, which must go through: the replies left over from a
refused pipelined transaction must not shift onto the next one.
"""

from __future__ import annotations

import pytest

from drain.demo.sink import Received, Sink
from drain.worker.delivery import Relay, RelayConfig, Result

RAW = b"From: a@example.com\r\nTo: ok@example.org\r\nSubject: s\r\n\r\nbody\r\n"


def _rcpt(address: str) -> str | None:
    if address.startswith("gone"):
        return "550 5.1.1 no such user"
    if address.startswith("later"):
        return "451 4.3.0 try later"
    if address.startswith("session"):
        return "503 5.5.1 bad sequence"
    return None


def _data(_index: int, received: Received) -> str | None:
    return "554 5.6.0 content refused" if b"Subject: refuse" in received.data else None


SCENARIOS: dict[str, tuple[list[str], bytes]] = {
    "all accepted": (["ok1@example.org", "ok2@example.org"], RAW),
    "one of three bounced, one deferred": (["ok@example.org", "gone@example.org", "later@example.org"], RAW),
    "the only recipient bounced": (["gone@example.org"], RAW),
    "every recipient refused, one for now": (["gone@example.org", "later@example.org"], RAW),
    "a session reply at RCPT": (["session@example.org"], RAW),
    "content refused at end of DATA": (["ok@example.org"], RAW.replace(b"Subject: s", b"Subject: refuse")),
}


def _outcome(result: Result) -> tuple[object, ...]:
    return (result.kind, result.code, result.relay_fault, sorted((r, c) for r, (c, _t) in result.refused.items()))


def _run(pipelining: bool) -> dict[str, tuple[tuple[object, ...], tuple[object, ...]]]:
    outcomes = {}
    with Sink(keep=True, rcpt_policy=_rcpt, data_policy=_data, pipelining=pipelining) as relay:
        sender = Relay(RelayConfig.from_url(relay.url), timeout_s=5.0, helo_name="drain.test")
        assert ("pipelining" in sender.extensions()) == pipelining
        try:
            for name, (recipients, raw) in SCENARIOS.items():
                first = sender.send("a@example.com", recipients, raw)
                after = sender.send("a@example.com", ["ok@example.org"], RAW)
                outcomes[name] = (_outcome(first), _outcome(after))
        finally:
            sender.close()
    return outcomes


EXPECTED = {
    "all accepted": ("delivered", 250, False, []),
    "one of three bounced, one deferred": ("delivered", 250, False, [("gone@example.org", 550),
                                                                     ("later@example.org", 451)]),
    "the only recipient bounced": ("bounced", 550, False, [("gone@example.org", 550)]),
    "every recipient refused, one for now": ("deferred", 550, False, [("gone@example.org", 550),
                                                                      ("later@example.org", 451)]),
    "a session reply at RCPT": ("deferred", 503, True, [("session@example.org", 503)]),
    "content refused at end of DATA": ("bounced", 554, False, []),
}


@pytest.mark.parametrize("pipelining", [True, False])
def test_replies_are_judged_per_recipient(pipelining: bool) -> None:
    outcomes = _run(pipelining)
    for name, expected in EXPECTED.items():
        first, after = outcomes[name]
        assert first == expected, name
        assert after == ("delivered", 250, False, []), f"the message after {name!r}"
