"""A message's recipients by destination group, as one delivery attempt leaves them: delivered,
bounced (with the reply), to try again, or waiting behind their domain's gate."""

from __future__ import annotations

from dataclasses import dataclass, field

from drain.flow.adapt import is_throttling
from drain.flow.gate import Answer
from drain.message import Envelope
from drain.worker.delivery import SESSION_CODES, Result, permanent


def _no_quick_retry(code: int, text: str) -> bool:
    """A transient reply that a second's wait would not change: 421 or another "slow down"
    (trying again at once is what the relay asked drain not to do), or a session reply
    (530 "authenticate first", 503, ...: the configuration's trouble, not the message's)."""
    return code in SESSION_CODES or is_throttling(code, text)


@dataclass(slots=True)
class Groups:
    delivered: list[str] = field(default_factory=list)
    # Refused for good: recipient -> the relay's reply.
    bounced: dict[str, str] = field(default_factory=dict)
    # The relay said "later" (or gave no answer).
    transient: list[str] = field(default_factory=list)
    # A transient failure was the connection's, the relay's, a session reply or a "slow
    # down" (421, 4.7.x, "too many"): no quick retry.
    slow: bool = False
    # A transient failure was something other than a "slow down" (421, 4.7.x, "too many").
    unthrottled: bool = False
    # Groups the gate did not let go now: (domain, recipients, the gate's answer), in order.
    blocked: list[tuple[str, tuple[str, ...], Answer]] = field(default_factory=list)
    # The last reply that was not a plain success, for the record of a deferral or bounce
    # (once some recipient is to be tried again, the last reply that said so).
    reply: str = ""
    # The replies of the relays that took a group (they carry the relay's queue id).
    accepted: list[str] = field(default_factory=list)

    def add(self, rcpts: tuple[str, ...], result: Result) -> None:
        """Sort one group's recipients by the relay's result."""
        waited = len(self.transient)
        for rcpt in rcpts:
            if rcpt in result.refused:
                code, text = result.refused[rcpt]
                if permanent(code):
                    self.bounced[rcpt] = f"{code} {text}"
                else:
                    self.transient.append(rcpt)
                    self.slow = self.slow or result.relay_fault or _no_quick_retry(code, text)
                    self.unthrottled = self.unthrottled or result.relay_fault or not is_throttling(code, text)
            elif result.kind == "delivered":
                self.delivered.append(rcpt)
            elif result.kind == "bounced":
                self.bounced[rcpt] = result.reply
            else:
                self.transient.append(rcpt)
                self.slow = (self.slow or result.relay_fault or result.code == 0
                             or _no_quick_retry(result.code, result.text))
                self.unthrottled = (self.unthrottled or result.relay_fault or result.code == 0
                                    or not is_throttling(result.code, result.text))
        if result.kind == "delivered":
            self.accepted.append(f"{result.code} {result.text}".strip())
        # A message that waits keeps the reply it waits for: a later group's bounce does not
        # take its place (the bounce has its own record and event).
        if (result.kind != "delivered" or result.refused) and (len(self.transient) > waited or not self.transient):
            self.reply = result.reply

    @property
    def throttled(self) -> bool:
        """Every recipient to try again was refused with a "slow down" and nothing else."""
        return bool(self.transient) and not self.unthrottled

    def rest(self, env: Envelope) -> Envelope:
        """The envelope still to do: the first waiting group first (its domain becomes the
        message's), then the other waiting groups, then recipients to try again."""
        waiting = [rcpt for _domain, rcpts, _answer in self.blocked for rcpt in rcpts]
        again = set(self.transient)
        return Envelope(env.sender, (*waiting, *(r for r in env.recipients if r in again)), env.smtputf8)
