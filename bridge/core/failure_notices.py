"""Notices that tell people in Matrix what could not be bridged, and why.

A Matrix event a network refused gets a reply in its room, naming its sender; a refused leave
is told in the leaver's management room too (they no longer read the room they left). A remote
message that could not be bridged gets a notice in its portal room. Each notice has a
transaction id derived from the event, so a retry after a crash sends it once.
"""

from __future__ import annotations

import logging

from bridge.core.errors import BridgeError
from bridge.core.ids import PortalKey
from bridge.core.matrix import MatrixAPI, deterministic_txn_id
from bridge.core.portals import PortalManager
from bridge.portal.models import InboxRow
from bridge.portal.store import Store


class FailureNotices:
    def __init__(
        self, *, matrix: MatrixAPI, store: Store, portals: PortalManager, log: logging.Logger
    ) -> None:
        self._matrix = matrix
        self._store = store
        self._portals = portals
        self._log = log

    async def remote(self, key: PortalKey, err: Exception) -> None:
        """A message from the network that could not be bridged into ``key``'s room."""
        portal = await self._portals.find_portal(key)
        if portal is None or not portal.mxid:
            return
        text = f"A message from the remote side could not be bridged: {user_message(err)}"
        try:
            await self._matrix.send(
                self._matrix.bot_mxid, portal.mxid, {"msgtype": "m.notice", "body": text}
            )
        except BridgeError as notice_err:
            self._log.error("Could not send failure notice to %s: %s", portal.mxid, notice_err)

    async def of_row(self, row: InboxRow, err: Exception) -> None:
        """A Matrix event of the inbox the network refused for good."""
        if row.kind != "pdu" or row.room_id is None or row.event_id is None:
            return
        # A join, leave or kick is no message: its notice says what happened on its own.
        member = row.payload.get("type") == "m.room.member"
        sender = str(row.payload.get("sender", ""))
        await self.failed(row.room_id, row.event_id, sender, err, message=not member)
        own_leave = (
            row.payload.get("state_key") == sender
            and (row.payload.get("content") or {}).get("membership") == "leave"
        )
        if member and own_leave:  # they no longer read that room: told where they talk to us
            await self._leave(row.room_id, row.event_id, sender, err)

    async def _leave(self, room_id: str, event_id: str, sender: str, err: Exception) -> None:
        """A refused leave, told to the leaver in their management room too: the notice in the
        room they left (a reply to their leave) is one they no longer read."""
        user = await self._store.get_user(sender)
        if user is None or not user.management_room or user.management_room == room_id:
            return
        text = f"You left {room_id}: {user_message(err)}"
        content = {"msgtype": "m.notice", "body": text}
        try:
            txn = deterministic_txn_id("leave-notice", event_id)
            await self._matrix.send(
                self._matrix.bot_mxid, user.management_room, content, txn_id=txn
            )
        except BridgeError as notice_err:
            self._log.error("Could not tell %s of their leave: %s", sender, notice_err)

    async def failed(
        self, room_id: str, event_id: str, sender: str, err: Exception, *, message: bool = True
    ) -> None:
        """Tell ``sender`` in the room, as a reply to their event, that it was not delivered."""
        lost = "your message was not delivered. " if message else ""
        text = f"{sender}: {lost}{user_message(err)}"
        content = {
            "msgtype": "m.notice",
            "body": text,
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
            "m.mentions": {"user_ids": [sender]},
        }
        try:
            txn = deterministic_txn_id("notice", event_id)
            await self._matrix.send(self._matrix.bot_mxid, room_id, content, txn_id=txn)
        except BridgeError as notice_err:
            self._log.error("Could not send failure notice to %s: %s", room_id, notice_err)


def user_message(err: Exception) -> str:
    if isinstance(err, BridgeError):
        return err.user_message
    return "The bridge hit an unexpected error; the operator has the details in the log."
