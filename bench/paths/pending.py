"""Connector paths the issue asks for that are not measured yet.

When a connector lands, give it a module here next to :mod:`bench.paths.reference` (its real
server started like Synapse is, as :mod:`bench.paths.xmpp` does with Prosody) and drop its rows
from this list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingPath:
    label: str
    reason: str = "not yet measured (connector not built)"


PENDING: tuple[PendingPath, ...] = ()
