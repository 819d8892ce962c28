"""A relay's address and credentials (its DRAIN_RELAY-style URL) and the TLS context drain
opens its sessions with."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from drain.errors import ConfigError

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class RelayConfig:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> RelayConfig:
        if not url.isprintable() or " " in url:
            # urlsplit drops CR, LF and tab silently: "h\r\nX" became host hx, while the URL
            # kept as given still held them.
            raise ConfigError("bad relay URL: it holds spaces or control characters (CR, LF, tab, ...)")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            # The parser's own message can quote part of the URL, which may be a password.
            raise ConfigError("bad relay URL: its host and port cannot be read (in a user name or password,"
                              " / # ? and @ must be percent-encoded)") from None
        if "://" not in url:  # host:port alone: urlsplit reads "localhost" of localhost:2525 as the scheme
            raise ConfigError("relay URL has no scheme: write smtp://HOST:PORT (or smtp+starttls://, smtps://)")
        if parts.scheme not in _DEFAULT_PORTS:
            raise ConfigError(f"relay URL must start with smtp://, smtp+starttls:// or smtps://, got {parts.scheme!r}")
        if not parts.hostname:
            raise ConfigError("relay URL has no host")
        # Both were taken and dropped: port 0 stood for the scheme's default port, and a path,
        # query or fragment (smtp://h:25/x?tls=1) was ignored without a word.
        if port == 0:
            raise ConfigError("relay URL has port 0")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError("relay URL has a path, query or fragment drain does not use")
        if not all(ch.isalnum() or ch in ".-_:" for ch in parts.hostname):
            # A percent-encoded host ("h%0d%0a") is no name a resolver takes: refused here, not per delivery.
            raise ConfigError("bad relay URL: its host is not a host name or IP address (no percent-encoding)")
        if parts.password and parts.scheme == "smtp" and not (
                parts.hostname in _LOOPBACK or parts.hostname.startswith("127.")):
            raise ConfigError("relay credentials would cross the network in clear text:"
                              " use smtps:// or smtp+starttls:// for a remote relay")
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port or _DEFAULT_PORTS[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"


def tls_context(verify: bool = True, ca_file: Path | None = None) -> ssl.SSLContext:
    """The relay's TLS context: verified against the system CAs (and ca_file) unless verify is False."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
