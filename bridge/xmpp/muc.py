"""MUC membership of the component's JIDs: the listener and one puppet per Matrix user.

XMPP reflects every groupchat message to each of our occupants, so only the listener's copy is
bridged; the nicks of our puppets identify echoes of what Matrix users said.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from slixmpp import Presence

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"


def vouched_by_room(room: str, real: str) -> bool:
    """Whether a MUC's claim that an occupant is ``real`` (a bare JID) may stand for that
    person's own ghost, the one their direct chats use. A room speaks for its own server only
    (the MUC service's domain or its parent): a room elsewhere could claim anyone, so there the
    occupant is known by occupant-id or nick, as in an anonymous room."""
    domain = real.rpartition("@")[2].split("/")[0].lower()
    service = room.rpartition("@")[2].lower()
    parent = service.split(".", 1)[1] if service.count(".") >= 2 else service
    return domain in (service, parent)


class JoinError(Exception):
    def __init__(self, room: str, condition: str, text: str = "") -> None:
        super().__init__(f"joining {room} failed: {condition}{f' ({text})' if text else ''}")
        self.condition = condition


@dataclass
class Room:
    jid: str
    nicks: dict[str, str] = field(default_factory=dict)
    """our full JID → our nick in the room (listener and puppets)."""
    occupants: dict[str, str | None] = field(default_factory=dict)
    """nick → real bare JID when the room reveals it."""
    subject: str | None = None

    def is_ours(self, nick: str) -> bool:
        return nick in self.nicks.values()


class MucTracker:
    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[None]] = {}

    def room(self, jid: str) -> Room:
        return self.rooms.setdefault(jid, Room(jid))

    def forget_all(self) -> None:
        """The stream dropped: every occupant of ours is gone from every room, and with them
        our view of who else is there (the rejoin lists everyone afresh)."""
        for room in self.rooms.values():
            room.nicks.clear()
            room.occupants.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(JoinError("?", "remote-server-timeout", "disconnected"))
        self._pending.clear()

    def expect_join(self, room: str, our_jid: str) -> tuple[asyncio.Future[None], bool]:
        """The future of ``our_jid``'s join of ``room``, and whether it is new (the caller
        sends the join). Two joins at once share one: a second future would replace the
        first, and the first caller would wait for an answer that never came."""
        future = self._pending.get((room, our_jid))
        if future is not None and not future.done():
            return future, False
        future = asyncio.get_running_loop().create_future()
        self._pending[(room, our_jid)] = future
        tracked = self.rooms.get(room)
        if tracked is not None and not tracked.nicks:
            # None of ours is in the room: whoever we saw there before may have left unseen;
            # the room lists its occupants again before our own presence.
            tracked.occupants.clear()
        return future, True

    def joining(self, room: str, our_jid: str) -> bool:
        """Whether a join of ``room`` by ``our_jid`` was sent and not answered yet."""
        future = self._pending.get((room, our_jid))
        return future is not None and not future.done()

    def join_timed_out(self, room: str, our_jid: str) -> None:
        """No answer in time: everyone waiting for this join hears so, and the next join
        starts afresh."""
        future = self._pending.pop((room, our_jid), None)
        if future is not None and not future.done():
            future.set_exception(JoinError(room, "remote-server-timeout", "no answer"))
            future.exception()  # retrieved: the waiters have their own TimeoutError

    def on_presence(self, presence: Presence) -> None:
        room_jid, nick = presence["from"].bare, presence["from"].resource
        to = str(presence["to"])
        room = self.rooms.get(room_jid)
        if room is None or not nick:
            return
        pending = self._pending.get((room_jid, to))
        if presence["type"] == "error":
            if pending is not None and not pending.done():
                error = presence["error"]
                pending.set_exception(JoinError(room_jid, error["condition"], error["text"]))
            return
        item = presence.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
        statuses = {
            s.get("code")
            for s in presence.xml.findall(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}status")
        }
        real = item.get("jid") if item is not None else None
        if presence["type"] == "unavailable":
            room.occupants.pop(nick, None)
            if "110" in statuses or room.nicks.get(to) == nick:
                room.nicks.pop(to, None)  # we were removed (kicked, 333 after a bounce, …)
                if not room.nicks:
                    room.occupants.clear()  # nobody of ours sees the room any more
            return
        bare = real.split("/")[0].lower() if real else None
        room.occupants[nick] = bare if bare and vouched_by_room(room_jid, bare) else None
        if "110" in statuses:
            room.nicks[to] = nick
            if pending is not None and not pending.done():
                pending.set_result(None)
