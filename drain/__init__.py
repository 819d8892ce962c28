"""drain: validate, quarantine and deliver a mail backlog through Redis and RQ workers."""

__version__ = "0.1.0"
