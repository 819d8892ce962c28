"""Lua scripts shipped in drain/store/lua, loaded once and registered once per client.

Each script is loaded with the shared prelude (lua/_lib.lua) in front of it, so an error's
line number in a script counts the prelude's lines too.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import redis
from redis.commands.core import Script

PRELUDE = "_lib"


def _read(name: str) -> str:
    return (files("drain.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """A script's text as Redis runs it: the prelude, then the script."""
    return _read(PRELUDE) + "\n" + _read(name)


class Scripts:
    """The registered scripts of one Redis client, by name."""

    def __init__(self, client: redis.Redis) -> None:
        self.claim: Script = client.register_script(source("claim"))
        self.settle: Script = client.register_script(source("settle"))
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
