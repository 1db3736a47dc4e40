"""Catching up one bridged Teams chat: what Matrix missed while nobody told the bridge.

A ``catch_up`` input (:mod:`bridge.teams.inbound`) runs in the chat's portal queue and gives
the messages written since the chat's bound (:mod:`bridge.teams.catch_up`), the changes made
meanwhile to messages Matrix has (:mod:`bridge.teams.replay`), and the chat's members as Teams
has them now (:mod:`bridge.teams.member_sync`: removals made during the outage are applied).

The three are read apart: a refusal of the change list or of the member list does not cost the
new messages, and the chat's record (:mod:`bridge.teams.coverage`) moves forward only when
what it stands for was read, so the next catch-up tries again what this one could not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from msgraph.generated.models.chat_message import ChatMessage

from bridge.core import (
    ChatInfo,
    MessagePart,
    RemoteChatID,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
    TransientError,
)
from bridge.portal.models import Message as StoredMessage
from bridge.teams import catch_up as catch_up_walk
from bridge.teams import member_sync, replay
from bridge.teams.catch_up import Missed
from bridge.teams.coverage import Coverage
from bridge.teams.ids import message_id, portal_key
from bridge.teams.network import TeamsNetwork
from bridge.teams.relay_reactions import is_relay_post
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import timestamp_ms

NewMessage = Callable[[str, ChatMessage, TenantLink, ChatInfo | None], Awaitable[RemoteMessage]]
EventsFor = Callable[
    [str, str, str, ChatMessage | None, StoredMessage | None, TenantLink, str],
    Awaitable[list[RemoteEvent]],
]


class ChatCatchUp:
    def __init__(
        self,
        net: TeamsNetwork,
        coverage: Coverage,
        new_message: NewMessage,
        events_for: EventsFor,
    ) -> None:
        self.net = net
        self._ctx = net.ctx
        self._log = net.ctx.log
        self._coverage = coverage
        self._new_message = new_message
        self._events_for = events_for
        self._floors: dict[str, int | None] = {}
        """Per chat, the oldest message a bounded catch-up bridged (see ``below_floor``)."""

    async def run(self, chat_id: str, token: str) -> list[RemoteEvent]:
        """The messages of a bridged chat written since the last one on Matrix, oldest first
        (at most ``catch_up_messages``, after a notice saying how many older were skipped),
        merged with the changes Matrix missed; then the chat's members as Teams has them.

        It may run before notifications stored earlier in the chat's queue (a catch-up left
        by a run that died) and reads Graph as it is now, so it bridges those too, in order;
        converting them afterwards finds them on Matrix. Those older than what a bounded
        catch-up kept are not bridged afterwards either (the notice counted them)."""
        if not await self._bridged(chat_id):
            return []
        link = await self.net.tenant_for_chat(chat_id)
        limit = self.net.cfg.catch_up_messages
        bound = await self._coverage.bound(chat_id, token)
        walked_at = self._coverage.now()
        try:
            found = await catch_up_walk.missed_messages(
                link, chat_id, lambda msg_id: self._known(chat_id, msg_id), limit, bound
            )
        except TransientError:
            raise  # Graph away: the chat's queue waits for it
        except Exception as err:  # not a message lost: nothing to tell the room
            self._log.warning("Catch-up of chat %s failed: %s", chat_id, err)
            return await self._members(chat_id, link, token)
        changed: list[ChatMessage] | None
        try:
            changed = await replay.changed_since(
                link.app.chats.by_chat_id(chat_id).messages,
                bound if bound is not None else walked_at - replay.LOOKBACK_MS,
                f"list the changed messages of {chat_id}",
                link.graph_url,
            )
        except TransientError:
            raise
        except Exception as err:
            # The new messages still arrive; the record stays where it was, so the next
            # catch-up reads the changes since the same bound again.
            self._log.warning(
                "Catch-up of chat %s: changes made meanwhile not replayed (%s); the next"
                " catch-up tries again",
                chat_id,
                err,
            )
            changed = None
        if changed is not None:
            await self._coverage.walked(chat_id, token, bound, walked_at)
        events: list[RemoteEvent] = []
        if found.skipped or found.more:
            oldest = found.messages[0].id if found.messages else None
            self._log.warning(
                "Catch-up of chat %s skipped %s%d older message(s) (catch_up_messages: %d)",
                chat_id, "more than " if found.more else "", found.skipped, limit,
            )  # fmt: skip
            if oldest:
                await self._set_floor(chat_id, oldest)
            events.append(_skipped_notice(chat_id, found, limit, oldest or "none"))
        new = [
            (timestamp_ms(msg) or 0, [await self._new_message(chat_id, msg, link, None)])
            for msg in found.messages
        ]
        changes = await self._replayed(chat_id, link, token, changed or [], found.messages)
        if found.messages or changes:
            self._log.info(
                "Catching up %d message(s) and %d change(s) in chat %s",
                len(found.messages), sum(len(c) for _, c in changes), chat_id,
            )  # fmt: skip
        return events + replay.in_order(new, changes) + await self._members(chat_id, link, token)

    async def _members(self, chat_id: str, link: TenantLink, token: str) -> list[RemoteEvent]:
        """The room made to match the chat's members (removals made while the bridge was down
        are in no notification); a refusal leaves the room as it is."""
        try:
            return await member_sync.reconcile(self.net, link, chat_id, token=token)
        except TransientError:
            raise
        except Exception as err:
            self._log.warning("Catch-up of chat %s: members not read (%s)", chat_id, err)
            return []

    async def _bridged(self, chat_id: str) -> bool:
        portal = await self._ctx.store.get_portal(RemoteChatID(chat_id))
        return portal is not None and bool(portal.mxid)

    async def _replayed(
        self,
        chat_id: str,
        link: TenantLink,
        token: str,
        changed: list[ChatMessage],
        new: list[ChatMessage],
    ) -> list[tuple[int, list[RemoteEvent]]]:
        """What the ``changed`` messages (least recently changed first) mean on Matrix that
        it has not seen; ``new`` are being bridged now (only their reactions are added)."""
        new_ids = {msg.id for msg in new}
        replayed: list[tuple[int, list[RemoteEvent]]] = []
        for msg in changed:
            assert msg.id is not None
            if msg.id in new_ids:
                events = await replay.reaction_syncs(
                    self.net, portal_key(chat_id), message_id(msg.id), msg
                )
            else:
                stored = await self._ctx.store.get_message(
                    RemoteChatID(chat_id), message_id(msg.id)
                )
                if stored is None:
                    continue  # never on Matrix (history, skipped, or the relay's own post)
                events = await self._events_for(
                    chat_id, msg.id, "updated", msg, stored, link, token
                )
            if events:
                replayed.append((replay.modified_ms(msg), events))
        return replayed

    async def _known(self, chat_id: str, msg_id: str) -> bool:
        """Whether the message is on Matrix (bridged, or sent from there)."""
        if msg_id in self.net.sent:
            return True
        if await self._ctx.store.get_message(RemoteChatID(chat_id), message_id(msg_id)):
            return True
        return await is_relay_post(self._ctx.store, chat_id, msg_id)

    async def _set_floor(self, chat_id: str, oldest: str) -> None:
        if oldest.isdigit():
            self._floors[chat_id] = int(oldest)
            await self._ctx.store.kv_set(_floor_marker(chat_id), oldest)

    async def below_floor(self, chat_id: str, msg_id: str) -> bool:
        """Whether a bounded catch-up skipped this message (and said so in the room): it must
        not arrive now, below the newer ones. One store read per chat and process."""
        if not msg_id.isdigit():
            return False
        if chat_id not in self._floors:
            raw = await self._ctx.store.kv_get(_floor_marker(chat_id))
            self._floors[chat_id] = int(raw) if raw and raw.isdigit() else None
        floor = self._floors[chat_id]
        return floor is not None and int(msg_id) < floor


def _skipped_notice(chat_id: str, found: Missed, limit: int, oldest: str) -> RemoteMessage:
    if found.skipped:
        count = f"{'More than ' if found.more else ''}{found.skipped} older message(s)"
    else:
        count = "Older messages"
    text = (
        f"{count} of this Teams chat were not bridged: after an outage the bridge catches up"
        f" at most {limit} messages per chat. Read them in Teams."
    )
    return RemoteMessage(
        portal=portal_key(chat_id),
        id=RemoteMessageID(f"catch-up-skipped:{oldest}"),
        parts=[MessagePart(text=text, notice=True)],
    )


def _floor_marker(chat_id: str) -> str:
    """The oldest message a bounded catch-up of the chat bridged (pruned by age)."""
    return f"catch-up-floor:{chat_id}"
