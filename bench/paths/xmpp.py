"""Through the bridge to a real Prosody, in both directions, over a DM.

The bridge is Prosody's XEP-0114 component; the XMPP side is a slixmpp client
(:class:`~bench.timing.TimedXmppUser`) logged in over c2s on loopback, in the benchmark's own
event loop. So these paths include the XMPP connector and Prosody's routing on top of the hub
core that the reference-network paths measure.

The DM opens as in ``tests/e2e/test_xmpp.py``: the XMPP user writes to the Matrix user's JID
(XEP-0106), the Matrix user gets an invite to the DM portal from the XMPP user's ghost and
joins; the Matrix user's messages in that room reach the XMPP user as ``type=chat`` from the
same JID.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.harness import BenchHub
from bench.timing import Arrivals, TimedMatrixUser, TimedXmppUser
from tests.e2e.hub import XMPP_COMPONENT

NOTE = (
    "real Prosody on loopback, the bridge as its XEP-0114 component, the XMPP user a slixmpp "
    "client in the benchmark process"
)


def jid_of(user: TimedMatrixUser) -> str:
    """The Matrix user's JID on the component (``@a:b`` → ``a\\3ab@component``)."""
    local, server = user.mxid[1:].split(":", 1)
    return f"{local}\\3a{server}@{XMPP_COMPONENT}"


@dataclass
class XmppToMatrix:
    xmpp_user: TimedXmppUser
    matrix_jid: str
    arrivals: Arrivals
    key: str = "xmpp-in"
    label: str = "XMPP client → Matrix user (real Prosody)"

    async def send(self, token: str) -> None:
        self.xmpp_user.send_chat(self.matrix_jid, token)


@dataclass
class MatrixToXmpp:
    user: TimedMatrixUser
    room_id: str
    arrivals: Arrivals
    key: str = "xmpp-out"
    label: str = "Matrix user → XMPP client (real Prosody)"

    async def send(self, token: str) -> None:
        await self.user.send_text(self.room_id, token)


async def xmpp_paths(
    hub: BenchHub, user: TimedMatrixUser, localpart: str = "xbench", wait_seconds: float = 60
) -> tuple[XmppToMatrix, MatrixToXmpp]:
    """A new XMPP account ``localpart`` opens a DM with ``user``, who joins it."""
    xmpp_user = await hub.xmpp_user(localpart)
    matrix_jid = jid_of(user)
    opening = "open xmpp dm"
    xmpp_user.send_chat(matrix_jid, opening)
    room_id = await user.wait_for_invite(timeout=wait_seconds)
    await user.join(room_id)
    await user.wait_for(
        lambda e: e.get("content", {}).get("body") == opening, room_id=room_id, timeout=wait_seconds
    )
    return (
        XmppToMatrix(xmpp_user, matrix_jid, user.arrivals),
        MatrixToXmpp(user, room_id, xmpp_user.arrivals),
    )
