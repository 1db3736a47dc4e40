"""Connector paths the issue asks for that are not measured yet.

When a connector lands, give it a module here next to :mod:`bench.paths.reference` (its real
server started like Synapse is) and drop its rows from this list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingPath:
    label: str
    reason: str = "not yet measured (connector not built)"


_XMPP = "not yet measured (XMPP connector just landed; its benchmark path is not written yet)"

PENDING: tuple[PendingPath, ...] = (
    PendingPath("XMPP client → Matrix user (real Prosody)", _XMPP),
    PendingPath("Matrix user → XMPP client (real Prosody)", _XMPP),
    PendingPath("Mail in → Matrix user (Postfix/Dovecot)"),
    PendingPath("Matrix user → mail out (Postfix/Dovecot)"),
    PendingPath("Teams emulator → Matrix user"),
    PendingPath("Matrix user → Teams emulator"),
)
