"""Open the Redis connection drain works on: DRAIN_REDIS_URL, or the embedded server."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from drain import embedded
from drain.errors import ConfigError, RedisUnavailable
from drain.settings import Settings

_SCHEMES = {"redis", "rediss", "unix"}


def redacted(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def resolve_url(settings: Settings) -> str:
    """The URL to connect to, starting the embedded server when no URL is configured."""
    if settings.redis_url is None:
        return embedded.ensure_running(settings.home)
    scheme = urlsplit(settings.redis_url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported Redis URL scheme {scheme!r} in {redacted(settings.redis_url)}"
            " (use redis://, rediss:// or unix://)"
        )
    return settings.redis_url


def connect(settings: Settings, check: bool = True) -> redis.Redis:
    """A client with raw (bytes) replies, as RQ needs; pinged first unless check is False."""
    url = resolve_url(settings)
    try:
        client: redis.Redis = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redacted(url)}: {exc}") from None
    if check:
        try:
            client.ping()
        except redis.AuthenticationError:
            raise RedisUnavailable(f"Redis at {redacted(url)} refused the credentials") from None
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot reach Redis at {redacted(url)}: {exc}") from None
    return client
