"""Open the Redis connection drain works on: DRAIN_REDIS_URL, or the embedded server.

URLs: `redis://[:password@]host:port/db`, `rediss://...` (TLS, certificate verified),
`unix:///path/redis.sock`, and `redis+sentinel://[:password@]host:port[,host:port...]/service/db`
to find the master through Redis Sentinel (and follow it through a failover).

Clients have redis-py's own silent retry turned off: a command that fails is reported to
drain's code, which decides whether it is safe to repeat (drain.retry.redis_backoff), and a
claim or an enqueue is never run twice without drain knowing.

Once a process, drain checks that the Redis it connects to does not evict keys when full
(`maxmemory-policy noeviction`): an evicting Redis would drop queued mail silently.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from drain.errors import ConfigError, EvictingRedis, RedisUnavailable
from drain.settings import Settings
from drain.store import embedded
from drain.store.cells import split_urls
from drain.worker.retry import redis_backoff

log = logging.getLogger(__name__)

_SCHEMES = {"redis", "rediss", "unix", "redis+sentinel"}
SENTINEL_DEFAULT_PORT = 26379
_DB_PATH = re.compile(r"/?[0-9]*")
_QUERY_SECRET = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)
_CLIENT_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 30}


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def redacted(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages (each URL of a list of cells)."""
    urls = split_urls(url)
    if len(urls) > 1:
        return ",".join(redacted(one) for one in urls)
    # redis-py also takes a password as a query parameter (`?password=...`): hidden too.
    url = _QUERY_SECRET.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    auth, at, hosts = netloc.rpartition("@")
    if not at or ":" not in auth:
        return url
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        _scheme, _sep, rest = url.partition("://")
        netloc, _slash, path = rest.partition("/")
        auth, _at, hosts = netloc.rpartition("@")
        username, _colon, password = auth.partition(":") if auth else ("", "", "")
        sentinels: list[tuple[str, int]] = []
        for item in hosts.split(","):
            host, colon, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
            host = host.removeprefix("[").removesuffix("]")
            if not host or (colon and not (port.isascii() and port.isdigit())):
                raise ConfigError(f"bad sentinel address {item!r} in {redacted(url)}")
            sentinels.append((host, int(port) if colon else SENTINEL_DEFAULT_PORT))
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if not parts or len(parts) > 2 or (len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit())):
            raise ConfigError(f"a sentinel URL ends with /service_name or /service_name/db, got {redacted(url)}")
        return cls(tuple(sentinels), unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0,
                   unquote(username) or None, unquote(password) or None)


# Redis's reply to a write on a replica; inside a script's error it follows the script's own text.
_READONLY = "READONLY You can't write against a read only replica"


class _SentinelConnection(SentinelManagedConnection):
    """Two changes to redis-py's Sentinel connection.

    It keeps its socket when a read is interrupted (its read_response defaults to
    disconnect_on_error=False, unlike a plain Connection's). A worker's SIGTERM arrives as an
    exception inside the blocking dequeue, so the connection went back to the pool with that
    reply still due: the next command (RQ's teardown) waited out the dequeue and then read the
    dequeue's reply as its own. Dropped here instead.

    It takes a READONLY reply for the sign that its master was demoted (disconnects, and
    raises ConnectionError, which drain's callers wait out and repeat on the new master), but
    only when READONLY is the reply's code. A Lua script that writes fails on a replica with
    "Error running script ... -READONLY ..." (Redis 6), a plain ResponseError: a settle or a
    claim sent on a connection still open to the old master then failed for good, leaving its
    mail in flight under a live worker. Treated here as the demotion it is: the replica ran
    none of the script's writes, so repeating it on the new master is safe."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["disconnect_on_error"] = True
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if not (self.connection_pool.is_master and _READONLY in str(exc)):
                raise
            self.disconnect()  # type: ignore[no-untyped-call]
            raise redis.ConnectionError("the master was demoted to a replica (a script met READONLY)") from exc


_announced = False


def _announce(text: str) -> None:
    """One line on standard error, once a process (never on stdout: --json stays clean)."""
    global _announced
    if not _announced:
        _announced = True
        sys.stderr.write(f"drain: {text}\n")
        sys.stderr.flush()


def resolve_url(settings: Settings) -> str:
    """The URL to connect to, starting the embedded server when no URL is configured.
    Using the embedded server is never silent: it is said on standard error, with its folder."""
    if settings.redis_url is None:
        where = settings.home.resolve()
        if not embedded.has_data(settings.home):
            _announce(f"no DRAIN_REDIS_URL: starting a new, empty embedded Redis in {where}")
        else:
            _announce(f"no DRAIN_REDIS_URL: using the embedded Redis in {where}")
        return embedded.ensure_running(settings.home)
    if len(split_urls(settings.redis_url)) > 1:
        raise ConfigError("DRAIN_REDIS_URL lists several cells; this command works on one Redis: give it "
                          "one cell's URL with --redis-url")
    try:
        scheme = urlsplit(settings.redis_url).scheme
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket: redis://[::1
        raise ConfigError(f"bad Redis URL {redacted(settings.redis_url)}: {exc}") from None
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported Redis URL scheme {scheme!r} in {redacted(settings.redis_url)}"
            " (use redis://, rediss://, unix:// or redis+sentinel://)"
        )
    return settings.redis_url


def client_for(url: str, timeout_s: float | None = None) -> redis.Redis:
    """A client for the URL (not yet connected), with raw (bytes) replies as RQ needs.
    With timeout_s, connecting and every command (the sentinels' too) give up after that long."""
    options = dict(_CLIENT_OPTIONS)
    if timeout_s is not None:
        options.update(socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        if url.startswith("redis+sentinel://"):
            where = SentinelUrl.parse(url)
            asking = timeout_s or 5
            sentinel = Sentinel(list(where.sentinels), socket_connect_timeout=asking,  # type: ignore[no-untyped-call]
                                socket_timeout=asking)
            master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
                where.service, db=where.db, username=where.username, password=where.password,
                retry=_no_retry(), connection_class=_SentinelConnection, **options)
            return master
        if not url.startswith("unix://") and not _DB_PATH.fullmatch(urlsplit(url).path):
            # redis-py reads "/1x" or "/l" as no database (0, another drain's data) and "/2/3" as 23.
            raise ConfigError(f"bad Redis URL {redacted(url)}: after the host comes the database number"
                              " alone (/0, /1, ...) or nothing")
        return redis.Redis.from_url(url, retry=_no_retry(), **options)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redacted(url)}: {exc}") from None


def ping(client: redis.Redis, url: str) -> None:
    """Ping once; a one-line RedisUnavailable (never holding a password) if that fails."""
    try:
        client.ping()
    except redis.AuthenticationError:
        raise RedisUnavailable(f"Redis at {redacted(url)} refused the credentials") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise RedisUnavailable(f"Redis at {redacted(url)} needs a password (give it in the URL)") from None
        raise RedisUnavailable(f"Redis at {redacted(url)} answered: {exc}") from None
    except redis.RedisError as exc:
        # redis-py follows "No master found for 'svc'" with the repr of every Sentinel client
        # it asked (a thousand characters of connection pools): the first part says it.
        said = str(exc).split(" : <", 1)[0]
        raise RedisUnavailable(f"cannot reach Redis at {redacted(url)}: {said}") from None


# URLs whose eviction policy this process has checked.
_policy_checked: set[str] = set()
SAFE_POLICY = "noeviction"


def eviction_policy(client: redis.Redis) -> str | None:
    """Redis's maxmemory-policy: from CONFIG GET, else (CONFIG refused by an ACL or renamed on a
    managed Redis) from INFO memory; None if neither says."""
    try:
        found = client.config_get("maxmemory-policy")
        for name, value in found.items():
            if _text(name) == "maxmemory-policy":
                return _text(value)
    except redis.ResponseError:
        pass
    try:
        value = client.info("memory").get("maxmemory_policy")
    except redis.ResponseError:
        return None
    return None if value is None else _text(value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_eviction(client: redis.Redis, url: str) -> None:
    """EvictingRedis (one line) if Redis would evict queued mail when full; checked once a process."""
    if url in _policy_checked:
        return
    try:
        policy = eviction_policy(client)
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot read the settings of Redis at {redacted(url)}: {exc}") from None
    if policy is None:
        log.warning("cannot read maxmemory-policy of Redis at %s (CONFIG GET and INFO refused): "
                    "make sure it is %s, or queued mail may be evicted", redacted(url), SAFE_POLICY)
    elif policy != SAFE_POLICY:
        raise EvictingRedis(f"Redis at {redacted(url)} has maxmemory-policy {policy[:40]!r}: it would evict "
                            f"queued mail when full; set maxmemory-policy {SAFE_POLICY}")
    _policy_checked.add(url)


def connect(settings: Settings, check: bool = True) -> redis.Redis:
    """A client for the configured Redis; pinged and its eviction policy checked unless check is False."""
    url = resolve_url(settings)
    client = client_for(url)
    if check:
        ping(client, url)
        check_eviction(client, url)
    return client


def connect_patiently(settings: Settings) -> redis.Redis:
    """For workers: a bad URL or refused credentials fail at once (one line); a Redis that
    does not answer yet is waited for, with backoff, each wait logged."""
    url = resolve_url(settings)
    client = client_for(url)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc, redis.AuthenticationError):
            ping(client, url)
        log.warning("Redis at %s does not answer yet (%s); waiting for it", redacted(url), exc)
        redis_backoff()(client.ping)
    except redis.RedisError:
        ping(client, url)  # raises the one-line explanation
    check_eviction(client, url)
    return client
