"""The producer API: hand messages to drain from Python.

    from drain.intake.api import Client
    client = Client.connect()                      # settings from the environment
    msg_id = client.enqueue(raw_bytes)             # envelope taken from the headers
    result = client.enqueue_many(messages)         # bytes, EmailMessage, or Submission
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message

import redis

from drain.errors import InputError, QueueFull
from drain.intake import rules
from drain.intake.memory import MemoryGuard
from drain.message import Envelope, as_bytes, envelope_from_headers
from drain.observe.status import Status, read
from drain.settings import Settings
from drain.store.connection import connect
from drain.store.durability import Guard
from drain.store.store import ENQUEUE_CHUNK, Item, Store
from drain.worker.dispatch import ensure_tokens

log = logging.getLogger(__name__)


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
        # Refuses new mail (QueueFull) while Redis is nearly full: DRAIN_MAX_MEMORY_FRACTION.
        self.memory = MemoryGuard(client, settings.max_memory_fraction)

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
        # isspace() stops at the first byte that is not white space; strip() copied the message.
        if not raw or raw.isspace():
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
        """Queue one message; returns its id once Redis holds it (as durably as DRAIN_DURABILITY says).

        QueueFull while Redis memory is over DRAIN_MAX_MEMORY_FRACTION of its maxmemory."""
        raw, env = self.prepare(message, sender, recipients)
        self.memory.check()
        rule = rules.first_match(rules.load(self.redis), raw, env)
        with self.memory.translating():
            ids = self.store.enqueue_many([(raw, env, rule.findings() if rule else None)])
        self._stored()
        return ids[0]

    def enqueue_many(self, messages: Iterable[bytes | Message | Submission], lane: str = "fresh") -> Accepted:
        """Queue many messages in chunks of one transaction each; refusals are reported, not raised.

        lane "backlog" is for bulk loads (a replayed or migrated queue) that must not go
        ahead of new mail. When Redis is nearly full, QueueFull is raised; its `accepted`
        holds the ids of the chunks stored before (they are queued)."""
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

        items = prepared()
        try:
            while chunk := list(itertools.islice(items, ENQUEUE_CHUNK)):
                self.memory.check()
                with self.memory.translating():
                    result.ids.extend(self.store.enqueue_many(chunk, lane=lane))
        except QueueFull as exc:
            exc.accepted = list(result.ids)
            if result.ids:
                self._stored()
            raise
        self._stored()
        return result

    def _stored(self) -> None:
        """After a write: wait for durability as configured, and make sure batch jobs exist
        for the new mail. Mail already stored is never reported as refused: a batch job that
        Redis has no memory for now is topped up by the workers' housekeeping."""
        self.durable.confirm()
        try:
            ensure_tokens(self.redis, self.settings)
        except redis.OutOfMemoryError:
            log.warning("mail stored, but Redis had no memory left for its batch job (housekeeping adds it)")

    def status(self) -> Status:
        return read(self.store)
