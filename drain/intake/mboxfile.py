"""An mbox file read with bounded memory, whatever its lines.

Python's mailbox.mbox finds its messages (and skips each one's 'From ' line) with readline():
one line is read whole, so a 1 GB mbox with no newline held 1 GB (and more) in memory before a
single message was looked at. BoundedMbox reads lines in pieces of at most PIECE bytes and
otherwise keeps mailbox's own rules: a message starts at a line beginning with 'From ', and
ends before the blank line preceding the next one (or at the end of the file).
"""

from __future__ import annotations

import mailbox
import os
from typing import BinaryIO

PIECE = 64 * 1024
_LINESEP = os.linesep.encode()


class BoundedMbox(mailbox.mbox):
    """mailbox.mbox with its table of contents and its 'From ' line skip read in pieces."""

    _file: BinaryIO  # set by mailbox's own __init__ (typeshed does not declare it)

    def _generate_toc(self) -> None:
        starts: list[int] = []
        stops: list[int] = []
        last_was_empty = False
        at_line_start = True
        self._file.seek(0)
        while True:
            position = self._file.tell()
            piece = self._file.readline(PIECE)
            line_start, at_line_start = at_line_start, piece.endswith(b"\n")
            if not piece:
                stops.append(position - len(_LINESEP) if last_was_empty else position)
                break
            if line_start and piece.startswith(b"From "):
                if len(stops) < len(starts):
                    stops.append(position - len(_LINESEP) if last_was_empty else position)
                starts.append(position)
                last_was_empty = False
            else:  # a piece past a line's start is never a whole blank line
                last_was_empty = line_start and piece == _LINESEP
        self._toc = dict(enumerate(zip(starts, stops, strict=False)))
        self._next_key = len(self._toc)
        self._file_length = self._file.tell()

    def get_file(self, key: str, from_: bool = False) -> mailbox._PartialFile:
        start, stop = self._lookup(key)  # type: ignore[attr-defined]
        self._file.seek(start)
        if not from_:
            while (piece := self._file.readline(PIECE)) and not piece.endswith(b"\n"):
                pass
        return mailbox._PartialFile(self._file, self._file.tell(), stop)  # type: ignore[arg-type]
