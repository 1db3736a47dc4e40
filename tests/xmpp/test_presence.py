"""Presence both ways and Matrix users' avatar hashes, without a server."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from slixmpp import JID, ComponentXMPP, Presence

from bridge.core import MatrixPresence
from bridge.core.federation import FederationPolicy
from bridge.xmpp.avatars import Origin
from bridge.xmpp.ids import dm_key, muc_key
from bridge.xmpp.presence import (
    HASH_TTL,
    MAX_STATUS,
    MatrixPhotos,
    MatrixStates,
    RemotePresence,
    update_element,
)

DOMAIN = "matrix.xmpp.example"
ROMEO = "romeo@xmpp.example"
DM = Origin(dm_key(ROMEO, "@alice:hub.example"), ROMEO, ROMEO, DOMAIN)  # type: ignore[arg-type]


class FakeContext:
    log = logging.getLogger("test.presence")

    def __init__(self) -> None:
        self.ghosts: list[tuple[str, str, str | None]] = []
        self.profiles: dict[str, bytes | None] = {}
        self.asked: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.bot_mxid = "@pontis:hub.example"
        self.federation = FederationPolicy(
            [{"network": "xmpp", "remote": ["xmpp.example", "muc.example"], "matrix": ["*"]}],
            "hub.example",
        )
        self.portals = {(dm_key(ROMEO, "@alice:hub.example").remote_id, "@alice:hub.example"),
                        (muc_key("team@muc.example").remote_id, "")}  # fmt: skip

    @property
    def store(self) -> Any:
        return self

    async def get_portal(self, remote_id: str, receiver: str = "") -> Any:
        return object() if (remote_id, receiver) in self.portals else None

    async def set_ghost_presence(self, user: str, presence: str, status: str | None) -> None:
        self.ghosts.append((user, presence, status))

    async def matrix_profile(self, mxid: str) -> tuple[str | None, bytes | None, str]:
        self.asked.append(mxid)
        return "Alice", self.profiles.get(mxid), "image/png"

    def background(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks)


def _presence(pfrom: str, *, ptype: str | None = None, show: str | None = None,
              status: str | None = None) -> Presence:  # fmt: skip
    xmpp = ComponentXMPP(DOMAIN, "s", "127.0.0.1", 5347)
    presence = xmpp.make_presence(pfrom=JID(pfrom), pto=JID(f"alice\\3ahub.example@{DOMAIN}"))
    if ptype:
        presence["type"] = ptype
    if show:
        presence["show"] = show
    if status:
        presence["status"] = status
    return presence


async def test_a_contact_is_as_present_as_their_most_present_client() -> None:
    ctx = FakeContext()
    presence = RemotePresence(ctx)  # type: ignore[arg-type]
    for stanza in (
        _presence(f"{ROMEO}/phone", show="away", status="walking"),
        _presence(f"{ROMEO}/laptop", show="dnd"),
        _presence(f"{ROMEO}/laptop"),  # back at the desk
        _presence(f"{ROMEO}/laptop", ptype="unavailable"),
        _presence(f"{ROMEO}/phone", ptype="unavailable"),
    ):
        presence.on_presence(stanza, DM)
        await ctx.settle()
    assert ctx.ghosts == [
        (ROMEO, "unavailable", "walking"),
        (ROMEO, "unavailable", "walking"),
        (ROMEO, "online", None),
        (ROMEO, "unavailable", "walking"),
        (ROMEO, "offline", None),
    ]


async def test_strangers_errors_and_subscriptions_set_no_presence() -> None:
    ctx = FakeContext()
    presence = RemotePresence(ctx)  # type: ignore[arg-type]
    presence.on_presence(_presence(f"{ROMEO}/phone"), None)  # no DM, no room: a stranger
    for kind in ("error", "subscribe", "probe", "unsubscribed"):
        presence.on_presence(_presence(f"{ROMEO}/phone", ptype=kind), DM)
    await ctx.settle()
    assert ctx.ghosts == []
    occupant = Origin(muc_key("team@muc.example"), "team@muc.example/Juliet",  # type: ignore[arg-type]
                      "team@muc.example/Juliet", DOMAIN)  # fmt: skip
    presence.on_presence(_presence("team@muc.example/Juliet", status="x" * 100_000), occupant)
    await ctx.settle()
    [(_, state, status)] = ctx.ghosts
    assert state == "online" and status is not None and len(status) == MAX_STATUS


def test_matrix_presence_as_xmpp_shows_it() -> None:
    states = MatrixStates()
    alice = "@alice:hub.example"
    assert not states.changed(MatrixPresence(sender=alice, presence="online"))  # as assumed
    assert states.changed(MatrixPresence(sender=alice, presence="unavailable", status="lunch"))
    assert not states.changed(MatrixPresence(sender=alice, presence="unavailable", status="lunch"))
    stanza = _presence("x@y")
    states.decorate(stanza, alice)
    assert (stanza["show"], stanza["status"]) == ("away", "lunch")
    states.changed(MatrixPresence(sender=alice, presence="offline"))
    dm, muc = _presence("x@y"), _presence("x@y")
    states.decorate(dm, alice)
    states.decorate(muc, alice, in_muc=True)
    assert dm["type"] == "unavailable"
    assert muc["type"] == "xa"  # still in the room, but far away
    unknown = _presence("x@y")
    states.decorate(unknown, "@bob:hub.example")
    assert unknown["type"] == "available"


async def test_avatar_hashes_are_cached_and_forgotten_on_change() -> None:
    ctx = FakeContext()
    now = [0.0]
    photos = MatrixPhotos(ctx, clock=lambda: now[0])  # type: ignore[arg-type]
    alice = "@alice:hub.example"
    ctx.profiles[alice] = b"\x89PNG one"
    assert await photos.hash_of(alice) == hashlib.sha1(b"\x89PNG one").hexdigest()
    ctx.profiles[alice] = b"\x89PNG two"
    assert await photos.hash_of(alice) == hashlib.sha1(b"\x89PNG one").hexdigest()  # cached
    photos.forget(alice)
    assert await photos.hash_of(alice) == hashlib.sha1(b"\x89PNG two").hexdigest()
    now[0] += HASH_TTL + 1
    ctx.profiles[alice] = None  # removed: an empty photo says "no avatar"
    assert photos.cached(alice) is None  # stale: looked up in the background
    await ctx.settle()
    assert photos.cached(alice) == ""
    assert len(ctx.asked) == 3
    empty = update_element("")
    assert empty.find("{vcard-temp:x:update}photo") is not None
    assert update_element(None).find("{vcard-temp:x:update}photo") is None


async def test_a_new_matrix_avatar_or_presence_is_announced_where_they_are() -> None:
    from bridge.core import MatrixProfile
    from bridge.portal.models import Portal
    from bridge.xmpp.ids import NETWORK
    from bridge.xmpp.muc import MucTracker
    from bridge.xmpp.presence import MatrixAnnouncer

    ctx = FakeContext()
    alice = "@alice:hub.example"
    alice_jid = f"alice\\3ahub.example@{DOMAIN}"
    sent: list[tuple[str, str]] = []

    async def send(pfrom: JID, pto: JID) -> None:
        sent.append((str(pfrom), str(pto)))

    mucs = MucTracker()
    mucs.room("team@muc.example").nicks[f"{alice_jid}/pontis"] = "Alice"
    announcer = MatrixAnnouncer(DOMAIN, send, mucs, MatrixPhotos(ctx))  # type: ignore[arg-type]
    dm = Portal(NETWORK, ROMEO, receiver=alice, is_direct=True)  # type: ignore[arg-type]
    private = Portal(NETWORK, "team@muc.example/Juliet", receiver=alice, is_direct=True)  # type: ignore[arg-type]
    muc = Portal(NETWORK, "team@muc.example")  # type: ignore[arg-type]
    for portal in (dm, private, muc):
        change = MatrixProfile(portal=portal, event_id="$e", sender=alice, sender_name="Alice",
                               timestamp=1, avatar_url="mxc://x/y", avatar_changed=True)  # fmt: skip
        await announcer.profile_changed(change)
    # A private chat in a MUC is the occupant's: presence sent to room/nick would be a join.
    assert sent == [(alice_jid, ROMEO), (f"{alice_jid}/pontis", "team@muc.example/Alice")]
    assert ctx.asked == [alice]  # one profile lookup for the three rooms that reported it
    sent.clear()
    await announcer.presence_changed(alice, [dm, private, muc])
    assert sent == [(alice_jid, ROMEO), (f"{alice_jid}/pontis", "team@muc.example/Alice")]
