"""Writing quarantined messages out of Redis, as .eml files in a folder or one mbox file.

The target is checked before anything is written: only a regular file or a folder is
ever written to (never a device such as /dev/zero, a FIFO or a symbolic link), existing
files are replaced only when the operator says --force, and no folder is made except the
last part of an eml folder whose parent exists. Files are written readable by their owner
only (quarantined mail is often personal data), an mbox through a temporary file renamed
into place, so a failed export leaves no half-written mbox behind.
"""

from __future__ import annotations

import mailbox
import os
import re
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drain.errors import InputError

# Message ids become file names; anything else (from a tampered Redis) is refused.
_SAFE_ID = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,127}")


@dataclass(frozen=True)
class Original:
    id: str
    sender: str
    accepted_at: float
    raw: bytes


def _oserror(what: str, path: Path, exc: OSError) -> InputError:
    return InputError(f"cannot {what} {path}: {exc.strerror or exc}")


def _kind(path: Path) -> str | None:
    """'file', 'folder', 'link', 'other', or None when nothing is there (symlinks not followed)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _oserror("look at", path, exc) from None
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else "other"


def _parent_must_exist(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"no such folder: {parent}")


def write_eml(messages: Sequence[Original], folder: Path, force: bool = False) -> None:
    """One ID.eml per message in folder (made if only its last part is missing)."""
    kind = _kind(folder)
    if kind is None:
        _parent_must_exist(folder)
    elif kind != "folder":
        raise InputError(f"{folder} is not a folder (--format eml writes one file per message into a folder)")
    targets = []
    for message in messages:
        if not _SAFE_ID.fullmatch(message.id):
            raise InputError(f"message id {message.id!r} cannot be a file name")
        targets.append(folder / f"{message.id}.eml")
    if kind is not None:
        present = [(t, k) for t in targets if (k := _kind(t)) is not None]
        odd = [t for t, k in present if k != "file"]
        if odd:
            raise InputError(f"{odd[0]} exists and is not a regular file; remove it first")
        if present and not force:
            raise InputError(f"{len(present)} file(s) already exist, e.g. {present[0][0]}; --force replaces them")
    else:
        try:
            folder.mkdir()
        except OSError as exc:
            raise _oserror("make folder", folder, exc) from None
    for message, target in zip(messages, targets, strict=True):
        if force and _kind(target) == "file":
            _replace(target, message.raw)
        else:
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(message.raw)
            except OSError as exc:
                raise _oserror("write", target, exc) from None


def _replace(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _oserror("write", target, exc) from None


def write_mbox(messages: Sequence[Original], path: Path, force: bool = False) -> None:
    """All messages in one new mbox file at path (an existing regular file only with force)."""
    kind = _kind(path)
    if kind == "link":
        kind = "file" if path.is_file() else "other"  # a link is replaced, never written through
    if kind is None:
        _parent_must_exist(path)
    elif kind == "folder":
        raise InputError(f"{path} is a folder (--format mbox writes one file)")
    elif kind != "file":
        raise InputError(f"{path} is not a regular file")
    elif not force:
        raise InputError(f"{path} exists; --force replaces it")
    reserved = False
    if kind is None:  # take the name now, so a file made meanwhile is not overwritten
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise InputError(f"{path} exists; --force replaces it") from None
        except OSError as exc:
            raise _oserror("write", path, exc) from None
        reserved = True
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if reserved:
            path.unlink(missing_ok=True)
        raise _oserror("write in", path.parent, exc) from None
    os.close(fd)
    try:
        box = mailbox.mbox(tmp, create=False)
        try:
            for message in messages:
                entry = mailbox.mboxMessage(message.raw)
                entry.set_from(message.sender or "MAILER-DAEMON", time.gmtime(message.accepted_at or None))
                box.add(entry)
            box.flush()
        finally:
            box.close()
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if reserved:
            path.unlink(missing_ok=True)
        raise _oserror("write", path, exc) from None
