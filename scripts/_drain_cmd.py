"""Run the `drain` command for the admin scripts and read its JSON (standard library only).

The command is $DRAIN_CMD when set (split like a shell would, e.g. "python -m drain"), else
the checkout's .venv/bin/drain, else `drain` on PATH. It reads DRAIN_REDIS_URL as always.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def command() -> list[str]:
    if os.environ.get("DRAIN_CMD"):
        return shlex.split(os.environ["DRAIN_CMD"])
    local = ROOT / ".venv" / "bin" / "drain"
    if local.exists():
        return [str(local)]
    found = shutil.which("drain")
    if found is None:
        sys.exit("drain not found: run scripts/test once (it makes .venv), or set DRAIN_CMD")
    return [found]


def run(*args: str) -> str:
    """stdout of `drain ARGS...`; exits with drain's message when it fails."""
    result = subprocess.run([*command(), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        sys.exit(f"drain {' '.join(args)} failed (exit {result.returncode})")
    return result.stdout


def document(*args: str) -> Any:
    """One JSON document from `drain ARGS... --json`."""
    return json.loads(run(*args, "--json"))


def lines(*args: str) -> list[Any]:
    """JSON lines from `drain ARGS... --json`."""
    return [json.loads(line) for line in run(*args, "--json").splitlines() if line.strip()]


def cell(text: object) -> str:
    """Text fit for a Markdown table cell: senders and domains come from whoever sent the mail."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def duration(seconds: float | None) -> str:
    """drain's one duration format (drain/durations.py, standard library only, loaded by path)."""
    return str(_durations().human(seconds, none="-"))


@functools.cache
def _durations() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "drain" / "durations.py"
    spec = importlib.util.spec_from_file_location("_drain_durations", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
