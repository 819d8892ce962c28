"""Lua scripts shipped in drain/store/lua, loaded once and registered once per client.

Each script is loaded with the shared prelude (lua/_lib.lua) in front of it, so an error's
line number in a script counts the prelude's lines too. Of the prelude's `function lib.NAME`
definitions, only those the script uses (directly or through another) are kept; the others
become blank lines, so line numbers stay those of the whole prelude. A script's prelude runs
at every call, and each definition it makes costs Redis work then.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

import redis
from redis.commands.core import Script

PRELUDE = "_lib"


def _read(name: str) -> str:
    return (files("drain.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_USE = re.compile(r"\blib\.(\w+)")
_COMMENT = re.compile(r"^\s*--.*$", re.MULTILINE)  # a whole line of comment: no use there
_DEFINED = re.compile(r"^function lib\.(\w+)\(")


def used_prelude(prelude: str, script: str) -> str:
    """The prelude with only the lib functions the script reaches (a definition runs from its
    `function lib.NAME(` line to the first line that is just `end`); the rest blanked."""
    lines = prelude.split("\n")
    blocks: dict[str, tuple[int, int]] = {}
    i = 0
    while i < len(lines):
        found = _DEFINED.match(lines[i])
        if found:
            end = lines.index("end", i)
            blocks[found.group(1)] = (i, end)
            i = end
        i += 1
    inside = {n for start, end in blocks.values() for n in range(start, end + 1)}
    outside = "\n".join(line for n, line in enumerate(lines) if n not in inside)
    wanted: set[str] = set()
    todo = set(_USE.findall(_COMMENT.sub("", script))) | set(_USE.findall(_COMMENT.sub("", outside)))
    while todo:
        name = todo.pop()
        if name in wanted or name not in blocks:
            continue
        wanted.add(name)
        start, end = blocks[name]
        todo |= set(_USE.findall(_COMMENT.sub("", "\n".join(lines[start:end + 1]))))
    for name, (start, end) in blocks.items():
        if name not in wanted:
            lines[start:end + 1] = [""] * (end + 1 - start)
    return "\n".join(lines)


@cache
def source(name: str) -> str:
    """A script's text as Redis runs it: the prelude (the part of it the script uses), then
    the script."""
    script = _read(name)
    return used_prelude(_read(PRELUDE), script) + "\n" + script


class Scripts:
    """The registered scripts of one Redis client, by name."""

    def __init__(self, client: redis.Redis) -> None:
        self.claim: Script = client.register_script(source("claim"))
        self.settle: Script = client.register_script(source("settle"))
        self.deliver: Script = client.register_script(source("deliver"))
        self.reap: Script = client.register_script(source("reap"))
        self.promote: Script = client.register_script(source("promote"))
        self.release: Script = client.register_script(source("release"))
        self.sweep: Script = client.register_script(source("sweep"))
        self.gate: Script = client.register_script(source("gate"))
        self.unpark: Script = client.register_script(source("unpark"))
        self.age: Script = client.register_script(source("age"))
        self.adapt: Script = client.register_script(source("adapt"))
        self.narrow: Script = client.register_script(source("narrow"))
        self.adopt: Script = client.register_script(source("adopt"))
        self.act: Script = client.register_script(source("act"))
        self.event: Script = client.register_script(source("event"))
        self.enqueue: Script = client.register_script(source("enqueue"))
