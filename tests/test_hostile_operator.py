"""An operator on a bad day: odd arguments, hostile names, flows while mail waits. Each
case was a break found by trying it (see the test's docstring)."""

from __future__ import annotations

import pytest

from drain.intake.api import Client
from drain.settings import Settings
from tests.chaos_kit import one_line
from tests.test_cli import drain


@pytest.mark.parametrize("args", [
    ("pause", "--tenant", ""),
    ("resume", "--tenant", "has space"),
    ("tenant", "set", "ev\x1b[2Jil", "--weight", "2"),
    ("rate", "set", "5/s", "--tenant", "x" * 200),
])
def test_a_name_that_cannot_be_a_tenant_is_a_usage_error(args: tuple[str, ...], client: Client,
                                                         settings: Settings) -> None:
    """A tenant name that cannot be one (empty, a space, a control character, too long)
    exited 1, as if drain had failed, where an unknown tenant exits 2: it is the operator's
    typo either way (the contract's usage error)."""
    client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, *args)
    err = one_line(result)
    assert result.returncode == 2, err
    assert "tenant" in err and "\x1b" not in err
