"""Text from messages, relays or Redis, made safe to print on an operator's terminal.

Senders, recipients, header values, findings' evidence and relay replies are written by
whoever sent the mail or runs the relay. Printed as they are, they could carry escape
sequences (window titles, screen clears, OSC 8 links), C1 controls, or bidi overrides that
reorder what the operator reads; handed to rich as markup, a `[/x]` in an address stops the
command. So the CLI prints such text only through `safe` (for click.echo) or `cell` (a rich
Text, never parsed as markup or emoji codes).
"""

from __future__ import annotations

from rich.text import Text

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(text: object) -> str:
    """One line of text with every character a terminal would act on shown as an escape.

    Unprintable means what `str.isprintable` says: C0 and C1 controls, DEL, ESC, format
    characters (bidi overrides and isolates, zero-width characters), line and paragraph
    separators, surrogates, unassigned code points, and spaces other than U+0020. Each is
    written as a Python-style escape (``\\n``, ``\\x1b``, ``\\u202e``), so nothing is hidden and
    nothing reaches the terminal as a control.
    """
    value = "" if text is None else text if isinstance(text, str) else str(text)
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else _visible(ch) for ch in value)


def clip(text: object, most: int = 120) -> str:
    """`safe` text cut to `most` characters, saying how many were left out: a 70 KB address
    quoted whole in an error buried the message it was part of."""
    shown = safe(text)
    return shown if len(shown) <= most else f"{shown[:most]}... ({len(shown) - most:,} more characters)"


def cell(text: object, style: str = "") -> Text:
    """`safe` text as a rich Text: shown literally, brackets and colons included."""
    return Text(safe(text), style=style)
