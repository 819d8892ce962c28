"""Typed settings, built once from the environment (the only reader of DRAIN_*) and passed on.

Each setting is declared once, below: its field, variable, parser (type and bounds), default,
group and one-line doc. `from_env` reads them all from that declaration; the README's settings
tables are checked against it (tests/test_settings.py). Values are kept parsed (the SMTP listen
address as (host, port), durability as a Durability).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drain.errors import ConfigError
from drain.settings import values as v
from drain.settings.declare import Declared, declared, read, setting
from drain.settings.values import (
    LOG_FORMATS,
    LOOPBACK,
    Durability,
    Network,
    parse_domain,
    parse_durability,
    parse_listen,
    parse_networks,
)

__all__ = ["LOG_FORMATS", "LOOPBACK", "Declared", "Durability", "Network", "Settings", "declared",
           "parse_domain", "parse_durability", "parse_listen", "parse_networks"]

# Settings only meaningful together: one without the other is a configuration error.
PAIRS = (("smtpd_auth_user", "smtpd_auth_password"), ("smtpd_tls_cert", "smtpd_tls_key"))
# A shortest and a longest wait: the longest below the shortest would silently override it.
ORDERED = (("retry_first_s", "retry_max_s"), ("breaker_cooldown_s", "breaker_max_s"))


@dataclass(frozen=True)
class Settings:
    """Everything drain can be told. Build with `Settings.from_env()`; tweak with `.with_()`."""

    # -- store: where state lives, and what an enqueue waits for
    redis_url: str | None = setting(
        "DRAIN_REDIS_URL", None, v.text, "store",
        "Redis URL (several, comma-separated: cells); unset: the embedded server under home",
        shown="embedded", secret=True)
    home: Path = setting("DRAIN_HOME", Path(".drain"), v.path, "store",
                         "folder of the embedded Redis (socket and data)", shown="./.drain")
    durability: Durability = setting(
        "DRAIN_DURABILITY", Durability("none"), parse_durability, "store",
        "what enqueue waits for: none (Redis memory), fsync (on disk), replicas:N (N replicas)")
    durability_timeout_s: float = setting("DRAIN_DURABILITY_TIMEOUT", 2.5, v.number(0.001), "store",
                                          "seconds fsync / replicas:N wait before the enqueue fails")

    # -- relay: where mail goes, and how drain introduces itself
    relay: str = setting("DRAIN_RELAY", "smtp://127.0.0.1:2525", v.text, "relay",
                         "smtp://host:port, smtp+starttls://..., smtps://user:pass@host:465", secret=True)
    relay_timeout_s: float = setting("DRAIN_RELAY_TIMEOUT", 30.0, v.number(0.1), "relay", "seconds for each SMTP step")
    relay_fallbacks: tuple[str, ...] = setting(
        "DRAIN_RELAY_FALLBACK", (), v.words, "relay",
        "relays tried in order while DRAIN_RELAY is down or its breaker open (comma-separated URLs)", secret=True)
    relay_connect_timeout_s: float = setting("DRAIN_RELAY_CONNECT_TIMEOUT", 5.0, v.number(0.1), "relay",
                                             "seconds to connect to a relay and read its greeting")
    relay_breaker_failures: int = setting("DRAIN_RELAY_BREAKER_FAILURES", 5, v.whole(1), "relay",
                                          "connection failures in a row that open a relay's breaker")
    storm_replies: int = setting("DRAIN_STORM_REPLIES", 50, v.whole(0), "relay",
                                 "a relay's last N replies all 5xx over several domains: its 5xx defer (0: off)")
    storm_domains: int = setting("DRAIN_STORM_DOMAINS", 5, v.whole(1), "relay",
                                 "distinct recipient domains those 5xx must span to be the relay's fault")
    relay_tls_verify: bool = setting("DRAIN_RELAY_TLS_VERIFY", True, v.flag, "relay",
                                     "verify the relay's TLS certificate and name")
    relay_ca_file: Path | None = setting("DRAIN_RELAY_CA_FILE", None, v.ca_file, "relay",
                                         "extra CA certificates (PEM) trusted for the relay")
    hostname: str = setting("DRAIN_HOSTNAME", "localhost.localdomain", v.helo_name, "relay",
                            "this machine's dotted name, in HELO and bounce reports", shown="host name",
                            fallback=v.default_hostname)
    dsn: bool = setting("DRAIN_DSN", False, v.flag, "relay", "send RFC 3464 bounce reports to senders of bounced mail")

    # -- worker: how workers take and hold their work
    batch_size: int = setting("DRAIN_BATCH_SIZE", 100, v.whole(1), "worker",
                          "messages one RQ job claims (more, a batch at a time, on a big backlog)")
    # At most 64: each lane is a thread with its own session and TLS context (a million of
    # them took 10 GB before the first claim).
    relay_sessions: int = setting("DRAIN_RELAY_SESSIONS", 2, v.whole(1, 64), "worker",
                                  "lanes of a worker process, each with its own relay session (at most 64)")
    settle_every: int = setting("DRAIN_SETTLE_EVERY", 3, v.whole(1), "worker",
                                "outcomes recorded in Redis after this many messages")
    local_journal: str = setting("DRAIN_LOCAL_JOURNAL", "", v.text, "worker",
                                 "folder on local disk where each delivery is journalled at once (off: none)",
                                 shown="HOME/journal")
    redis_journal_every: int = setting("DRAIN_REDIS_JOURNAL_EVERY", 25, v.whole(1), "worker",
                                       "with a local journal: deliveries journalled in Redis after this many")
    lease_ttl_s: float = setting("DRAIN_LEASE_TTL", 15.0, v.number(0.5), "worker",
                                 "seconds after which a silent worker's claim lapses")
    job_timeout_s: int = setting("DRAIN_JOB_TIMEOUT", 900, v.whole(1), "worker", "RQ timeout of one batch job")
    max_tokens: int = setting("DRAIN_MAX_TOKENS", 64, v.whole(1), "worker", "queued RQ batch jobs kept ready at most")
    poison_strikes: int = setting("DRAIN_POISON_STRIKES", 2, v.whole(1), "worker",
                                  "deaths or timeouts holding a message before it is quarantined as poison")

    # -- validation: hostile-input limits and what a finding does
    max_message_bytes: int = setting("DRAIN_MAX_MESSAGE_BYTES", 25 * 1024 * 1024, v.whole(1024), "validation",
                                     "larger messages are refused at the door")
    max_header_count: int = setting("DRAIN_MAX_HEADERS", 500, v.whole(1), "validation", "most header fields")
    max_mime_depth: int = setting("DRAIN_MAX_MIME_DEPTH", 50, v.whole(1), "validation", "deepest MIME nesting")
    max_mime_parts: int = setting("DRAIN_MAX_MIME_PARTS", 1000, v.whole(1), "validation", "most MIME parts")
    max_recipients: int = setting("DRAIN_MAX_RECIPIENTS", 1000, v.whole(1), "validation",
                                  "most envelope recipients of one message")
    max_memory_fraction: float = setting("DRAIN_MAX_MEMORY_FRACTION", 0.9, v.fraction, "store",
                                         "intake refuses new mail while Redis uses more than this share of maxmemory")
    allow_special_domains: bool = setting("DRAIN_ALLOW_SPECIAL_DOMAINS", False, v.flag, "validation",
                                          "accept special-use and test domains (.test, .local, .invalid)")
    check_dns: bool = setting("DRAIN_CHECK_DNS", False, v.flag, "validation", "check recipient domains in DNS (cached)")
    quarantine_codes: tuple[str, ...] = setting("DRAIN_QUARANTINE_CODES", (), v.words, "validation",
                                                "reason codes that quarantine")
    record_codes: tuple[str, ...] = setting("DRAIN_RECORD_CODES", (), v.words, "validation",
                                            "reason codes only recorded")
    quarantine_retention_s: float = setting("DRAIN_QUARANTINE_RETENTION", 14 * 24 * 3600.0, v.number(1.0),
                                            "validation", "seconds quarantined mail is kept (then deleted)")

    # -- flow: rates, lanes and breakers
    burst_s: float = setting("DRAIN_BURST", 0.2, v.number(0.0), "flow", "seconds of a rate that may go at once")
    backlog_share: int = setting("DRAIN_BACKLOG_SHARE", 4, v.whole(1), "flow",
                                 "every Nth claim serves the backlog lane first")
    rate_horizon_s: float = setting("DRAIN_RATE_HORIZON", 2.0, v.number(0.0), "flow",
                                    "seconds ahead a domain's rate books send times")
    fresh_max_age_s: float = setting("DRAIN_FRESH_MAX_AGE", 30.0, v.number(0.0), "flow",
                                     "seconds after which fresh mail joins the backlog lane")
    breaker_failures: int = setting("DRAIN_BREAKER_FAILURES", 20, v.whole(1), "flow",
                                    "transient failures in a row that open a destination's breaker")
    breaker_cooldown_s: float = setting("DRAIN_BREAKER_COOLDOWN", 60.0, v.number(0.0), "flow",
                                        "seconds a breaker first stays open (doubling on reopening)")
    breaker_max_s: float = setting("DRAIN_BREAKER_MAX", 900.0, v.number(0.0), "flow",
                                   "longest a breaker stays open, seconds")

    # -- retry: the schedule of transient failures
    retry_first_s: float = setting("DRAIN_RETRY_FIRST", 300.0, v.number(0.0), "retry", "seconds before the first retry")
    retry_max_s: float = setting("DRAIN_RETRY_MAX", 4000.0, v.number(0.0), "retry", "longest gap between retries")
    retry_quick_s: float = setting("DRAIN_RETRY_QUICK", 1.0, v.number(0.0), "retry",
                                   "seconds before the one quick retry of mail the relay refused with a 4xx "
                                   "on its first try (0: none)")
    max_lifetime_s: float = setting("DRAIN_MAX_LIFETIME", 5 * 24 * 3600.0, v.number(1.0), "retry",
                                    "seconds a message may stay queued before it bounces as expired")
    delay_warning_s: float = setting("DRAIN_DELAY_WARNING", 0.0, v.number(0.0), "retry",
                                     "seconds queued after which the sender is told once of the delay (0: never)")

    # -- smtpd: the SMTP ingress (`drain smtpd`)
    smtpd_listen: tuple[str, int] = setting("DRAIN_SMTPD_LISTEN", ("127.0.0.1", 2526), parse_listen, "smtpd",
                                            "where the ingress listens (not 2525, the default relay's port)",
                                            shown="127.0.0.1:2526")
    smtpd_max_bytes: int | None = setting("DRAIN_SMTPD_MAX_BYTES", None, v.size_or_none, "smtpd",
                                          "largest message taken (unset: max_message_bytes)",
                                          shown="DRAIN_MAX_MESSAGE_BYTES")
    smtpd_allow: tuple[Network, ...] = setting("DRAIN_SMTPD_ALLOW", LOOPBACK, v.networks, "smtpd",
                                               "client networks allowed to connect", shown="127.0.0.0/8,::1/128")
    smtpd_auth_user: str | None = setting("DRAIN_SMTPD_AUTH_USER", None, v.text, "smtpd",
                                          "AUTH is required when set")
    smtpd_auth_password: str | None = setting("DRAIN_SMTPD_AUTH_PASSWORD", None, v.text, "smtpd",
                                              "the AUTH password", secret=True)
    smtpd_auth_plaintext: bool = setting("DRAIN_SMTPD_AUTH_PLAINTEXT", False, v.flag, "smtpd",
                                         "allow AUTH without STARTTLS")
    smtpd_tls_cert: Path | None = setting("DRAIN_SMTPD_TLS_CERT", None, v.path, "smtpd", "PEM certificate for STARTTLS")
    smtpd_tls_key: Path | None = setting("DRAIN_SMTPD_TLS_KEY", None, v.path, "smtpd", "PEM key for STARTTLS")
    smtpd_smtputf8: bool | None = setting("DRAIN_SMTPD_SMTPUTF8", None, v.tristate, "smtpd",
                                          "offer SMTPUTF8 (auto: as the relay's EHLO says)", shown="auto")
    smtpd_8bitmime: bool | None = setting("DRAIN_SMTPD_8BITMIME", None, v.tristate, "smtpd",
                                          "offer 8BITMIME (auto: as the relay's EHLO says)", shown="auto")
    smtpd_max_sessions: int = setting("DRAIN_SMTPD_MAX_SESSIONS", 50, v.whole(1), "smtpd",
                                      "SMTP sessions open at once (421 4.3.2 beyond)")
    smtpd_tenants: tuple[tuple[Network, str], ...] = setting(
        "DRAIN_SMTPD_TENANTS", (), v.tenant_networks, "smtpd",
        "client network -> tenant of its mail when no AUTH user names one", shown="")

    # -- tenants: whose mail a message is
    tenant_header: str = setting("DRAIN_TENANT_HEADER", "", v.text, "flow",
                                 "header naming a message's tenant (when the API or ingress named none)")
    tenant_header_remove: bool = setting("DRAIN_TENANT_HEADER_REMOVE", False, v.flag, "flow",
                                         "remove that header before the message is stored (and so delivered)")

    # -- ops: who acts, and how logs are written
    actor: str = setting("DRAIN_ACTOR", "", v.text, "ops", "who operator actions are recorded as in the audit log",
                         shown="$USER@host", fallback=v.default_actor)
    log_format: str = setting("DRAIN_LOG_FORMAT", "text", v.log_format, "ops", "text or json log lines")
    trace: bool = setting("DRAIN_TRACE", True, v.flag, "ops",
                          "record every move of a message as an event (`drain log`, `drain trace`)")
    trace_retention_s: float = setting("DRAIN_TRACE_RETENTION", 7 * 86400.0, v.number(60.0), "ops",
                                       "seconds events are kept", shown="604800 (7 days)")
    trace_max_events: int = setting("DRAIN_TRACE_MAX_EVENTS", 3_000_000, v.whole(1000), "ops",
                                    "event stream entries kept at most (the oldest go first; an entry "
                                    "is one event, a settle's deliveries or up to 50 received events)")
    event_log: str | None = setting("DRAIN_EVENT_LOG", None, v.text, "ops",
                                    "also write events as JSON lines: `-` for stdout, or a file path")

    @property
    def smtpd_size_limit(self) -> int:
        """The SIZE the ingress announces and enforces (never above max_message_bytes)."""
        return min(self.smtpd_max_bytes or self.max_message_bytes, self.max_message_bytes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values = read(cls, env)
        names = {d.field: d.var.name for d in declared(cls)}
        for one, other in PAIRS:
            if (values[one] is None) != (values[other] is None):
                raise ConfigError(f"{names[one]} and {names[other]} must be set together")
        for low, high in ORDERED:
            if values[high] < values[low]:
                raise ConfigError(f"{names[high]} ({values[high]:g} s) must be at least "
                                  f"{names[low]} ({values[low]:g} s)")
        settings = cls(**values)
        return settings.with_(**overrides) if overrides else settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)
