"""Exceptions raised by drain. Callers catch DrainError, or branch on the subclass."""


class DrainError(Exception):
    """Base of every error drain raises on purpose."""


class ConfigError(DrainError):
    """A setting, URL or flag has a value drain cannot use."""


class RedisUnavailable(DrainError):
    """Redis cannot be reached, or the embedded server cannot be started."""


class InputError(DrainError):
    """Something handed to drain (a file, a message, an address) cannot be taken."""


class RelayError(DrainError):
    """The SMTP relay is misconfigured (not a delivery failure: those are outcomes)."""


class NotDurable(RedisUnavailable):
    """Redis stored a write but did not confirm it as durable as configured (DRAIN_DURABILITY)."""


class QueueFull(DrainError):
    """Redis memory is above DRAIN_MAX_MEMORY_FRACTION of its maxmemory (or Redis refused a write
    for lack of memory): new mail is refused until delivery frees memory. Nothing in the refused
    call was queued except the ids in `accepted` (enqueue_many stores in chunks)."""

    def __init__(self, message: str, accepted: list[str] | None = None) -> None:
        super().__init__(message)
        self.accepted: list[str] = list(accepted or [])


class EvictingRedis(ConfigError):
    """Redis is set to evict keys when full (maxmemory-policy other than noeviction): queued mail could vanish."""
