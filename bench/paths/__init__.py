"""The message paths a benchmark sends through, one module per path family.

A path is anything with a ``key``, a ``label``, an ``arrivals`` record on its receiving side and
an async ``send(token)``. :mod:`bench.paths.baseline` is Matrix to Matrix on the homeserver
alone; :mod:`bench.paths.reference` goes through the bridge to the reference network and
:mod:`bench.paths.xmpp` to a real Prosody, :mod:`bench.paths.email` through the email connector
(LMTP in, directly or through a real Postfix; an SMTP sink out); :mod:`bench.paths.encryption`
has the reference paths with encryption off and on, an encrypting Matrix client on the Matrix
side (run by :mod:`bench.encryption` on bridges of their own); :mod:`bench.paths.pending` lists
the connector paths that cannot be measured yet.
"""

from __future__ import annotations

from typing import Protocol

from bench.timing import Arrivals


class MessagePath(Protocol):
    key: str
    label: str
    arrivals: Arrivals

    async def send(self, token: str) -> None: ...
