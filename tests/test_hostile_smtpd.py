"""The SMTP ingress as a hostile client sees it (raw sockets against a real drain ingress)."""

from __future__ import annotations

import socket

from drain.intake.api import Client
from tests.test_ingress import StartIngress, ingress  # noqa: F401 (fixture)


def _ehlo(port: int) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO client.test\r\n")
        lines = []
        while True:
            line = reader.readline().decode().rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                break
        sock.sendall(b"QUIT\r\n")
        return lines


def test_ehlo_offers_only_real_auth_mechanisms(client: Client,
                                               ingress: StartIngress) -> None:  # noqa: F811 (fixture)
    """aiosmtpd takes every method whose name starts with auth_ (on the session and on the
    handler) for an AUTH mechanism: drain's own auth_blocked and auth_failed helpers were
    offered to every client as mechanisms 'blocked' and 'failed'."""
    server = ingress(smtpd_auth_user="producer", smtpd_auth_password="s3cret", smtpd_auth_plaintext=True)

    (auth,) = [line for line in _ehlo(server.port) if line[4:].upper().startswith("AUTH")]

    assert sorted(auth[4:].split()[1:]) == ["LOGIN", "PLAIN"], auth
