"""Typed settings, built once from the environment (the only reader of DRAIN_*) and passed on."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drain.errors import ConfigError


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (env.get(name) or "").split(",") if item.strip())


def _default_hostname() -> str:
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


def _default_actor(env: Mapping[str, str]) -> str:
    import socket

    return f"{env.get('USER') or env.get('LOGNAME') or _login_name()}@{socket.gethostname()}"


def parse_domain(text: str, name: str = "--domain") -> str:
    """A destination domain as given to `rate set` or `pause` (IDNA / hostname syntax),
    lowercased, without a trailing dot; ConfigError when it is not one."""
    import idna

    domain = text.lower().removesuffix(".")
    try:
        encoded = idna.encode(domain, uts46=True, std3_rules=True)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ConfigError(f"{name} must be a domain name like example.com, got {text!r} ({exc})") from None
    if len(encoded) > 253:
        raise ConfigError(f"{name} is longer than a domain name may be (253), got {len(encoded)} characters")
    return domain


def _tristate(env: Mapping[str, str], name: str) -> bool | None:
    """True, False, or None for 'auto' (also when unset)."""
    raw = (env.get(name) or "").strip().lower()
    return None if raw in {"", "auto"} else _bool(env, name, False)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_networks(text: str, name: str = "DRAIN_SMTPD_ALLOW") -> tuple[Network, ...]:
    """Comma-separated CIDRs (or single addresses) like '127.0.0.0/8, 10.1.2.0/24, ::1'."""
    networks: list[Network] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name} must list networks like 127.0.0.0/8 or ::1/128, got {part!r}") from None
    if not networks:
        raise ConfigError(f"{name} lists no network")
    return tuple(networks)


def parse_listen(text: str, name: str = "DRAIN_SMTPD_LISTEN") -> tuple[str, int]:
    """(host, port) from 'HOST:PORT', '[v6]:PORT' or ':PORT' (all addresses)."""
    host, colon, port_text = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name} must look like 127.0.0.1:2526 or [::1]:2526, got {text!r}")
    return host or "0.0.0.0", int(port_text)


@dataclass(frozen=True)
class Settings:
    """Everything drain can be told. Build with `Settings.from_env()`; tweak with `.with_()`."""

    # Where state lives: a Redis URL, or None for the embedded server kept under `home`.
    # Both URLs may carry passwords: kept out of repr (and so out of logs).
    redis_url: str | None = field(default=None, repr=False)
    home: Path = Path(".drain")
    # Where mail goes (smtp://host:port, smtp+starttls://..., smtps://user:pass@host:465).
    relay: str = field(default="smtp://127.0.0.1:2525", repr=False)
    relay_timeout_s: float = 30.0
    # Messages one RQ job claims and works through.
    batch_size: int = 100
    # Outcomes recorded in Redis after this many messages (smaller: fewer resends after a crash;
    # 3 costs no measurable throughput against 10, 1 costs about a quarter: benchmarks/).
    settle_every: int = 3
    # A claim lease lapses this long after its worker stops renewing it.
    lease_ttl_s: float = 15.0
    # RQ job timeout for one batch.
    job_timeout_s: int = 900
    # Queued RQ jobs kept ready at most (each claims up to batch_size messages).
    max_tokens: int = 64
    # Hostile-input limits.
    max_message_bytes: int = 25 * 1024 * 1024
    max_header_count: int = 500
    max_mime_depth: int = 50
    max_mime_parts: int = 1000
    # Accept special-use and test domains (.test, .local, .invalid) in addresses.
    allow_special_domains: bool = False
    # Deaths or timeouts while holding a message before it is quarantined as poison.
    poison_strikes: int = 2
    # Quarantined mail is deleted after this long (counted as deleted).
    quarantine_retention_s: float = 14 * 24 * 3600.0
    # Check recipient domains in DNS (cached); off by default.
    check_dns: bool = False
    # Severity overrides: reason codes that quarantine, or are only recorded.
    quarantine_codes: tuple[str, ...] = ()
    record_codes: tuple[str, ...] = ()
    # Who is acting, for the audit log of operator actions.
    actor: str = ""
    # Default burst: seconds of a rate that may go at once (`drain rate set --burst` overrides).
    burst_s: float = 0.2
    # Every Nth claim serves the backlog lane first (its guaranteed share is about 1/N).
    backlog_share: int = 4
    # A domain's rate books send times at most this far ahead; mail beyond waits parked.
    rate_horizon_s: float = 2.0
    # Fresh mail that waited longer than this moves to the backlog lane.
    fresh_max_age_s: float = 30.0
    # Circuit breaker: consecutive transient failures of a destination that open it, and
    # how long it stays open (doubling on each reopening, capped).
    breaker_failures: int = 20
    breaker_cooldown_s: float = 60.0
    breaker_max_s: float = 900.0
    # This machine's name in HELO and in bounce reports (a dotted name).
    hostname: str = "localhost.localdomain"
    # Send RFC 3464 bounce reports to senders of bounced mail.
    dsn: bool = False
    # Retry schedule for transient failures (seconds), and the queue lifetime.
    retry_first_s: float = 300.0
    retry_max_s: float = 4000.0
    max_lifetime_s: float = 5 * 24 * 3600.0
    # SMTP ingress (`drain smtpd`): where it listens (not 2525, the default relay's port).
    smtpd_listen: str = "127.0.0.1:2526"
    # Largest message taken over SMTP, announced in EHLO (None: max_message_bytes).
    smtpd_max_bytes: int | None = None
    # Client networks allowed to connect.
    smtpd_allow: tuple[Network, ...] = LOOPBACK
    # AUTH is required when a user is set; only after STARTTLS unless auth_plaintext.
    smtpd_auth_user: str | None = None
    smtpd_auth_password: str | None = field(default=None, repr=False)
    smtpd_auth_plaintext: bool = False
    # STARTTLS is offered when both are set (PEM files).
    smtpd_tls_cert: Path | None = None
    smtpd_tls_key: Path | None = None
    # Offer SMTPUTF8 / 8BITMIME to clients: True, False, or None to follow the relay's EHLO.
    smtpd_smtputf8: bool | None = None
    smtpd_8bitmime: bool | None = None
    # Most SMTP sessions open at once (421 4.3.2 beyond): each may buffer a message of up to the size limit.
    smtpd_max_sessions: int = 50
    # What `enqueue` waits for before it returns: "none" (Redis holds it in memory),
    # "fsync" (on disk: WAITAOF, or appendfsync always), "replicas:N" (WAIT for N replicas).
    durability: str = "none"
    durability_timeout_s: float = 1.0
    # The relay's TLS certificate is verified unless this is False; ca_file adds trusted CAs.
    relay_tls_verify: bool = True
    relay_ca_file: Path | None = None
    # Most envelope recipients one message may have.
    max_recipients: int = 1000
    # Intake refuses new mail while Redis uses more than this share of its maxmemory.
    max_memory_fraction: float = 0.9
    # How workers, smtpd and serve write their logs: "text" lines or "json" lines.
    log_format: str = "text"

    @property
    def smtpd_size_limit(self) -> int:
        """The SIZE the ingress announces and enforces (never above max_message_bytes)."""
        return min(self.smtpd_max_bytes or self.max_message_bytes, self.max_message_bytes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            redis_url=env.get("DRAIN_REDIS_URL") or None,
            home=Path(env.get("DRAIN_HOME") or ".drain"),
            relay=env.get("DRAIN_RELAY") or cls.relay,
            relay_timeout_s=_float(env, "DRAIN_RELAY_TIMEOUT", cls.relay_timeout_s, 0.1),
            batch_size=_int(env, "DRAIN_BATCH_SIZE", cls.batch_size, 1),
            settle_every=_int(env, "DRAIN_SETTLE_EVERY", cls.settle_every, 1),
            lease_ttl_s=_float(env, "DRAIN_LEASE_TTL", cls.lease_ttl_s, 0.5),
            job_timeout_s=_int(env, "DRAIN_JOB_TIMEOUT", cls.job_timeout_s, 1),
            max_tokens=_int(env, "DRAIN_MAX_TOKENS", cls.max_tokens, 1),
            max_message_bytes=_int(env, "DRAIN_MAX_MESSAGE_BYTES", cls.max_message_bytes, 1024),
            max_header_count=_int(env, "DRAIN_MAX_HEADERS", cls.max_header_count, 1),
            max_mime_depth=_int(env, "DRAIN_MAX_MIME_DEPTH", cls.max_mime_depth, 1),
            max_mime_parts=_int(env, "DRAIN_MAX_MIME_PARTS", cls.max_mime_parts, 1),
            allow_special_domains=_bool(env, "DRAIN_ALLOW_SPECIAL_DOMAINS", cls.allow_special_domains),
            poison_strikes=_int(env, "DRAIN_POISON_STRIKES", cls.poison_strikes, 1),
            quarantine_retention_s=_float(env, "DRAIN_QUARANTINE_RETENTION", cls.quarantine_retention_s, 1.0),
            check_dns=_bool(env, "DRAIN_CHECK_DNS", cls.check_dns),
            quarantine_codes=_list(env, "DRAIN_QUARANTINE_CODES"),
            record_codes=_list(env, "DRAIN_RECORD_CODES"),
            actor=env.get("DRAIN_ACTOR") or _default_actor(env),
            burst_s=_float(env, "DRAIN_BURST", cls.burst_s, 0.0),
            backlog_share=_int(env, "DRAIN_BACKLOG_SHARE", cls.backlog_share, 1),
            rate_horizon_s=_float(env, "DRAIN_RATE_HORIZON", cls.rate_horizon_s, 0.0),
            fresh_max_age_s=_float(env, "DRAIN_FRESH_MAX_AGE", cls.fresh_max_age_s, 0.0),
            breaker_failures=_int(env, "DRAIN_BREAKER_FAILURES", cls.breaker_failures, 1),
            breaker_cooldown_s=_float(env, "DRAIN_BREAKER_COOLDOWN", cls.breaker_cooldown_s, 0.0),
            breaker_max_s=_float(env, "DRAIN_BREAKER_MAX", cls.breaker_max_s, 0.0),
            dsn=_bool(env, "DRAIN_DSN", cls.dsn),
            hostname=env.get("DRAIN_HOSTNAME") or _default_hostname(),
            retry_first_s=_float(env, "DRAIN_RETRY_FIRST", cls.retry_first_s, 0.0),
            retry_max_s=_float(env, "DRAIN_RETRY_MAX", cls.retry_max_s, 0.0),
            max_lifetime_s=_float(env, "DRAIN_MAX_LIFETIME", cls.max_lifetime_s, 1.0),
            **_smtpd_from_env(env),
            **_safety_from_env(env),
            log_format=_log_format(env),
        )
        return settings.with_(**overrides) if overrides else settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


LOG_FORMATS = ("text", "json")


def _log_format(env: Mapping[str, str]) -> str:
    raw = (env.get("DRAIN_LOG_FORMAT") or "text").strip().lower()
    if raw not in LOG_FORMATS:
        raise ConfigError(f"DRAIN_LOG_FORMAT must be text or json, got {raw!r}")
    return raw


def _smtpd_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    listen = env.get("DRAIN_SMTPD_LISTEN") or Settings.smtpd_listen
    parse_listen(listen)
    max_bytes = _int(env, "DRAIN_SMTPD_MAX_BYTES", 0, 0) or None
    allow = env.get("DRAIN_SMTPD_ALLOW") or ""
    user = env.get("DRAIN_SMTPD_AUTH_USER") or None
    password = env.get("DRAIN_SMTPD_AUTH_PASSWORD") or None
    if (user is None) != (password is None):
        raise ConfigError("DRAIN_SMTPD_AUTH_USER and DRAIN_SMTPD_AUTH_PASSWORD must be set together")
    cert = env.get("DRAIN_SMTPD_TLS_CERT") or None
    key = env.get("DRAIN_SMTPD_TLS_KEY") or None
    if (cert is None) != (key is None):
        raise ConfigError("DRAIN_SMTPD_TLS_CERT and DRAIN_SMTPD_TLS_KEY must be set together")
    return {
        "smtpd_listen": listen,
        "smtpd_max_bytes": max_bytes,
        "smtpd_allow": parse_networks(allow) if allow.strip() else LOOPBACK,
        "smtpd_auth_user": user,
        "smtpd_auth_password": password,
        "smtpd_auth_plaintext": _bool(env, "DRAIN_SMTPD_AUTH_PLAINTEXT", False),
        "smtpd_tls_cert": Path(cert) if cert else None,
        "smtpd_tls_key": Path(key) if key else None,
        "smtpd_smtputf8": _tristate(env, "DRAIN_SMTPD_SMTPUTF8"),
        "smtpd_8bitmime": _tristate(env, "DRAIN_SMTPD_8BITMIME"),
        "smtpd_max_sessions": _int(env, "DRAIN_SMTPD_MAX_SESSIONS", Settings.smtpd_max_sessions, 1),
    }


def parse_durability(text: str, name: str = "DRAIN_DURABILITY") -> tuple[str, int]:
    """("none", 0), ("fsync", 0) or ("replicas", N) from 'none', 'fsync' or 'replicas:N'."""
    mode, _colon, count = text.strip().lower().partition(":")
    if mode in {"none", "fsync"} and not count:
        return mode, 0
    if mode == "replicas" and count.isdigit() and int(count) >= 1:
        return mode, int(count)
    raise ConfigError(f"{name} must be none, fsync or replicas:N (N >= 1), got {text!r}")


def _safety_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    durability = (env.get("DRAIN_DURABILITY") or Settings.durability).strip().lower()
    parse_durability(durability)
    ca_file = env.get("DRAIN_RELAY_CA_FILE") or None
    if ca_file is not None and not Path(ca_file).is_file():
        raise ConfigError(f"DRAIN_RELAY_CA_FILE is not a readable file: {ca_file}")
    return {
        "durability": durability,
        "durability_timeout_s": _float(env, "DRAIN_DURABILITY_TIMEOUT", Settings.durability_timeout_s, 0.001),
        "relay_tls_verify": _bool(env, "DRAIN_RELAY_TLS_VERIFY", Settings.relay_tls_verify),
        "relay_ca_file": Path(ca_file) if ca_file else None,
        "max_recipients": _int(env, "DRAIN_MAX_RECIPIENTS", Settings.max_recipients, 1),
        "max_memory_fraction": _fraction(env, "DRAIN_MAX_MEMORY_FRACTION", Settings.max_memory_fraction),
    }


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default, 0.0)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} must be above 0 and at most 1, got {value}")
    return value
