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
