"""What the commands share on the way in: the Context object, shared options (`--redis-url`,
`--json`, `--log-level`, `--limit`, the quarantine filters) and parameter checks (rates,
listen addresses, finite floats, domain names, addresses), each failing as a usage error."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from drain.cli.render import TTY_ROWS
from drain.cli.terminal import clip
from drain.errors import ConfigError, InputError
from drain.settings import Settings, parse_domain, parse_listen

if TYPE_CHECKING:
    from drain.intake.api import Client
    from drain.store.cells import Cell

# What only some commands need (the client, the rate parser, the address check, the
# quarantine codes) is imported where it is used: every `drain` call imports this module.

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """The settings (from the environment, with --redis-url on top) and a client made on first use."""

    def __init__(self, redis_url: str | None) -> None:
        overrides: dict[str, Any] = {"redis_url": redis_url} if redis_url else {}
        self.settings = Settings.from_env(**overrides)
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            from drain.intake.api import CellsClient, Client
            client = Client.connect(self.settings)
            if isinstance(client, CellsClient):
                from drain.store.cellname import check_name
                for cell, member in client.members:
                    check_name(member.redis, cell)
            self._client = client
        return self._client

    @property
    def multi(self) -> bool:
        """Whether DRAIN_REDIS_URL lists several cells (drain.store.cells)."""
        from drain.store.cells import is_multi
        return is_multi(self.settings)

    @property
    def members(self) -> list[tuple[Cell, Client]]:
        """Every cell with its client (several cells only)."""
        from drain.intake.api import CellsClient
        client = self.client
        assert isinstance(client, CellsClient)
        return client.members


pass_ctx = click.make_pass_decorator(Context)

redis_url_option = click.option(
    "--redis-url", envvar="DRAIN_REDIS_URL", default=None, metavar="URL",
    help="Redis to use (env DRAIN_REDIS_URL); default: the embedded one under DRAIN_HOME.")


def json_option(help: str) -> Callable[[F], F]:
    """--json: only JSON on standard output, shaped as help says."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def log_level_option(default: str) -> Callable[[F], F]:
    return click.option("--log-level", default=default, show_default=True,
                        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
                        help="Least severe log records written to standard error.")


def _ascii_digits(kind: click.IntRange | click.FloatRange, value: Any, param: click.Parameter | None,
                  ctx: click.Context | None) -> None:
    """Python's int() and float() read any Unicode digits ('\u0663' is 3); a number typed or
    scripted with them is a mistake, refused as the settings refuse it."""
    if isinstance(value, str) and not value.isascii():
        kind.fail(f"{value!r} is not a number written in ASCII digits", param, ctx)


class Whole(click.IntRange):
    """A whole-number option (within a range, if given) in ASCII digits only."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _ascii_digits(self, value, param, ctx)
        return super().convert(value, param, ctx)


limit_option = click.option(
    "--limit", type=Whole(0), default=None,
    help=f"At most this many (default: {TTY_ROWS} on a terminal, all otherwise; 0: all).")


def nonempty(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of a selector option: an empty value is a usage error. It selected nothing,
    so `--domain D --sender "$UNSET"` acted on all of D's mail rather than one sender's."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty: give a value, or leave the option out")
    return value


def reason_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of the quarantine filters' --reason: not empty, and a known code or prefix."""
    if nonempty(ctx, param, value) is None:
        return None
    from drain.ops.quarantine import reason_selector
    try:
        return reason_selector(str(value))
    except InputError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def filter_options(func: F) -> F:
    """--domain, --sender and --reason of the quarantine commands (see ops.quarantine.Filter)."""
    func = click.option("--domain", callback=nonempty, help="Only mail to this recipient domain.")(func)
    func = click.option("--sender", callback=nonempty, help="Only mail from this envelope sender.")(func)
    return click.option("--reason", callback=reason_option,
                        help="Only this reason code (or a prefix ending in '.', e.g. header.).")(func)


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf (a FloatRange lets nan through), in ASCII digits."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _ascii_digits(self, value, param, ctx)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """An option callback that parses its text with `parse` (None stays None); a ConfigError
    or InputError is a usage error naming the option."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except (ConfigError, InputError) as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


# Callback of --domain for `rate set`, `pause`, `resume` and the actions: a valid domain name, lowercased.
domain_option = parsed(parse_domain)


def rate_value(text: str, hint: str) -> float | None:
    """A rate like 500/s, 30000/m or 'unlimited' (None); 0 holds delivery."""
    from drain.flow import ratelimit
    try:
        return ratelimit.parse_rate(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def moving_rate(text: str, hint: str, why: str) -> float | None:
    """A rate that lets mail go: 0 is refused, saying why."""
    from drain.flow import ratelimit
    per_second = rate_value(text, hint)
    if ratelimit.holds(per_second):
        raise click.BadParameter(why, param_hint=hint)
    return per_second


def listen_value(text: str, hint: str = "--listen") -> tuple[str, int]:
    """HOST:PORT (or :PORT for every address) to listen on."""
    try:
        return parse_listen(text, hint)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def address_value(value: str, hint: str) -> str:
    """An email address, checked for form only (no DNS)."""
    from email_validator import EmailNotValidError, validate_email
    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=True)
    except EmailNotValidError as exc:
        raise click.BadParameter(f"'{clip(value)}' is not a valid address: {clip(exc, 200)}", param_hint=hint) from None
    return value


class MessageIdType(click.ParamType[str]):
    """A message id as typed: white space around it (pasted from a table) is dropped, and an
    empty one is a usage error (it was looked up, and said "unknown id:" with nothing after).
    So is one that no drain makes (ids are hex, `1f`, and name their cell over cells, `c0.1f`):
    over cells that was a usage error and on one Redis "unknown message id", exit 1. Hex
    digits are taken in either case."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        import re

        text = str(value).strip()
        if not text:
            self.fail("a message ID is empty", param, ctx)
        if not re.fullmatch(r"(c[0-9]+\.)?[0-9a-f]+", text.lower(), re.ASCII):
            self.fail(f"{text[:80]!r} is not a message ID (ids look like 1f, or c0.1f over cells)", param, ctx)
        return text.lower()


MESSAGE_ID = MessageIdType()
