"""Quarantine: what was held back and why, and the operator's work on it (list, show,
release, delete, export), every action recorded in an audit log."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from drain import validate
from drain.errors import InputError
from drain.intake import rules
from drain.message import Envelope, domain_key, recipient_domain
from drain.ops.control import top_up
from drain.ops.export import Original, write_eml, write_mbox
from drain.store import keys
from drain.store.record import CORRUPT, HELD, RAW, fetch, shown
from drain.store.record import Record as StoredRecord
from drain.store.store import Store

PAGE = 500
# Every reason code a quarantined message can carry: the checks' and workers' (validate.SEVERITY)
# and an unreadable stored record's.
REASON_CODES = (*validate.SEVERITY, CORRUPT)


def reason_selector(text: str) -> str:
    """A --reason selector as Filter takes it: a known code, or a prefix ending in '.' that
    some known code starts with (lowercased). Anything else is an InputError listing the codes:
    a typo selected nothing, and `quarantine delete --reason nosuch` said "deleted 0" as if done."""
    code = text.strip().lower()
    if code in REASON_CODES or (code.endswith(".") and any(c.startswith(code) for c in REASON_CODES)):
        return code
    raise InputError(f"unknown reason code {shown(text.strip())}: give one of {', '.join(sorted(REASON_CODES))}"
                     " (or a prefix ending in '.', e.g. header.)")


@dataclass(frozen=True)
class Filter:
    reason: str | None = None  # a reason code, or a prefix ending in '.' (e.g. "header.")
    sender: str | None = None
    domain: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.reason or self.sender or self.domain)

    def matches(self, record: Record) -> bool:
        if self.reason and not any(
            code == self.reason or (self.reason.endswith(".") and code.startswith(self.reason))
            for code in record.reasons
        ):
            return False
        if self.sender and record.sender.lower() != self.sender.lower():
            return False
        if not self.domain:
            return True
        wanted = domain_key(self.domain)
        return any(recipient_domain(r) == wanted for r in record.recipients)


@dataclass(frozen=True)
class Record:
    id: str
    reasons: list[str]
    findings: list[dict[str, str]]
    sender: str
    recipients: list[str]
    quarantined_at: float
    accepted_at: float = 0.0
    attempts: int = 0
    last_reply: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    raw: bytes | None = field(default=None, repr=False)
    # What of the stored record could not be read (a damaged compressed body: raw is then
    # the stored bytes, not the message).
    problems: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "reason": ",".join(self.reasons), "sender": self.sender,
                "recipients": self.recipients, "quarantined_at": self.quarantined_at}

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "reasons": self.reasons, "findings": self.findings,
                "accepted_at": self.accepted_at, "attempts": self.attempts, "last_reply": self.last_reply,
                "history": self.history, "audit": self.audit, "size": self.size}


def _record(found: StoredRecord | None) -> Record | None:
    """The operator's view of a decoded record (None when it is gone)."""
    if found is None:
        return None
    return Record(found.id, found.reasons, found.findings, found.envelope.sender, list(found.envelope.recipients),
                  found.quarantined_at, found.accepted_at, found.attempts, found.last_reply, found.history,
                  found.audit, found.size, found.raw, found.problems)


class Quarantine:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client

    def count(self) -> int:
        return int(self.client.zcard(keys.QUARANTINE))

    def _page(self, ids: list[str], with_raw: bool = False) -> list[Record]:
        names = (*HELD, RAW) if with_raw else HELD
        return [r for r in map(_record, fetch(self.client, ids, names, size=True)) if r is not None]

    def records(self, flt: Filter | None = None, limit: int | None = None) -> Iterator[Record]:
        """Quarantined messages, oldest first, that pass the filter."""
        start, yielded = 0, 0
        while True:
            ids = [i.decode() for i in cast(list[bytes], self.client.zrange(keys.QUARANTINE, start,
                                                                              start + PAGE - 1))]
            if not ids:
                return
            for record in self._page(ids):
                if flt is None or flt.matches(record):
                    yield record
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
            start += PAGE

    def get(self, msg_id: str) -> Record:
        if self.client.zscore(keys.QUARANTINE, msg_id) is None:
            raise InputError(f"no message {msg_id} in quarantine")
        found = self._page([msg_id], with_raw=True)
        if not found:
            raise InputError(f"no message {msg_id} in quarantine")
        return found[0]

    def select(self, ids: Iterable[str], flt: Filter) -> list[str]:
        """Explicit ids (each must be in quarantine), or every id the filter matches."""
        chosen = list(ids)
        if chosen:
            missing = [i for i in chosen if self.client.zscore(keys.QUARANTINE, i) is None]
            if missing:
                raise InputError(f"not in quarantine: {', '.join(missing[:10])}")
            return chosen
        if flt.empty:
            raise InputError("name message ids, or a filter (--reason, --sender, --domain)")
        return [r.id for r in self.records(flt)]

    def revalidate(self, ids: list[str], limits: validate.Limits,
                   severity: dict[str, str]) -> tuple[list[str], dict[str, list[str]]]:
        """Split ids into those that now pass validation and every current rule, and those
        that still fail (with the reasons)."""
        active = rules.load(self.client)
        passing: list[str] = []
        failing: dict[str, list[str]] = {}
        for record in (self.get(i) for i in ids):
            if record.problems:  # its bytes are not the message's: validating them named NUL bytes
                failing[record.id] = [f"{CORRUPT} ({record.problems[0][:120]})"]
                continue
            envelope = Envelope(record.sender, tuple(record.recipients))
            raw = record.raw or b""
            verdict = validate.check(raw, envelope, limits, severity)
            rule = rules.first_match(active, raw, envelope)
            if verdict.ok and rule is None:
                passing.append(record.id)
            else:
                failing[record.id] = verdict.reasons or [f"rule.match (rule {rule.id if rule else '?'})"]
        return passing, failing

    def _move(self, action: Literal["release", "delete"], ids: list[str], actor: str, force: bool = False,
              note: str = "") -> int:
        return sum(self.store.release(action, ids[start:start + PAGE], actor, force, note)
                   for start in range(0, len(ids), PAGE))

    def release(self, ids: list[str], actor: str, force: bool = False, note: str = "") -> int:
        return self._move("release", ids, actor, force, note)

    def delete(self, ids: list[str], actor: str, note: str = "") -> int:
        return self._move("delete", ids, actor, note=note)

    def expire(self, older_than_s: float, now: float | None = None) -> int:
        """Delete what has been held longer than the retention time (counted as deleted)."""
        cutoff = (time.time() if now is None else now) - older_than_s
        ids = [i.decode() for i in cast(list[bytes], self.client.zrangebyscore(
            keys.QUARANTINE, "-inf", cutoff, start=0, num=10_000))]
        return self.delete(ids, actor="retention", note=f"held over {older_than_s:.0f}s") if ids else 0

    def audit_log(self, msg_id: str | None = None, count: int = 100) -> list[dict[str, str]]:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], self.client.xrevrange(keys.AUDIT, count=count * 10))
        out = []
        for _entry_id, fields in entries:
            item = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            if msg_id is None or item.get("id") == msg_id:
                out.append(item)
            if len(out) >= count:
                break
        return out

    def originals(self, ids: list[str]) -> list[Original]:
        """The quarantined messages' original bytes, with sender and time, for an export."""
        return [Original(r.id, r.sender, r.accepted_at, r.raw or b"") for r in map(self.get, ids)]

    def export(self, ids: list[str], fmt: str, out: Path, force: bool = False) -> int:
        """Write the original bytes: one .eml per message into a folder, or one mbox file.
        Refuses devices, links and existing files (unless force) before writing anything."""
        originals = self.originals(ids)
        if fmt == "eml":
            write_eml(originals, out, force)
        else:
            write_mbox(originals, out, force)
        return len(originals)


@dataclass(frozen=True)
class Released:
    passing: list[str]  # the ids released (or that would be, on a dry run)
    failing: dict[str, list[str]]  # the ids kept, with what they still fail
    released: int


def release(store: Store, ids: list[str], force: bool = False, dry_run: bool = False, note: str = "") -> Released:
    """Release quarantined mail to the ready list, each message validated again (and checked
    against the rules in force) first unless force; audited, and the workers get tokens for it."""
    q, s = Quarantine(store), store.settings
    failing: dict[str, list[str]] = {}
    if force:
        passing = ids
    else:
        passing, failing = q.revalidate(ids, *validate.configured(s))
    released = 0 if dry_run else q.release(passing, s.actor, force=force, note=note)
    if not dry_run and passing:
        top_up(store)
    return Released(passing, failing, released)


def delete(store: Store, ids: list[str], dry_run: bool = False, note: str = "") -> int:
    """Delete quarantined mail for good (counted as deleted, audited); nothing becomes ready."""
    return 0 if dry_run else Quarantine(store).delete(ids, store.settings.actor, note=note)
