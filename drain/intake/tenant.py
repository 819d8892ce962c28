"""Whose mail a message is: the first of the API's `tenant=`, the SMTP ingress's AUTH user or
client network (DRAIN_SMTPD_TENANTS), a header named by DRAIN_TENANT_HEADER (removed when
DRAIN_TENANT_HEADER_REMOVE is set), and the sender's domain."""

from __future__ import annotations

import ipaddress
import re

from drain.errors import InputError
from drain.message import Envelope
from drain.settings import Network, Settings
from drain.store import tenancy

_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")


def _header_lines(raw: bytes) -> tuple[list[bytes], int]:
    """The header block's physical lines (with their line ends) and where the block ends."""
    found = _END_OF_HEADERS.search(raw)
    end = found.start() + 1 if found else len(raw)
    if found and raw[found.start():found.start() + 2] == b"\r\n":
        end = found.start() + 2
    return raw[:end].splitlines(keepends=True), end


def from_header(raw: bytes, name: str, remove: bool) -> tuple[bytes, str | None]:
    """The tenant a header names (its first occurrence; None when absent or not a tenant
    name), and the raw bytes, without every occurrence of the header when `remove`."""
    lines, end = _header_lines(raw)
    wanted = name.lower().encode("ascii", "replace") + b":"
    kept: list[bytes] = []
    value: str | None = None
    dropping = False
    for line in lines:
        if dropping and line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the dropped header
        dropping = False
        if line.lower().startswith(wanted):
            if value is None:
                try:  # bytes that are not UTF-8 name no tenant (replaced, any two named the same one)
                    value = tenancy.valid(line[len(wanted):].decode("utf-8").strip())
                except (UnicodeDecodeError, InputError):
                    value = None
            if remove:
                dropping = True
                continue
        kept.append(line)
    return (b"".join(kept) + raw[end:] if remove else raw), value


def from_network(peer_host: str, mapping: tuple[tuple[Network, str], ...]) -> str | None:
    try:
        address = ipaddress.ip_address(peer_host)
    except ValueError:
        return None
    return next((tenant for network, tenant in mapping if address in network), None)


def auth_user(auth_data: object) -> str | None:
    """The user an SMTP session authenticated as (aiosmtpd keeps the login as bytes)."""
    if isinstance(auth_data, bytes):
        return auth_data.decode("utf-8", "replace")
    return auth_data if isinstance(auth_data, str) and auth_data else None


def resolve(raw: bytes, env: Envelope, settings: Settings, named: str | None = None) -> tuple[bytes, str]:
    """The (possibly header-stripped) bytes and the tenant of a message; `named` is what the
    API or the ingress said (InputError when it is not a tenant name)."""
    tenant = tenancy.valid(named) if named is not None else None
    if settings.tenant_header:
        raw, in_header = from_header(raw, settings.tenant_header, settings.tenant_header_remove)
        tenant = tenant or in_header
    return raw, tenant or tenancy.from_sender(env.sender)
