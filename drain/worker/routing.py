"""Routes: which relays take a destination domain's or a tenant's mail, kept in Redis so every
worker sees a change at its next claim.

A route is a list of relay URLs: the relay, then its fallbacks, tried in that order while a
relay is down or its breaker is open (as Postfix's smtp_fallback_relay). A recipients'
domain group goes by, in this order: the route of its domain (`example.com`, that domain
only); the route of its nearest parent domain (`.example.com` takes every subdomain of
example.com, not example.com itself, as in a Postfix transport map; `.sub.example.com`
goes before `.example.com`); its tenant's route; the environment's (DRAIN_RELAY, then
DRAIN_RELAY_FALLBACK). Destination routes go before a tenant's: a destination that needs
its own path (a partner's gateway) needs it whoever sends. Route URLs carry no credentials: they are stored
in Redis, and secrets come from the environment only (an authenticated relay is DRAIN_RELAY).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit

import redis

from drain.errors import ConfigError
from drain.flow.breaker import RELAY, Breakers, is_relay
from drain.message import domain_key
from drain.settings import Settings
from drain.store import keys, record
from drain.worker import storm
from drain.worker.delivery import RelayConfig

log = logging.getLogger(__name__)

Kind = Literal["domain", "tenant"]
# Most relays one route may list (the relay and its fallbacks).
MOST_RELAYS = 8
# The message hash field naming its tenant (written by the intake; read here defensively).
TENANT = record.TENANT
_NAME = re.compile(r"[^\s@/:\\\"'<>\x00-\x1f\x7f]{1,253}")
# A domain a recipient can have (email-validator's rule): labels of letters, digits and inner hyphens.
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def check_url(url: str) -> RelayConfig:
    """A route's relay URL as drain can use it, or ConfigError saying why not (one line)."""
    # Before parsing: a password holding "/", "?" or "#" would end the URL's host part there
    # and the parser's error would quote the password as a port.
    if "@" in url:
        raise ConfigError("route URLs carry no credentials (they would be kept in Redis);"
                          " an authenticated relay is DRAIN_RELAY, from the environment")
    config = RelayConfig.from_url(url)
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError("route URLs carry no credentials (they would be kept in Redis);"
                          " an authenticated relay is DRAIN_RELAY, from the environment")
    return config


def check_name(kind: Kind, name: str, settable: bool = True) -> str:
    """A route's domain (lowercased; a leading dot: its subdomains) or tenant name, or
    ConfigError (one line). `settable` False (to delete one) lets by a domain that no
    recipient can have, as a drain from before this check stored."""
    value = name.strip().lower() if kind == "domain" else name.strip()
    domain = value[1:] if kind == "domain" and value.startswith(".") else value
    if kind == "domain" and ".." not in domain:
        domain = ascii_domain(domain)
        value = ("." if value.startswith(".") else "") + domain
    if not _NAME.fullmatch(domain) or (kind == "domain" and (".." in domain or domain.startswith(".")
                                                             or not domain.isascii())):
        raise ConfigError(f"not a {kind} name drain can route: {name!r}")
    if settable and kind == "domain" and not _HOST.fullmatch(domain):
        # No recipient's domain is written so: the route would take no mail, silently.
        hint = f" (every subdomain of {domain[2:]} is '.{domain[2:]}')" if domain.startswith("*.") else ""
        raise ConfigError(f"not a domain name a recipient can have: {name!r}{hint}")
    return value


def ascii_domain(domain: str) -> str:
    """A domain as routes key it: lowercased, in IDNA A-labels (bücher.de is xn--bcher-kva.de,
    whichever form a recipient or the operator wrote) and without the DNS root's trailing dot
    (example.com. is example.com); left as it is when it cannot be encoded."""
    domain = domain_key(domain)
    return domain[:-1] if domain.endswith(".") and domain.isascii() else domain


def parents(domain: str) -> list[str]:
    """The names of the routes for a domain's parents, nearest first: `.b.c`, `.c` for a.b.c."""
    labels = domain.split(".")
    return ["." + ".".join(labels[i:]) for i in range(1, len(labels))]


def relay_name(config: RelayConfig, settings: Settings) -> str:
    """The name a relay's breaker, concurrency cap and counts go by: the environment's relay
    keeps the name "(relay)"; others are "relay:" and the URL without credentials."""
    if config.redacted() == RelayConfig.from_url(settings.relay).redacted():
        return RELAY
    return f"relay:{config.redacted()}"


def default_names(settings: Settings) -> list[str]:
    """The relay names of the environment's route: "(relay)", then its fallbacks'."""
    return [RELAY, *(relay_name(RelayConfig.from_url(url), settings) for url in settings.relay_fallbacks)]


def not_own_ingress(url: str, listen: tuple[str, int], what: str = "relay") -> None:
    """ConfigError when a relay URL is drain's own SMTP ingress (DRAIN_SMTPD_LISTEN): every
    message sent there is taken back into the queue and sent there again, for ever (the
    ingress adds no Received field that a hop count could stop)."""
    config = RelayConfig.from_url(url)
    host, port = listen
    if config.port != port:
        return
    def loopback(name: str) -> bool:
        return name in ("localhost", "::1") or name.startswith("127.")

    wildcard = host in ("", "0.0.0.0", "::")
    target = config.host.lower()
    if target == host.lower() or (loopback(target) and (wildcard or loopback(host.lower()))):
        raise ConfigError(f"{what} {config.redacted()} is drain's own SMTP ingress (DRAIN_SMTPD_LISTEN="
                          f"{host}:{port}): mail sent there would come back into the queue, a loop")


def _field(kind: Kind, name: str) -> str:
    return f"{kind}:{name}"


def set_route(client: redis.Redis, kind: Kind, name: str, urls: list[str]) -> str:
    """Store a route (every URL checked first: a bad one changes nothing); returns its name."""
    name = check_name(kind, name)
    if not urls:
        raise ConfigError("a route needs a relay URL")
    if len(urls) > MOST_RELAYS:
        raise ConfigError(f"a route lists at most {MOST_RELAYS} relays")
    named = [check_url(url).redacted() for url in urls]
    twice = next((n for i, n in enumerate(named) if n in named[:i]), None)
    if twice is not None:  # it would be tried again right after failing, its failures counted twice
        raise ConfigError(f"relay {twice} is listed twice in the route (a fallback of itself)")
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.ROUTES, _field(kind, name), json.dumps(urls))
    pipe.incr(keys.ROUTES_VERSION)
    pipe.execute()
    return name


def delete_route(client: redis.Redis, kind: Kind, name: str) -> bool:
    name = check_name(kind, name, settable=False)
    pipe = client.pipeline(transaction=True)
    pipe.hdel(keys.ROUTES, _field(kind, name))
    pipe.incr(keys.ROUTES_VERSION)
    return bool(pipe.execute()[0])


@dataclass(frozen=True)
class Route:
    kind: Kind
    name: str
    urls: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "relay": self.urls[0], "fallbacks": list(self.urls[1:])}


def load(client: redis.Redis) -> list[Route]:
    """Every stored route that can be used; a damaged one is logged and left out."""
    routes: list[Route] = []
    for raw_field, raw_value in cast(dict[bytes, bytes], client.hgetall(keys.ROUTES)).items():
        field = raw_field.decode("utf-8", "replace")
        kind, _sep, name = field.partition(":")
        try:
            urls = json.loads(raw_value)
            if kind not in ("domain", "tenant") or not isinstance(urls, list) or not urls:
                raise ValueError("not a route")
            for url in urls:
                check_url(str(url))
        except (ValueError, ConfigError) as exc:
            log.error("route %r cannot be used (%s); its mail goes by the default route", field[:200], exc)
            continue
        routes.append(Route(cast(Kind, kind), name, tuple(str(u) for u in urls)))
    return sorted(routes, key=lambda r: (r.kind, r.name))


class Routes:
    """The routes as one worker sees them, reloaded when their version changes (per claim)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.default = (settings.relay, *settings.relay_fallbacks)
        self.version: bytes | None = b"unread"
        self.by_domain: dict[str, tuple[str, ...]] = {}
        self.by_tenant: dict[str, tuple[str, ...]] = {}
        self.by_parent = False  # whether some route is for a parent domain (`.example.com`)

    def refresh(self, version: bytes | None) -> None:
        """Reload the routes when their version (read by the caller) changed."""
        if version == self.version:
            return
        routes = load(self.client)
        self.by_domain = {r.name: r.urls for r in routes if r.kind == "domain"}
        self.by_tenant = {r.name: r.urls for r in routes if r.kind == "tenant"}
        self.by_parent = any(name.startswith(".") for name in self.by_domain)
        self.version = version

    def chain(self, domain: str, tenant: str = "") -> tuple[str, ...]:
        """The relay URLs for mail to `domain` of `tenant`, in the order they are tried: the
        domain's route, its nearest parent's, the tenant's, the default."""
        if domain.endswith(".") or not domain.isascii():
            domain = ascii_domain(domain)
        found = self.by_domain.get(domain)
        if found is None and self.by_parent:
            found = next((self.by_domain[p] for p in parents(domain) if p in self.by_domain), None)
        return found or self.by_tenant.get(tenant) or self.default

    def tenants(self, ids: list[str]) -> dict[str, str]:
        """Each message's tenant (id -> name), read only while some route is by tenant."""
        if not self.by_tenant or not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hget(keys.message(msg_id), TENANT)
        found: dict[str, str] = {}
        for msg_id, value in zip(ids, pipe.execute(), strict=True):
            if isinstance(value, bytes):
                found[msg_id] = value.decode("utf-8", "replace")
        return found


def _counts(raw: object) -> dict[str, int]:
    table = cast(dict[bytes, bytes], raw)
    return {k.decode("utf-8", "replace"): int(v) for k, v in table.items() if v.lstrip(b"-").isdigit()}


def relay_states(client: redis.Redis, settings: Settings, now: float | None = None) -> dict[str, dict[str, object]]:
    """Every relay drain knows of (the environment's, the routes', any with counts): what it
    took, how often it gave no session, its concurrency cap, the messages being handed to
    it now (counted for a capped relay only), its breaker, and whether the environment or a
    route names it now ("configured"; the others have counts left from former routes)."""
    now = time.time() if now is None else now
    urls = [settings.relay, *settings.relay_fallbacks, *(u for r in load(client) for u in r.urls)]
    names: list[str] = []
    for url in urls:
        try:
            names.append(relay_name(RelayConfig.from_url(url), settings))
        except ConfigError:
            continue
    pipe = client.pipeline(transaction=False)
    for key in (keys.RELAY_HANDED, keys.RELAY_FAILED, keys.RELAY_CONCURRENCY):
        pipe.hgetall(key)
    handed, failed, caps = (_counts(r) for r in pipe.execute())
    capped = [name for name in dict.fromkeys(names) if caps.get(name, 0) > 0]
    pipe = client.pipeline(transaction=False)
    for name in capped:
        pipe.zcount(keys.relay_busy(name), f"({now}", "+inf")
    busy = dict(zip(capped, (int(n) for n in pipe.execute()), strict=True)) if capped else {}
    breakers = {n: st for n, st in Breakers(client, settings).states().items() if is_relay(n)}
    refusing = storm.states(client)
    out: dict[str, dict[str, object]] = {}
    for name in dict.fromkeys([*names, *handed, *failed, *breakers, *refusing]):
        until = breakers.get(name, {}).get("open_until", 0.0)
        out[name] = {"handed": handed.get(name, 0), "failed": failed.get(name, 0),
                     "concurrency": caps.get(name, 0), "busy": busy.get(name, 0), "open": until > now,
                     "open_until": until if until > now else None,
                     "failures": int(breakers.get(name, {}).get("failures", 0)), "configured": name in names,
                     # Set while the 5xx storm guard holds it as refusing everything (drain.worker.storm).
                     "refusing": refusing.get(name)}
    return out


def set_concurrency(client: redis.Redis, url: str, most: int, settings: Settings) -> str:
    """A relay's concurrency cap (0 removes it), live for every worker; returns the relay's name."""
    name = relay_name(RelayConfig.from_url(url) if url == settings.relay else check_url(url), settings)
    if most > 0:
        client.hset(keys.RELAY_CONCURRENCY, name, most)
    else:
        client.hdel(keys.RELAY_CONCURRENCY, name)
    return name
