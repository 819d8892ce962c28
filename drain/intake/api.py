"""The producer API: hand messages to drain from Python.

    from drain.intake.api import Client
    client = Client.connect()                      # settings from the environment
    msg_id = client.enqueue(raw_bytes)             # envelope taken from the headers
    result = client.enqueue_many(messages)         # bytes, EmailMessage, or Submission
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message

import redis

from drain.errors import InputError
from drain.intake import rules
from drain.message import Envelope, as_bytes, envelope_from_headers
from drain.observe.status import Status, read
from drain.settings import Settings
from drain.store.connection import connect
from drain.store.durability import Guard
from drain.store.store import Item, Store
from drain.worker.dispatch import ensure_tokens


@dataclass(frozen=True)
class Submission:
    """A message with an explicit envelope (either part may be left to the headers)."""

    message: bytes | Message
    sender: str | None = None
    recipients: tuple[str, ...] | None = None


@dataclass
class Accepted:
    ids: list[str] = field(default_factory=list)
    # (position in the input, why) for each message refused at the door.
    rejected: list[tuple[int, str]] = field(default_factory=list)


class Client:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.store = Store(client, settings)
        # Waits for fsync or replicas after each enqueue when DRAIN_DURABILITY asks for it.
        self.durable = Guard(client, settings)

    @classmethod
    def connect(cls, settings: Settings | None = None) -> Client:
        """A client for the configured Redis; durability it cannot have fails here (ConfigError)."""
        settings = settings or Settings.from_env()
        client = cls(connect(settings), settings)
        _plan = client.durable.plan
        return client

    def prepare(self, message: bytes | Message, sender: str | None = None,
                recipients: Iterable[str] | None = None) -> tuple[bytes, Envelope]:
        """Bytes and envelope for one message, or InputError if drain cannot take it at all.

        Only what makes a message impossible to hold is refused here (empty, over the size
        limit); every other defect is judged by the workers and ends in quarantine.
        """
        raw = as_bytes(message)
        if not raw.strip():
            raise InputError("message is empty")
        if len(raw) > self.settings.max_message_bytes:
            raise InputError(f"message is {len(raw)} bytes, over the {self.settings.max_message_bytes}-byte limit")
        rcpts = tuple(recipients) if recipients is not None else None
        if sender is None or not rcpts:
            headers = envelope_from_headers(raw)
            sender = headers.sender if sender is None else sender
            rcpts = rcpts or headers.recipients
        if len(rcpts) > self.settings.max_recipients:
            raise InputError(f"message has {len(rcpts)} recipients, over the limit of {self.settings.max_recipients}")
        return raw, Envelope(sender, rcpts)

    def enqueue(self, message: bytes | Message, sender: str | None = None,
                recipients: Iterable[str] | None = None) -> str:
        """Queue one message; returns its id once Redis holds it (as durably as DRAIN_DURABILITY says)."""
        raw, env = self.prepare(message, sender, recipients)
        rule = rules.first_match(rules.load(self.redis), raw, env)
        ids = self.store.enqueue_many([(raw, env, rule.findings() if rule else None)])
        self.durable.confirm()
        ensure_tokens(self.redis, self.settings)
        return ids[0]

    def enqueue_many(self, messages: Iterable[bytes | Message | Submission], lane: str = "fresh") -> Accepted:
        """Queue many messages in chunks of one transaction each; refusals are reported, not raised.

        lane "backlog" is for bulk loads (a replayed or migrated queue) that must not go
        ahead of new mail."""
        result = Accepted()
        active = rules.load(self.redis)

        def prepared() -> Iterator[Item]:
            for index, item in enumerate(messages):
                sub = item if isinstance(item, Submission) else Submission(item)
                try:
                    raw, env = self.prepare(sub.message, sub.sender, sub.recipients)
                except InputError as exc:
                    result.rejected.append((index, str(exc)))
                    continue
                rule = rules.first_match(active, raw, env) if active else None
                yield raw, env, rule.findings() if rule else None

        result.ids = self.store.enqueue_many(prepared(), lane=lane)
        self.durable.confirm()
        ensure_tokens(self.redis, self.settings)
        return result

    def status(self) -> Status:
        return read(self.store)
