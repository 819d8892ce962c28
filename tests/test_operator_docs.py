"""What the runbook and the operations chapter tell an operator must be true of this drain.

Found by following docs/runbook.md during a mock incident: it called `drain breaker close`
"planned" (it exists: the step that ends a breaker's cool-down was missing), and it said a
full Redis shows as `451 4.3.0` at the door and `OOM` in logs, while drain's memory guard
closes intake first and the ingress answers `452 4.3.1`."""

from __future__ import annotations

import re
from pathlib import Path

import click

from drain.cli import cli
from drain.intake.smtpd_write import REPLY_FULL

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _exists(words: list[str]) -> bool:
    """Whether `drain WORDS...` names a command of this drain (options and arguments ignored)."""
    command: click.Command = cli
    found = False
    for word in words:  # (drain's commands are loaded when asked for: get_command, not .commands)
        sub = command.get_command(click.Context(command), word) if isinstance(command, click.Group) else None
        if sub is None:
            break
        command, found = sub, True
    return found and not isinstance(command, click.Group)


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_runbook_calls_no_existing_command_planned() -> None:
    text = (DOCS / "runbook.md").read_text()
    sentences = re.split(r"(?<=[.;:])\s", text.replace("\n", " "))
    planned = [s for s in sentences if "planned" in s]
    # (Nothing is called planned now that trace and flush exist; the check stays for the next.)
    for sentence in planned:
        for command in re.findall(r"`drain ([a-z][a-z -]*)", sentence):
            words = [w for w in command.split() if not w.startswith("-")]
            assert not _exists(words), f"the runbook calls `drain {command}` planned, and it exists: {sentence}"


def test_the_runbook_names_the_reply_a_full_redis_gives() -> None:
    full = _section((DOCS / "runbook.md").read_text(), "Redis is full")
    code = " ".join(REPLY_FULL.split()[:2])  # "452 4.3.1"
    assert code in full, f"the ingress answers {code} when Redis is full; the runbook does not say so"
    assert "451 4.3.0" not in full
    assert code in (DOCS / "operations.md").read_text()
