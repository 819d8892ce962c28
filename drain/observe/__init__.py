"""The read side: status, backlog, deferred mail, metrics, the status page and its server."""
