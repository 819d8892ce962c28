"""The producer API's public home: `from drain.api import Client, Submission` (the code is in
drain.intake.api, beside the SMTP ingress that shares its enqueue path)."""

from drain.intake.api import Accepted, Client, Submission

__all__ = ["Accepted", "Client", "Submission"]
