"""A careless operator, or two operators at once: commands given twice, on top of each other.
Each docstring says what happened before the fix."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import one_line
from tests.conftest import seed
from tests.test_cli import drain


def _listed(settings: Settings, scope: str) -> dict[str, object]:
    rows = json.loads(drain(settings, "pause", "list", "--json").stdout)
    (row,) = [r for r in rows if r["scope"] == scope]
    return dict(row)


@pytest.mark.parametrize("scope,args", [("delivery", ()), ("domain", ("--domain", "example.org")),
                                        ("intake", ("--intake",))])
def test_a_second_pause_never_shortens_the_one_in_force(scope: str, args: tuple[str, ...], client: Client,
                                                         settings: Settings) -> None:
    """Alice paused delivery until resumed ("incident 42"); Bob, not knowing, ran `drain pause
    --for 5m`: the pause became a 5-minute one and its reason and author were replaced, so
    delivery went again by itself into the broken relay. Now a pause never shortens one in
    force: it is kept, with its note, and the command says so; a longer one still extends a
    shorter one. Mutant caught: control._outlasts always False."""
    client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    assert drain(settings, "pause", *args, "--reason", "incident 42", env={"DRAIN_ACTOR": "alice"}).returncode == 0
    second = drain(settings, "pause", *args, "--for", "5m", env={"DRAIN_ACTOR": "bob"})
    assert second.returncode == 0, second.stderr
    assert b"kept" in second.stderr and b"alice" in second.stderr, second.stderr
    row = _listed(settings, scope)
    assert row["until"] is None and row["reason"] == "incident 42" and row["actor"] == "alice", row
    if scope == "delivery":
        assert client.redis.pttl(keys.PAUSED) == -1  # the flag the claim script reads: no expiry
    # A longer pause than the one in force replaces it.
    assert drain(settings, "resume", *args).returncode == 0
    assert drain(settings, "pause", *args, "--for", "1h").returncode == 0
    longer = drain(settings, "pause", *args, "--for", "2h", env={"DRAIN_ACTOR": "bob"})
    assert longer.returncode == 0 and b"kept" not in longer.stderr, longer.stderr
    until = _listed(settings, scope)["until"]
    assert isinstance(until, float) and until > time.time() + 3600 + 1800, until
    assert drain(settings, "resume", *args).returncode == 0


def test_an_id_named_twice_counts_once_in_every_quarantine_command(
        client: Client, work: Callable[..., bool], settings: Settings, tmp_path: Path) -> None:
    """`drain quarantine delete --dry-run 1 1 1` said it would delete 3 messages (the real
    run deleted 1), `release 1 1` listed the id twice, and `export 3 3 --out DIR` wrote 3.eml
    and then failed on it, "File exists", exit 1. Now each id is taken once. Mutant caught:
    _selected without the dedupe."""
    nul = dict(seed("bad"))["body_nul-byte.eml"]
    first, second = client.enqueue(nul), client.enqueue(nul)
    work()
    dry = json.loads(drain(settings, "quarantine", "delete", "--dry-run", "--json", first, first, first).stdout)
    assert dry["would_delete"] == 1 and dry["ids"] == [first], dry
    out = tmp_path / "out"
    exported = drain(settings, "quarantine", "export", "--json", second, second, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["exported"] == 1 and [p.name for p in out.iterdir()] == [f"{second}.eml"]
    released = json.loads(drain(settings, "quarantine", "release", "--force", "--json", first, first).stdout)
    assert released["released"] == 1 and released["ids"] == [first], released
    assert client.store.books().quarantined == 1


def test_a_message_held_then_released_can_be_acted_on_by_id(client: Client, relay: Sink, work: Callable[..., bool],
                                                             settings: Settings) -> None:
    """`drain hold 1` then `drain release 1`: the message is ready again (`status` counts it),
    and `drain show 1` and `drain delete 1` find it ready (they said "quarantined" and "unknown
    id" while the swept id stood beside a second copy). Delivered once (checked here too).
    Mutant caught: release.lua pushing a second copy without taking the id out of the swept set."""
    msg_id = client.enqueue(b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n")
    assert drain(settings, "hold", msg_id).returncode == 0
    assert drain(settings, "release", msg_id).returncode == 0
    assert client.store.books().ready == 1
    try:
        shown = json.loads(drain(settings, "show", msg_id, "--json").stdout)
        dry = drain(settings, "delete", msg_id, "--dry-run", "--json")
        assert shown["state"] == "ready", shown["state"]
        assert dry.returncode == 0 and json.loads(dry.stdout)["matched"] == 1, dry.stderr
    finally:
        work()
        assert client.store.books().delivered == 1 and relay.accepted == 1


@pytest.mark.parametrize("args", [("--header", "Sub ject: ^x"), ("--header", "Subj\x1bect: x"),
                                  ("--domain", "ex ample.com"), ("--domain", "b@example.org"),
                                  ("--domain", "example.org,example.com")])
def test_a_rule_on_a_name_no_message_can_carry_is_refused(args: tuple[str, ...], client: Client,
                                                          settings: Settings) -> None:
    """`drain quarantine rule add --header 'Sub ject: ^x'` (a typo) or `--domain 'ex ample.com'`
    was added and listed, and matched nothing: the incident's mail kept going out while the
    operator believed it held. Now a usage error, and nothing is stored or swept. Mutant
    caught: Rule.__post_init__ without the field-name and domain checks."""
    client.enqueue(b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n", recipients=["b@example.org"])
    result = drain(settings, "quarantine", "rule", "add", *args)
    err = one_line(result)
    assert result.returncode == 2 and "is not a" in err and "\x1b" not in err, err
    assert client.redis.exists(keys.RULES) == 0 and client.store.books().ready == 1


@pytest.mark.parametrize("args,what", [((), "delivery"), (("--intake",), "intake"),
                                       (("--domain", "example.org"), "delivery to example.org")])
def test_resuming_what_is_not_paused_says_so(args: tuple[str, ...], what: str, client: Client,
                                             settings: Settings) -> None:
    """`drain resume` with nothing paused said "delivery resumed", as if it had undone a pause
    (an operator resuming the wrong scope, say delivery for a paused domain, was told all was
    going again). Now "... was not paused", still exit 0 (resume stays safe to repeat); after a
    real pause, "resumed". Mutant caught: was_paused always True."""
    idle = drain(settings, "resume", *args)
    assert idle.returncode == 0 and idle.stdout.decode().startswith(f"{what} was not paused"), idle.stdout
    assert drain(settings, "pause", *args).returncode == 0
    done = drain(settings, "resume", *args)
    assert done.returncode == 0 and done.stdout.decode().startswith(f"{what} resumed"), done.stdout
