"""How the text of one setting becomes its value: each parser takes (text, name) and returns the
parsed value or raises ConfigError with a one-line message naming the setting.

Parsers see only non-empty text; a parser returns UNSET for text that means "not set" (blank
text for a true/false setting, `auto` for a three-way one), and the default applies.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from drain.errors import ConfigError

Parse = Callable[[str, str], Any]
UNSET: Any = object()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
LOG_FORMATS = ("text", "json")


def ascii_digits(text: str) -> bool:
    """Whether text is one or more of the digits 0-9 (str.isdigit alone takes any script's
    digits, and superscripts that int() then refuses)."""
    return text.isascii() and text.isdigit()


def _bounded(convert: Callable[[str], Any], what: str, minimum: float, maximum: float | None = None) -> Parse:
    def parse(raw: str, name: str) -> Any:
        try:
            # int() and float() read any script's digits (Arabic-Indic '١٢' is 12): refused,
            # as a setting a person cannot read back is one nobody meant.
            if not raw.isascii():
                raise ValueError(raw)
            value = convert(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum:g}, got {value:g}")
        return value

    return parse


# The largest number setting: 10^9 s is over 30 years, 10^9 messages or bytes more than any
# batch, cap or limit needs; larger ones overflow what socket timeouts, sleeps, Redis expiry
# times and counts (LPOP's, in Lua's numbers) can hold.
NUMBER_MAX = 1e9


def whole(minimum: int, maximum: float = NUMBER_MAX) -> Parse:
    """A whole number of at least minimum and at most maximum (NUMBER_MAX unless told)."""
    return _bounded(int, "a whole number", minimum, maximum)


def number(minimum: float) -> Parse:
    """A finite number of at least minimum and at most NUMBER_MAX (nan and inf refused)."""
    return _bounded(float, "a number", minimum, NUMBER_MAX)


def fraction(raw: str, name: str) -> float:
    """A share above 0 and at most 1."""
    value: float = number(0.0)(raw, name)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} must be above 0 and at most 1, got {value}")
    return value


def flag(raw: str, name: str) -> bool:
    text = raw.strip().lower()
    if text == "":
        return UNSET  # type: ignore[no-any-return]
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r}")


def tristate(raw: str, name: str) -> bool | None:
    """True, False, or UNSET for 'auto' (the default, None, then applies)."""
    return UNSET if raw.strip().lower() == "auto" else flag(raw, name)


def text(raw: str, name: str) -> str:
    return raw


def path(raw: str, name: str) -> Path:
    return Path(raw)


def existing_file(raw: str, name: str) -> Path:
    if not Path(raw).is_file():
        raise ConfigError(f"{name} is not a readable file: {raw}")
    return Path(raw)


def ca_file(raw: str, name: str) -> Path:
    """A readable file of PEM certificates that TLS can load (checked now, not at the first send)."""
    import ssl

    path = existing_file(raw, name)
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{name} holds no certificate TLS can use (PEM expected): {raw} ({exc})") from None
    return path


def helo_name(raw: str, name: str) -> str:
    """A name for HELO/EHLO (RFC 5321 4.1.1.1): a dotted host name, or an address literal
    such as [192.0.2.1]. Refused at start rather than by the relay at every message."""
    literal = raw[1:-1].removeprefix("IPv6:") if raw.startswith("[") and raw.endswith("]") else None
    if literal is not None:
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            raise ConfigError(f"{name} must be a host name or an address literal like [192.0.2.1], "
                              f"got {raw!r}") from None
        return raw
    labels = raw.removesuffix(".").split(".")
    if len(raw) > 253 or not all(0 < len(label) <= 63 and label.isascii()
                                 and label.replace("-", "").isalnum()
                                 and not label.startswith("-") and not label.endswith("-") for label in labels):
        raise ConfigError(f"{name} must be a host name like mail.example.com (letters, digits, hyphens, dots), "
                          f"got {raw!r}")
    return raw


def words(raw: str, name: str) -> tuple[str, ...]:
    """Comma-separated words, blanks dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def log_format(raw: str, name: str) -> str:
    value = raw.strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"{name} must be text or json, got {value!r}")
    return value


def size_or_none(raw: str, name: str) -> int | None:
    """A byte count; 0 means none given."""
    return whole(0)(raw, name) or None


def parse_networks(raw: str, name: str = "DRAIN_SMTPD_ALLOW") -> tuple[Network, ...]:
    """Comma-separated CIDRs (or single addresses) like '127.0.0.0/8, 10.1.2.0/24, ::1'."""
    networks: list[Network] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name} must list networks like 127.0.0.0/8 or ::1/128, got {part!r}") from None
    if not networks:
        raise ConfigError(f"{name} lists no network")
    return tuple(networks)


def networks(raw: str, name: str) -> tuple[Network, ...]:
    return parse_networks(raw, name) if raw.strip() else UNSET


def parse_listen(raw: str, name: str = "DRAIN_SMTPD_LISTEN") -> tuple[str, int]:
    """(host, port) from 'HOST:PORT', '[v6]:PORT' or ':PORT' (all addresses)."""
    host, colon, port_text = raw.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not ascii_digits(port_text) or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name} must look like 127.0.0.1:2526 or [::1]:2526, got {raw!r}")
    return host or "0.0.0.0", int(port_text)


class Durability(NamedTuple):
    """What `enqueue` waits for: mode "none", "fsync" or "replicas" (with how many)."""

    mode: str
    replicas: int = 0

    def __str__(self) -> str:
        return f"replicas:{self.replicas}" if self.mode == "replicas" else self.mode

    @classmethod
    def parse(cls, raw: str, name: str = "DRAIN_DURABILITY") -> Durability:
        return parse_durability(raw, name)


def parse_durability(raw: str, name: str = "DRAIN_DURABILITY") -> Durability:
    """Durability("none"), ("fsync") or ("replicas", N) from 'none', 'fsync' or 'replicas:N'."""
    mode, _colon, count = raw.strip().lower().partition(":")
    if mode in {"none", "fsync"} and not count:
        return Durability(mode)
    if mode == "replicas" and ascii_digits(count) and int(count) >= 1:
        return Durability(mode, int(count))
    raise ConfigError(f"{name} must be none, fsync or replicas:N (N >= 1), got {raw!r}")


def parse_domain(raw: str, name: str = "--domain") -> str:
    """A destination domain as given to `rate set` or `pause` (IDNA / hostname syntax),
    lowercased, without a trailing dot, a non-ASCII name in A-labels as drain keys domains
    (drain.message.domain_key); ConfigError when it is not one."""
    import idna

    domain = raw.lower().removesuffix(".")
    try:
        encoded = idna.encode(domain, uts46=True, std3_rules=True)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ConfigError(f"{name} must be a domain name like example.com, got {raw!r} ({exc})") from None
    if len(encoded) > 253:
        raise ConfigError(f"{name} is longer than a domain name may be (253), got {len(encoded)} characters")
    from drain.message import domain_key

    return domain_key(domain)


def default_hostname(env: Mapping[str, str]) -> str:
    import socket

    name = socket.gethostname() or "localhost"
    return name if "." in name else f"{name}.localdomain"


def _login_name() -> str:
    """The account this process runs as: its login name, else its uid (never 'unknown')."""
    import pwd

    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (a bare container): the uid still names the account
        return f"uid{uid}"


def default_actor(env: Mapping[str, str]) -> str:
    import socket

    return f"{env.get('USER') or env.get('LOGNAME') or _login_name()}@{socket.gethostname()}"


def tenant_networks(raw: str, name: str) -> tuple[tuple[Network, str], ...]:
    """'CIDR=tenant, CIDR=tenant': client networks of the SMTP ingress and whose mail they
    send (the first network that holds the client wins)."""
    pairs: list[tuple[Network, str]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        cidr, equals, tenant = part.partition("=")
        tenant = tenant.strip()
        if not equals or not tenant or not tenant.isprintable() or any(c.isspace() for c in tenant):
            raise ConfigError(f"{name} must list CIDR=tenant pairs like 10.1.0.0/16=acme, got {part!r}")
        pairs.append((parse_networks(cidr, name)[0], tenant))
    return tuple(pairs)
