"""Delivery status notifications (RFC 3464) for bounced mail, sent back to the sender
through drain itself, from the null sender so that a bounce is never bounced."""

from __future__ import annotations

import socket
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import formatdate, make_msgid

import redis

from drain.errors import InputError
from drain.message import Envelope
from drain.store import keys, record, tenancy

# Original headers quoted in the report, at most.
HEADERS_QUOTED = 32 * 1024


def _block(fields: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in fields:
        block[name] = value
    return block


# What each kind of report says: subject, first line, the Action field (RFC 3464 2.3.3).
KINDS = {
    "failed": ("Undelivered Mail Returned to Sender",
               "Your message could not be delivered to one or more recipients:", "failed"),
    "delayed": ("Delayed Mail (still being retried)",
                "Your message has not been delivered yet to these recipients; the mail system will go "
                "on trying, and you need not send it again:", "delayed"),
}


def build(raw: bytes, envelope: Envelope, failed: dict[str, str], msg_id: str,
          reporting_mta: str | None = None, arrival: float | None = None, kind: str = "failed") -> bytes:
    """A multipart/report for `failed` recipients (address -> the relay's reply); kind
    "delayed" makes it a delay warning (the recipients are still being tried)."""
    subject, opening, action = KINDS[kind]
    mta = reporting_mta or socket.gethostname()
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{mta}>"
    report["To"] = envelope.sender
    report["Subject"] = subject
    report["Date"] = formatdate(localtime=False)
    report["Message-ID"] = make_msgid(domain=mta)
    report["Auto-Submitted"] = "auto-replied"
    lines = [f"This is the mail system at {mta}.", "",
             opening, ""]
    lines += [f"<{rcpt}>: {reply}" for rcpt, reply in failed.items()]
    report.attach(MIMEText("\n".join(lines) + "\n", "plain", "utf-8"))

    per_message = [("Reporting-MTA", f"dns; {mta}"), ("X-Drain-Queue-ID", msg_id)]
    if arrival:
        per_message.append(("Arrival-Date", formatdate(arrival)))
    blocks: list[Message | str] = [_block(per_message)]
    for rcpt, reply in failed.items():
        words = reply.split()
        code = words[0] if words and words[0].isdigit() else "554"
        enhanced = next((w for w in words[1:2] if w.count(".") == 2 and w[:1].isdigit()), code[0] + ".0.0")
        blocks.append(_block([("Final-Recipient", f"rfc822; {rcpt}"), ("Action", action), ("Status", enhanced),
                              ("Diagnostic-Code", f"smtp; {reply}"), ("Last-Attempt-Date", formatdate())]))
    status = MIMEBase("message", "delivery-status")
    status.set_payload(blocks)
    report.attach(status)

    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0][:HEADERS_QUOTED]
    quoted = MIMEText(head.decode("ascii", "replace"), "rfc822-headers", "us-ascii")
    report.attach(quoted)
    return report.as_bytes(policy=SMTP)


def tenant_of(client: redis.Redis, msg_id: str) -> str:
    """The tenant of a message about to be reported on (read while it is still stored), so
    that its report is booked under the same tenant; "" (the report's own fallback, the
    null sender's "-") when it cannot be read."""
    try:
        value = client.hget(keys.message(msg_id), record.TENANT)
        return tenancy.valid(value.decode("utf-8")) if isinstance(value, bytes) else ""
    except (InputError, UnicodeDecodeError, redis.RedisError):  # Redis trouble costs the tenant, not the report
        return ""
