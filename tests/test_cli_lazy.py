"""The `drain` command loads a command's module only when that command is asked for: each
CLI call pays for what it runs, not for every command (scripts/bench_cli_import.py measures
it). Counted in modules loaded, not in seconds."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from drain.cli import COMMANDS, cli

LOADED = "import sys; print(json.dumps(sorted(sys.modules)))"


def _modules(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", f"import json\n{code}\n{LOADED}"], capture_output=True, text=True,
                          check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_no_command_and_no_redis() -> None:
    """Mutant caught: drain/cli/__init__.py importing its command modules at the top (as it did)."""
    loaded = _modules("import drain.cli")
    heavy = {"redis", "rq", "drain.intake.api", "drain.store.store", "drain.cli.queue", "drain.cli.serve",
             "drain.cli.quarantine", "email_validator"}
    assert not heavy & loaded, sorted(heavy & loaded)


def test_a_commands_help_loads_its_module_alone() -> None:
    """Mutants caught: drain/cli/queue.py importing drain.cli.cells (or redis) at the top; the
    group's callback importing the event log when no DRAIN_EVENT_LOG is set."""
    loaded = _modules("from drain.cli import main\ntry:\n    main(['status', '--help'])\nexcept SystemExit:\n    pass")
    assert "drain.cli.queue" in loaded
    others = {"drain.cli.serve", "drain.cli.cells", "drain.cli.quarantine", "drain.cli.trace", "redis"}
    assert not others & loaded, sorted(others & loaded)


def test_every_lazy_command_is_the_command_it_names() -> None:
    """Each entry of COMMANDS loads a click command under its own name (a typo in the table
    would fail only when that command is run). Mutant caught: an entry pointing at the wrong
    attribute."""
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name, (name, command)
    assert cli.list_commands(ctx) == sorted(COMMANDS)


def test_a_mistyped_command_gets_clicks_suggestions() -> None:
    """click suggests close names from the commands it holds: all of them are loaded for a name
    drain does not know. Mutant caught: LazyGroup.resolve_command not loading them (no
    suggestion)."""
    done = subprocess.run([sys.executable, "-c", "from drain.cli import main; main(['stat'])"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("drain: error: No such command 'stat'."), done.stderr
    if hasattr(click.exceptions, "NoSuchCommand"):  # click 8.4 and later suggest
        assert "'status'" in done.stderr, done.stderr
