"""Keeping the bridge's listener in every bridged MUC (issue #14).

A MUC can drop our listener at any time: a kick (307), its server losing contact with ours
(333), a shutdown (332), a ban (301), the room being destroyed, or an unavailable presence that
never arrives. The first three, an error presence and a failed XEP-0410 self-ping start a
rejoin with capped backoff; a ban or a destroyed room only tell the room. Matrix gets one notice
when a room is lost and one when it is back, per outage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slixmpp import JID, Presence
from slixmpp.exceptions import IqError, IqTimeout

from bridge.core import (
    ConnectorContext,
    MessagePart,
    RemoteChatID,
    RemoteMessage,
    RemoteMessageID,
    TransientError,
)
from bridge.xmpp.component import Component
from bridge.xmpp.ids import muc_key
from bridge.xmpp.muc import MUC_USER_NS, MucTracker

REJOIN_FIRST_WAIT = 2.0
REJOIN_MAX_WAIT = 300.0
PING_TIMEOUT = 30.0
PING_NS = "urn:xmpp:ping"

STATUS_REASONS = {
    "307": "kicked by the room",
    "333": "the room's server lost contact with the bridge",
    "332": "the room's server shut down",
}
NO_REJOIN_STATUSES = {
    "301": "banned from the room",
    "321": "no longer a member of the room",
    "322": "the room became members-only",
}
PING_STILL_JOINED = {"service-unavailable", "feature-not-implemented", "item-not-found"}
"""XEP-0410 §3.2: these errors come from the occupant's own client, so the room knows us
(``item-not-found``: a nick change under way)."""
PING_UNDECIDED = {"remote-server-not-found", "remote-server-timeout"}
"""The MUC's server is unreachable: nothing to decide until it answers again."""


@dataclass(frozen=True, slots=True)
class Loss:
    """Why the listener is out of a room, and whether trying to rejoin makes sense."""

    reason: str
    rejoin: bool


def rejoin_delay(attempt: int) -> float:
    """Seconds to wait before rejoin attempt ``attempt`` (0, 1, …): 2, 4, 8 … capped at 5 min."""
    return min(REJOIN_FIRST_WAIT * 2.0 ** min(max(attempt, 0), 16), REJOIN_MAX_WAIT)


def loss_of(
    kind: str, statuses: set[str], destroyed: bool, error_condition: str = ""
) -> Loss | None:
    """What a presence from the room about our own listener means; ``None``: still joined."""
    if kind == "error":
        return Loss(f"the room reported an error: {error_condition or 'unknown'}", rejoin=True)
    if kind != "unavailable":
        return None
    if destroyed:
        return Loss("the room was destroyed", rejoin=False)
    for code, reason in NO_REJOIN_STATUSES.items():
        if code in statuses:
            return Loss(reason, rejoin=False)
    for code, reason in STATUS_REASONS.items():
        if code in statuses:
            return Loss(reason, rejoin=True)
    return Loss("the room removed the bridge", rejoin=True)


def ping_verdict(error_condition: str | None) -> bool | None:
    """A self-ping's answer: ``True`` joined, ``False`` not joined, ``None`` undecided.
    ``error_condition`` is ``None`` for a result, ``"timeout"`` when nothing came back."""
    if error_condition is None or error_condition in PING_STILL_JOINED:
        return True
    if error_condition in PING_UNDECIDED:
        return None
    return False  # not-acceptable (the usual answer), a timeout or any other error


class MucKeeper:
    """Watches the listener's presence in bridged MUCs, self-pings them and rejoins."""

    def __init__(
        self,
        ctx: ConnectorContext,
        component: Component,
        mucs: MucTracker,
        listener: str,
        join: Callable[[str], Awaitable[object]],
        ping_minutes: float,
    ) -> None:
        self._ctx = ctx
        self._log = ctx.log
        self._component = component
        self._mucs = mucs
        self._listener = listener
        """The listener's full JID."""
        self._join = join
        self._ping_seconds = ping_minutes * 60
        self._rejoining: dict[str, asyncio.Task[None]] = {}

    def rejoining(self, room: str) -> bool:
        return room in self._rejoining

    def start(self) -> None:
        if self._ping_seconds > 0:
            self._ctx.background(self._self_pings(), name="muc self-ping")

    # --- presence -----------------------------------------------------------------------------

    def on_presence(self, presence: Presence) -> None:
        """Call before :meth:`MucTracker.on_presence`, which forgets our nick on unavailable."""
        if str(presence["to"]) != self._listener:
            return
        room_jid, nick = presence["from"].bare, presence["from"].resource
        room = self._mucs.rooms.get(room_jid)
        # Only the room itself speaks for our occupant; it stamps ``from`` with our nick.
        if room is None or not nick or room.nicks.get(self._listener) != nick:
            return
        x = presence.xml.find(f"{{{MUC_USER_NS}}}x")
        statuses = (
            {s.get("code", "") for s in x.findall(f"{{{MUC_USER_NS}}}status")}
            if x is not None
            else set()
        )
        destroy = x.find(f"{{{MUC_USER_NS}}}destroy") if x is not None else None
        condition = presence["error"]["condition"] if presence["type"] == "error" else ""
        loss = loss_of(presence["type"], statuses, destroy is not None, condition)
        if loss is not None:
            self.lost(room_jid, loss)

    def lost(self, room: str, loss: Loss) -> None:
        """Our listener is out of ``room``: tell Matrix and, if it makes sense, rejoin."""
        tracked = self._mucs.rooms.get(room)
        if tracked is not None:
            tracked.nicks.pop(self._listener, None)
        if room in self._rejoining:
            return
        if not loss.rejoin:
            self._log.warning("The bridge is out of %s (%s); not rejoining", room, loss.reason)
            self._ctx.background(
                self._notice(room, f"The bridge was removed from {room} ({loss.reason}). Its "
                             "messages are no longer bridged; once the room lets the bridge in "
                             "again, restarting the bridge rejoins it."),
                name=f"notice {room}",
            )  # fmt: skip
            return
        self._log.warning("The bridge is out of %s (%s); rejoining", room, loss.reason)
        task = self._ctx.background(self._rejoin(room, loss), name=f"rejoin {room}")
        self._rejoining[room] = task
        task.add_done_callback(lambda _: self._rejoining.pop(room, None))

    async def _rejoin(self, room: str, loss: Loss) -> None:
        await self._notice(room, f"The bridge was removed from {room} ({loss.reason}): rejoining.")
        attempt = 0
        while True:
            delay = rejoin_delay(attempt)
            await asyncio.sleep(delay)
            try:
                if await self._ctx.store.get_portal(RemoteChatID(room)) is None:
                    self._log.info("%s is no longer bridged; not rejoining it", room)
                    return
                await self._join(room)
            except TransientError:  # the component is down: asking is cheap, so ask often
                attempt = 0
                continue
            except Exception as err:  # refused, no answer, or our store down: try again later
                attempt += 1
                self._log.warning("Rejoining %s failed (%s); next try in %.0f s",
                                  room, err or "no answer", rejoin_delay(attempt))  # fmt: skip
                continue
            break
        self._log.info("Rejoined %s", room)
        await self._notice(room, f"The bridge is back in {room}: it is bridged again.")

    async def _notice(self, room: str, text: str) -> None:
        notice = RemoteMessage(
            portal=muc_key(room),
            id=RemoteMessageID(f"pontis-notice:{room}:{time.time_ns()}"),
            parts=[MessagePart(text=text, notice=True)],
            create_portal=False,
        )
        await self._ctx.queue_remote_event(notice)

    # --- XEP-0410 self-ping -------------------------------------------------------------------

    async def _self_pings(self) -> None:
        while True:
            await asyncio.sleep(self._ping_seconds)
            if not self._component.up:
                continue
            joined = [
                (jid, room.nicks[self._listener])
                for jid, room in list(self._mucs.rooms.items())
                if self._listener in room.nicks and jid not in self._rejoining
            ]
            await asyncio.gather(*(self.self_ping(jid, nick) for jid, nick in joined))

    async def self_ping(self, room: str, nick: str) -> None:
        """Ping our own occupant in ``room``; start a rejoin if the room no longer knows it."""
        iq = self._component.xmpp.make_iq_get(ito=JID(f"{room}/{nick}"), ifrom=JID(self._listener))
        iq.xml.append(iq.xml.makeelement(f"{{{PING_NS}}}ping", {}))
        condition: str | None = None
        try:
            await iq.send(timeout=PING_TIMEOUT)
        except IqError as err:
            condition = err.iq["error"]["condition"] or "undefined-condition"
        except IqTimeout:
            condition = "timeout"
        except Exception as err:  # the stream dropped under us: the reconnect rejoins anyway
            self._log.debug("Self-ping of %s not sent: %s", room, err)
            return
        verdict = ping_verdict(condition)
        if verdict is None:
            self._log.info("Self-ping of %s undecided (%s); asking again later", room, condition)
        elif (
            not verdict
            and (tracked := self._mucs.rooms.get(room)) is not None
            and (tracked.nicks.get(self._listener) == nick)
        ):
            self.lost(room, Loss(f"the room no longer knew the bridge: {condition}", rejoin=True))
