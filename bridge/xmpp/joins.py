"""Joining MUCs: the bridge's listener, rejoins after a gap with their catch-up, and each
Matrix user's own occupant (with a free nick)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.core import ConnectorContext, PermanentError, TransientError
from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.identity import Identity
from bridge.xmpp.inbound import Inbound
from bridge.xmpp.mam import CLOCK_MARGIN_MS, Archive
from bridge.xmpp.moderation import MucModeration
from bridge.xmpp.muc import MUC_NS, JoinError, MucTracker
from bridge.xmpp.muc_presence import rejoin_delay
from bridge.xmpp.presence import update_element
from bridge.xmpp.protocol.escaping import mxid_to_jid

JOIN_TIMEOUT = 15
MAX_REJOIN_RETRIES = 12
"""Rejoins tried again after an unexpected failure (a store outage): about an hour in all."""


class MucJoins:
    def __init__(self, ctx: ConnectorContext, cfg: XmppConfig, component: Component,
                 mucs: MucTracker, inbound: Inbound, archive: Archive, moderation: MucModeration,
                 identity: Identity, hosts: Callable[[str], bool],
                 route: Callable[[str], str]) -> None:  # fmt: skip
        self._ctx = ctx
        self._cfg = cfg
        self._log = ctx.log
        self.component = component
        self.mucs = mucs
        self.inbound = inbound
        self.archive = archive
        self.moderation = moderation
        self.identity = identity
        self._hosts = hosts
        self._route = route
        # Whether the MUC keeper's own loop is rejoining a room (set once the keeper exists).
        self.rejoining: Callable[[str], bool] = lambda _: False

    async def hold_bridged_mucs(self) -> list[str]:
        """Hold the live messages of every bridged MUC until its rejoin has caught up. A server
        may still count our occupant in after a gap (ejabberd does across a component reconnect)
        and send live messages before we rejoin: taken at once, they would overtake the
        archive and move the room's mark past what we missed."""
        rooms: list[str] = [p.remote_id for p in await self._ctx.store.list_portals()
                 if not p.is_direct and not self._hosts(p.remote_id)
                 and self._route(p.remote_id) == self._cfg.jid]  # fmt: skip
        for room in rooms:
            self.mucs.room(room)  # a portal's room is ours to hear, rejoined yet or not
            self.inbound.hold(room)
        return rooms

    async def rejoin(self, room: str, attempt: int = 0) -> None:
        if self.rejoining(room):
            return  # the keeper's loop is on it, and tells Matrix when the room is back
        try:
            await self.join_listener(room)
        except Exception as err:
            # Whatever failed (the room, the stream, our store), the room is released, its mark
            # stays put, and the rejoin is tried again later: nothing is held for ever.
            self._log.error(
                "Could not rejoin %s: %s; its messages are not bridged until it works", room, err
            )
            try:
                await self.inbound.release(room, caught_up=False)
            finally:
                if not isinstance(err, JoinError | TransientError):  # refused / reconnect rejoins
                    self._ctx.background(self._rejoin_later(room, attempt + 1),
                                         name=f"rejoin {room} again")  # fmt: skip

    async def _rejoin_later(self, room: str, attempt: int) -> None:
        await asyncio.sleep(rejoin_delay(attempt))
        if self.component.up and attempt <= MAX_REJOIN_RETRIES:
            self.inbound.hold(room)
            await self.rejoin(room, attempt)

    async def join_listener(self, room: str) -> str:
        """(Re)join ``room`` after a gap and catch up on what the bridge missed: from the
        room's archive (XEP-0313) when it has one, joining without history so nothing comes
        twice; else from the MUC history since the bridge last heard from the room."""
        if self._hosts(room):
            raise JoinError(room, "not-allowed", "the bridge hosts this room itself")
        self.component.require_up()
        mark = await self.inbound.marks.get(room)
        if mark is None or not await self.archive.has_mam(room):
            # A join already under way (bridging the room, history=0) is shared: its answer
            # brings none of the history asked for here, so the mark must then stay put.
            shared = self.mucs.joining(room, f"{self._cfg.listener_jid}/pontis")
            full = await self.join(
                room, self._cfg.listener_jid, self._cfg.muc_nick,
                history=self._cfg.history_on_join if mark is None else None,
                since=mark.seen_at - CLOCK_MARGIN_MS if mark is not None else None,
            )  # fmt: skip
            # The history is all there is: the mark may move, unless it never came.
            await self.inbound.release(room, caught_up=not shared)
            return full
        self.inbound.hold(room)
        caught_up = False
        try:
            full = await self.join(room, self._cfg.listener_jid, self._cfg.muc_nick, history=0)
            try:
                await self.archive.catch_up(room, mark)
                caught_up = True
            except Exception as err:  # the archive or our store: the join itself worked
                self._log.error("Catching up on %s failed (%s): messages sent while the bridge "
                                "was away are missing in Matrix until the next rejoin or restart "
                                "catches up on them", room, err)  # fmt: skip
        finally:
            await self.inbound.release(room, caught_up=caught_up)
        return full

    async def join(self, room: str, our_jid: str, nick: str, *, history: int | None = 0,
                    since: int | None = None, photo: str | None = None) -> str:  # fmt: skip
        """Join ``room`` as ``our_jid``/``nick``; returns the full JID we joined with.
        ``history``: at most that many messages of MUC history, ``since``: those after that
        time (ms); neither: what the room gives by default."""
        self.component.require_up()
        full = f"{our_jid}/pontis"
        tracked = self.mucs.room(room)
        if full in tracked.nicks:
            return full
        presence = self.component.xmpp.make_presence(pto=f"{room}/{nick}", pfrom=full)
        x = presence.xml.makeelement(f"{{{MUC_NS}}}x", {})
        limits = {} if history is None else {"maxstanzas": str(history)}
        if since is not None:
            limits["since"] = datetime.fromtimestamp(since / 1000, tz=UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        x.append(x.makeelement(f"{{{MUC_NS}}}history", limits))
        presence.xml.append(x)
        if photo is not None:  # a Matrix user's avatar hash (XEP-0153)
            presence.xml.append(update_element(photo))
        joined, first = self.mucs.expect_join(room, full)
        if first:
            self.component.send(presence)
        try:
            await asyncio.wait_for(asyncio.shield(joined), JOIN_TIMEOUT)
        except TimeoutError:
            self.mucs.join_timed_out(room, full)
            raise
        return full

    async def puppet_in(self, room: str, mxid: str, name: str) -> str:
        """The full JID of ``mxid``'s occupant in ``room``, joining on first use."""
        if refused := self.moderation.refusal(room, mxid):
            raise refused
        jid = mxid_to_jid(mxid, self._cfg.jid)
        joined = f"{jid}/pontis" in self.mucs.room(room).nicks  # then _join returns at once
        photo = None if joined else await self.identity.photos.hash_of(mxid, wait=5)
        for nick in (name, f"{name} [matrix]", f"{name} [{mxid}]"):
            try:
                return await self.join(room, jid, nick, photo=photo)
            except JoinError as err:
                if not self.component.up:  # the stream dropped while we waited for the room
                    raise TransientError(f"joining {room}: {err}") from err
                if err.condition != "conflict":
                    raise PermanentError(
                        str(err), user_message=f"Could not join {room}: {err.condition}."
                    ) from err
                self._log.info("Nick %r taken in %s; trying another", nick, room)
        raise PermanentError(
            f"no free nick for {mxid} in {room}", user_message="Your name is taken in that room."
        )
