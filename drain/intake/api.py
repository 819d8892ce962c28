"""The producer API: hand messages to drain from Python.

    from drain.intake.api import Client
    client = Client.connect()                      # settings from the environment
    msg_id = client.enqueue(raw_bytes)             # envelope taken from the headers
    result = client.enqueue_many(messages)         # bytes, EmailMessage, or Submission
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message

import redis

from drain.errors import InputError, QueueFull, RedisUnavailable
from drain.intake import door, rules
from drain.intake.memory import MemoryGuard
from drain.intake.tenant import resolve
from drain.message import Envelope, as_bytes, envelope_from_headers
from drain.observe import cells as cells_view
from drain.observe.status import Status, read
from drain.settings import Settings
from drain.store.cellname import check_name
from drain.store.cells import Cell, cells_of, down, is_multi
from drain.store.connection import check_eviction, client_for, connect
from drain.store.durability import Guard
from drain.store.store import ENQUEUE_CHUNK, Item, Store
from drain.worker.dispatch import ensure_tokens

# A message ready to store: its bytes, envelope, tenant (see drain.intake.tenant) and where it
# came from (api, cli, smtp CLIENT-ADDRESS: its received event says so).
Prepared = tuple[bytes, Envelope, str, str]


def submissions(prepare: Callable[[bytes | Message, str | None, Iterable[str] | None], tuple[bytes, Envelope]],
                settings: Settings, messages: Iterable[bytes | Message | Submission], tenant: str | None,
                source: str, rejected: list[tuple[int, str]]) -> Iterator[Prepared]:
    """The messages ready to store, each with its tenant (its own, else `tenant`, else as the
    settings and sender say); a message refused is noted in `rejected` (index, why) and skipped."""
    for index, item in enumerate(messages):
        try:
            if isinstance(item, Submission):
                raw, env = prepare(item.message, item.sender, item.recipients)
                raw, owner = resolve(raw, env, settings, item.tenant or tenant)
            else:  # bytes or a Message, the envelope from its headers (no Submission made per message)
                raw, env = prepare(item, None, None)
                raw, owner = resolve(raw, env, settings, tenant)
        except InputError as exc:
            rejected.append((index, str(exc)))
            continue
        yield raw, env, owner, source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """A message with an explicit envelope (either part may be left to the headers)."""

    message: bytes | Message
    sender: str | None = None
    recipients: tuple[str, ...] | None = None
    # Whose mail it is (see drain.intake.tenant); None: as the settings and the sender say.
    tenant: str | None = None


@dataclass
class Accepted:
    ids: list[str] = field(default_factory=list)
    # (position in the input, why) for each message refused at the door.
    rejected: list[tuple[int, str]] = field(default_factory=list)



def _holdable(sender: object, recipients: Iterable[object]) -> None:
    """InputError for an envelope Redis cannot hold: an address that is not text, or text
    that is not UTF-8 (a lone surrogate, as os.fsdecode leaves for a byte it cannot read);
    any other defect of an address is the workers' to judge (quarantine)."""
    for address in (sender, *recipients):
        if not isinstance(address, str):
            raise InputError(f"an address must be text, got {type(address).__name__}")
        try:
            address.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"address is not UTF-8 text: {address[:80]!a}") from None

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
        """A client for the configured Redis; durability it cannot have fails here (ConfigError).
        With several URLs (cells), a client that spreads new mail over them (CellsClient, below)."""
        settings = settings or Settings.from_env()
        if is_multi(settings):
            return CellsClient.connect_cells(settings)
        client = cls(connect(settings), settings)
        _plan = client.durable.plan
        return client

    def prepare(self, message: bytes | Message, sender: str | None = None,
                recipients: Iterable[str] | None = None) -> tuple[bytes, Envelope]:
        """Bytes and envelope for one message, or InputError if drain cannot take it at all.

        Only what makes a message impossible to hold is refused here (empty, over the size
        limit); every other defect is judged by the workers and ends in quarantine.
        """
        raw = message if type(message) is bytes else as_bytes(message)
        # isspace() stops at the first byte that is not white space; strip() copied the message.
        if not raw or raw.isspace():
            raise InputError("message is empty")
        if len(raw) > (limit := self.settings.max_message_bytes):
            # Readers stop one byte past the limit (drain enqueue): that many is no size to quote.
            size = "larger than" if len(raw) == limit + 1 else f"{len(raw)} bytes, over"
            raise InputError(f"message is {size} the {limit}-byte limit")
        if isinstance(recipients, str | bytes):  # tuple() of one address gave one "recipient" a character
            raise InputError("recipients must be a list of addresses, not one address as a string")
        rcpts = tuple(recipients) if recipients is not None else None
        headers = None
        given = sender is not None or bool(rcpts)
        if sender is None or not rcpts:
            headers = envelope_from_headers(raw)
            sender = headers.sender if sender is None else sender
            rcpts = rcpts or headers.recipients
        if given:  # the headers' addresses are text that is UTF-8 already (message.header_text)
            _holdable(sender, rcpts)
        if len(rcpts) > 1:
            rcpts = Envelope.unique_recipients(rcpts)  # one RCPT, one copy, per mailbox
        if len(rcpts) > self.settings.max_recipients:
            raise InputError(f"message has {len(rcpts)} recipients, over the limit of {self.settings.max_recipients}")
        if headers is not None and headers.sender == sender and headers.recipients == rcpts:
            return raw, headers  # the headers' envelope as it is (the common case: no second one made)
        return raw, Envelope(sender, rcpts)

    def enqueue(self, message: bytes | Message, sender: str | None = None,
                recipients: Iterable[str] | None = None, tenant: str | None = None) -> str:
        """Queue one message; returns its id once Redis holds it (as durably as DRAIN_DURABILITY says).

        QueueFull while Redis memory is over DRAIN_MAX_MEMORY_FRACTION of its maxmemory; InputError
        when `tenant` is not a tenant name (1 to 128 printable characters without spaces)."""
        raw, env = self.prepare(message, sender, recipients)
        raw, owner = resolve(raw, env, self.settings, tenant)
        self.memory.check()
        rule = rules.first_match(rules.load(self.redis), raw, env)
        with self.memory.translating():
            ids = self.store.enqueue_many([(raw, env, rule.findings() if rule else None)], tenants=[owner])
        self._stored()
        return ids[0]

    def enqueue_many(self, messages: Iterable[bytes | Message | Submission], lane: str = "fresh",
                     tenant: str | None = None, source: str = "api") -> Accepted:
        """Queue many messages in chunks of one transaction each; refusals are reported, not raised.

        lane "backlog" is for bulk loads (a replayed or migrated queue) that must not go
        ahead of new mail. When Redis is nearly full, QueueFull is raised; its `accepted`
        holds the ids of the chunks stored before (they are queued). `tenant` is the tenant of
        every message that does not name its own (Submission.tenant)."""
        result = Accepted()
        active = rules.load(self.redis)
        owners: list[str] = []

        def prepared() -> Iterator[Item]:
            for raw, env, owner, _source in submissions(self.prepare, self.settings, messages, tenant, source,
                                                        result.rejected):
                rule = rules.first_match(active, raw, env) if active else None
                owners.append(owner)
                yield raw, env, rule.findings() if rule else None

        try:
            with self.memory.translating():
                # `owners` grows as prepared() yields, one tenant per item, read in step by the store.
                self.store.enqueue_many(prepared(), lane=lane, tenants=iter(owners), source=source,
                                        stored=result.ids, before_chunk=self.memory.check)
        except QueueFull as exc:
            exc.accepted = list(result.ids)
            if result.ids:
                self._stored()
            raise
        self._stored()
        return result

    def write_batch(self, items: Iterable[Prepared], lane: str = "fresh",
                    active: list[rules.Rule] | None = None) -> list[str]:
        """Store prepared messages (bytes, envelope, tenant) in one go (the SMTP ingress's
        path): the operator rules applied (`active`: already loaded), QueueFull while Redis is
        nearly full, and the durability wait and batch jobs as after any write. Returns the ids
        in order."""
        active = rules.load(self.redis) if active is None else active
        listed = list(items)
        self.memory.check()
        with self.memory.translating():
            ids = self.store.enqueue_many(
                ((raw, env, rule.findings() if (rule := rules.first_match(active, raw, env)) else None)
                 for raw, env, _tenant, _source in listed), lane=lane,
                tenants=[tenant for _r, _e, tenant, _s in listed], source=[source for *_x, source in listed])
        self.durable.confirm()
        try:
            ensure_tokens(self.redis, self.settings)
        except redis.RedisError as exc:  # stored all the same; housekeeping tops jobs up
            log.warning("stored %d message(s) but queued no batch job: Redis: %s", len(ids), exc)
        return ids

    def intake_paused(self) -> bool:
        """Whether the SMTP ingress is paused (`drain pause --intake`)."""
        return door.is_paused(self.redis)

    def _stored(self) -> None:
        """After a write: wait for durability as configured, and make sure batch jobs exist
        for the new mail. Mail already stored is never reported as refused: a batch job that
        Redis has no memory for now is topped up by the workers' housekeeping."""
        self.durable.confirm()
        try:
            ensure_tokens(self.redis, self.settings)
        except redis.RedisError as exc:  # out of memory (intake's own error tells that), damaged, gone
            log.log(logging.INFO if isinstance(exc, redis.OutOfMemoryError) else logging.WARNING,
                    "mail stored, but no batch job was queued for it (housekeeping adds it): Redis: %s", exc)

    def status(self) -> Status:
        return read(self.store)


# -- several cells ---------------------------------------------------------------------------------
# The producer API over several cells: new mail is spread round robin over the cells that
# answer, one message at a time, so each cell holds an even share of every sender, tenant and
# destination (and the per-cell rate shares of `drain rate set` add up to the global rate).
#
# Why round robin and not a hash of tenant or sender: the incident's backlog came from one
# sender; hashed, it would all land in one cell, which would then carry the whole load and,
# down, stop all of it. Spread evenly, a cell that is down holds back only its own share.
#
# A cell that does not answer is routed around: before writing to a cell the client reads
# its quarantine rules (needed anyway), and a connection failure there means nothing was
# written, so the same messages go to the next cell, and that cell is skipped for RETRY_S.
# A failure during the write itself is reported (raised), never repeated elsewhere: the
# write may have happened, and a silent second copy would be sent twice. When no cell
# answers, RedisUnavailable names them all. A cell that is nearly full (QueueFull) is
# skipped the same way; QueueFull is raised only when every cell is full.

# How long a cell that did not answer is left out of the rotation before it is tried again.
RETRY_S = 2.0


class CellsClient(Client):
    """Client.enqueue / enqueue_many / write_batch over several cells; ids name their cell."""

    def __init__(self, members: list[tuple[Cell, Client]], settings: Settings) -> None:
        home = members[0][1]
        # The inherited attributes (store, memory, durable, redis) are the first cell's: what
        # is read from one cell (settings keys written to all) is read there.
        self.redis, self.settings, self.store = home.redis, settings, home.store
        self.durable, self.memory = home.durable, home.memory
        self.members = members
        self._next = 0
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def connect_cells(cls, settings: Settings) -> CellsClient:
        """Clients for every cell, not yet connected: a cell that is down now does not stop
        the others (each cell's eviction policy is checked the first time it answers)."""
        members = [(cell, Client(client_for(cell.url), cell.settings(settings))) for cell in cells_of(settings)]
        return cls(members, settings)

    # -- the rotation ----------------------------------------------------------------

    def _order(self, advance: bool = True) -> list[tuple[Cell, Client]]:
        """Cells to try for the next group: the next live cell in turn first, then the other
        live ones, cells left out for a failure last (tried again if every other one fails).
        The turn passes over cells left out, so their share is spread over all the others."""
        with self._lock:
            now = time.monotonic()
            count = len(self.members)
            turn = [self.members[(self._next + k) % count] for k in range(count)]
            live = [m for m in turn if self._down_until.get(m[0].name, 0) <= now]
            order = live + [m for m in turn if m not in live]
            if advance:
                self._next = (self.members.index(order[0]) + 1) % count
            return order

    def _live(self) -> int:
        """How many cells are not left out now (at least 1)."""
        with self._lock:
            now = time.monotonic()
            return max(1, sum(1 for cell, _m in self.members if self._down_until.get(cell.name, 0) <= now))

    def _mark_down(self, cell: Cell) -> None:
        with self._lock:
            self._down_until[cell.name] = time.monotonic() + RETRY_S

    def _is_left_out(self, cell: Cell) -> bool:
        with self._lock:
            return self._down_until.get(cell.name, 0) > time.monotonic()

    def _try_cell(self, cell: Cell, member: Client, items: list[Prepared],
                  lane: str) -> list[str] | str:
        """The ids once stored in this cell, or why it could not take them ("down", "full"),
        in which case nothing was written and the cell is left out for RETRY_S."""
        try:
            active = rules.load(member.redis)  # the probe: nothing is written if this fails
            check_eviction(member.redis, cell.url)
            check_name(member.redis, cell)  # once a process: cells listed in another order are refused
            _plan = member.durable.plan  # durability it cannot have: ConfigError before a write
            member.memory.check()
        except QueueFull:
            self._mark_down(cell)
            return "full"
        except redis.RedisError as exc:
            if not down(exc):
                raise
            self._mark_down(cell)
            return "down"
        return [cell.qualify(i) for i in member.write_batch(items, lane=lane, active=active)]

    def _last_try(self, items: list[Prepared], lane: str) -> list[str]:
        """Every cell is left out: each is tried once more, in turn."""
        failures: list[str] = []
        for cell, member in self._order():
            got = self._try_cell(cell, member, items, lane)
            if isinstance(got, list):
                return got
            failures.append(f"{cell.name} {got}")
        failures.sort()
        if all(f.endswith("full") for f in failures):
            raise QueueFull(f"every cell is nearly full ({', '.join(failures)}): delivery frees memory, "
                            "try again later")
        raise RedisUnavailable(f"no cell can take mail now ({', '.join(failures)})")

    # -- the producer API ------------------------------------------------------------

    def write_batch(self, items: Iterable[Prepared], lane: str = "fresh",
                    active: list[rules.Rule] | None = None) -> list[str]:
        """Spread the messages over the live cells (one group per cell, one transaction each);
        a group whose cell turns out to be down is spread over the cells left."""
        listed = list(items)
        width = self._live()
        stored: list[list[str]] = []
        for group in (listed[k::width] for k in range(width)):
            if not group:
                stored.append([])
                continue
            cell, member = self._order()[0]
            if self._is_left_out(cell):
                stored.append(self._last_try(group, lane))
                continue
            got = self._try_cell(cell, member, group, lane)
            stored.append(got if isinstance(got, list) else self.write_batch(group, lane))
        # Back into the input's order: message i went to group i % width, at place i // width.
        return [stored[i % width][i // width] for i in range(len(listed))]

    def enqueue(self, message: bytes | Message, sender: str | None = None,
                recipients: Iterable[str] | None = None, tenant: str | None = None) -> str:
        raw, env = self.prepare(message, sender, recipients)
        raw, owner = resolve(raw, env, self.settings, tenant)
        return self.write_batch([(raw, env, owner, "api")])[0]

    def enqueue_many(self, messages: Iterable[bytes | Message | Submission], lane: str = "fresh",
                     tenant: str | None = None, source: str = "api") -> Accepted:
        result = Accepted()

        items = submissions(self.prepare, self.settings, messages, tenant, source, result.rejected)
        try:
            while window := list(itertools.islice(items, ENQUEUE_CHUNK * len(self.members))):
                result.ids.extend(self.write_batch(window, lane=lane))
        except QueueFull as exc:
            exc.accepted = list(result.ids)
            raise
        return result

    def status(self) -> Status:
        """The books and pace added up over the cells that answer (RedisUnavailable if none)."""
        readings = cells_view.each(self.members, lambda c: read(c.store))
        got = [st for _cell, st in cells_view.answered(readings)]
        if not got:
            raise RedisUnavailable("no cell answers: " + "; ".join(f"{d['cell']} {d['error']}"
                                                                   for d in cells_view.down(readings)))
        return cells_view.add_status(got)

    def intake_paused(self) -> bool:
        """The intake pause is written to every cell; the first cell that answers says."""
        for cell, member in self._order(advance=False):
            try:
                return door.is_paused(member.redis)
            except redis.RedisError as exc:
                if not down(exc):
                    raise
                self._mark_down(cell)
        raise RedisUnavailable("no cell answers")
