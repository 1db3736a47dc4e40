"""Matrix events in portal rooms → connector calls.

By the time a connector's ``handle_matrix_*`` runs, the core has found the stored messages a
reply, edit, reaction or redaction points at, stripped reply fallbacks, downloaded media and
checked that the connector supports the action at all.

A sender with only the ``relay`` level (:mod:`bridge.core.permissions`) is relayed: if relay mode
is on in the config and in the portal, the bot's identity on the network (the portal's relay
login, else the shared client) sends the message with the sender's name in front, as mautrix
relay mode does; otherwise the sender is told it was not delivered, and nothing reaches the
network. Their reactions, typing, receipts and membership are not shown on the network at all.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from html import escape
from typing import Any, cast

from bridge.core.clients import ClientRegistry, LoadedClient
from bridge.core.connector import (
    NetworkConnector,
    SupportsEdits,
    SupportsKicks,
    SupportsMembership,
    SupportsPowerLevels,
    SupportsPresence,
    SupportsProfileChanges,
    SupportsReactions,
    SupportsReceipts,
    SupportsRedactions,
    SupportsRoomMetadata,
    SupportsTyping,
)
from bridge.core.errors import NotSupported
from bridge.core.events import (
    ChatInfo,
    MatrixEdit,
    MatrixKick,
    MatrixMembership,
    MatrixMessage,
    MatrixPresence,
    MatrixProfile,
    MatrixReaction,
    MatrixReactionRemove,
    MatrixReceipt,
    MatrixRedaction,
    MatrixTyping,
    Media,
)
from bridge.core.ids import NetworkID, RemoteMessageID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.portal.models import Message, Portal, Reaction
from bridge.portal.store import Store

_MEDIA_MSGTYPES = {"m.image", "m.file", "m.audio", "m.video"}
_RELAYED = frozenset({"m.room.message", "m.sticker", "m.room.redaction"})
"""What a relay-level user's events may become on the network, through the bot."""
_REPLY_FALLBACK = re.compile(r"^(> .*\n)+\n", re.MULTILINE)
_HTML_REPLY_FALLBACK = re.compile(r"<mx-reply>.*?</mx-reply>", re.DOTALL)


class MatrixEventHandler:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        connectors: dict[NetworkID, NetworkConnector],
        clients: ClientRegistry,
        is_puppet: Callable[[str], bool],
        permissions: Permissions | None = None,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._connectors = connectors
        self._clients = clients
        self._is_puppet = is_puppet
        self._permissions = permissions or Permissions({"*": "user"})
        self._typing: dict[str, set[str]] = {}

    async def handle(self, portal: Portal, event: dict[str, Any]) -> None:
        etype = event.get("type")
        content = event.get("content") or {}
        if not isinstance(content, dict):
            return
        sender = str(event["sender"])
        if etype == "m.room.member":
            await self._membership(portal, event, content)
            return
        if etype == "m.room.power_levels" and event.get("state_key") == "":
            await self._power_levels(portal, content)
            return
        if etype == "m.room.topic" and event.get("state_key") == "":
            await self._topic(portal, sender, content)
            return
        if await self._store.get_message_by_mxid(event["event_id"]) is not None:
            return  # already bridged before a crash
        relates = content.get("m.relates_to") or {}
        name = await self._matrix.get_displayname(portal.mxid or "", sender)
        relay_for: str | None = None
        relay_mxid = ""
        if self._permissions.relay_only(sender):
            if etype not in _RELAYED:
                return  # a reaction cannot say who it is from; other events do nothing here
            self._permissions.check_relay(sender, portal.relay_login is not None)
            loaded = self._clients.client_for(
                portal.network, portal.relay_login or portal.receiver, None
            )
            relay_for, relay_mxid, sender = name, sender, self._matrix.bot_mxid
            name = await self._matrix.get_displayname(portal.mxid or "", sender)
        else:
            loaded = self._clients.client_for(portal.network, portal.receiver, sender)
        base = {
            "portal": portal,
            "event_id": event["event_id"],
            "sender": sender,
            "sender_name": name,
            "timestamp": int(event.get("origin_server_ts") or time.time() * 1000),
            "relayed": relay_for is not None,
        }
        if relay_for is not None:
            base["relayed_sender"], base["relayed_sender_name"] = relay_mxid, relay_for
            if not getattr(self._connectors.get(portal.network), "marks_relayed_senders", False):
                content = relayed_content(relay_for, content)
        if etype in ("m.room.message", "m.sticker"):
            if relates.get("rel_type") == "m.replace":
                await self._edit(loaded, base, content, relates)
            else:
                await self._message(loaded, base, content, relates, sticker=etype == "m.sticker")
        elif etype == "m.reaction":
            await self._reaction(loaded, base, relates)
        elif etype == "m.room.redaction":
            redacts = event.get("redacts") or content.get("redacts")
            if isinstance(redacts, str):
                await self._redaction(loaded, base, redacts)

    async def _membership(
        self, portal: Portal, event: dict[str, Any], content: dict[str, Any]
    ) -> None:
        sender = str(event["sender"])
        membership = content.get("membership")
        target = event.get("state_key")
        if target != sender and membership in ("leave", "ban") and isinstance(target, str):
            # A leave by someone else is a kick only of a member: after a ban it is an unban,
            # after an invite its withdrawal (nothing on the network).
            prev = ((event.get("unsigned") or {}).get("prev_content") or {}).get("membership")
            if membership == "ban" or prev in ("join", "ban"):
                await self._kick(portal, event, target, ban=membership == "ban",
                                 unban=membership == "leave" and prev == "ban")  # fmt: skip
            return
        if target != sender or membership not in ("join", "leave"):
            return  # invites, and kicks of Matrix users, are not shown on the network
        was = ((event.get("unsigned") or {}).get("prev_content") or {}).get("membership")
        if membership == "leave" and was in ("invite", "knock"):
            return  # a declined invite (a withdrawn knock): never in the room, nothing to leave
        outsider = self._permissions.level(sender) < Permissions.USER
        guards = getattr(self._connectors.get(portal.network), "guards_joins", False)
        # Only an outsider's entry is guarded: a join → join (a name or avatar they change at
        # will) would make the connector check them, at the network's cost, again and again.
        if outsider and not (membership == "join" and was != "join" and guards):
            return  # on the network they are the bot's relayed messages, not a member
        loaded = self._clients.client_or_none(portal, sender)
        if loaded is None or not (loaded.features.membership or loaded.features.profile):
            return
        name = content.get("displayname") if membership == "join" else None
        unsigned = event.get("unsigned") or {}
        invited = (unsigned.get("prev_content") or {}).get("membership") == "invite"
        inviter = unsigned.get("prev_sender") if membership == "join" and invited else None
        change = MatrixMembership(
            portal=portal, event_id=str(event["event_id"]), sender=sender,
            sender_name=name if isinstance(name, str) and name else await self._matrix.get_displayname(portal.mxid or "", sender),
            timestamp=int(event.get("origin_server_ts") or time.time() * 1000), membership=str(membership),
            inviter=inviter if isinstance(inviter, str) else "", may_use_bridge=not outsider,
        )  # fmt: skip
        if loaded.features.membership:
            await cast(SupportsMembership, loaded.client).handle_matrix_membership(change)
        if not outsider:
            await self._profile(loaded, event, content, change)

    async def _profile(self, loaded: LoadedClient, event: dict[str, Any], content: dict[str, Any],
                       change: MatrixMembership) -> None:  # fmt: skip
        """A ``join`` → ``join`` member event that changed the name or avatar: a profile change."""
        prev = (event.get("unsigned") or {}).get("prev_content") or {}
        if change.membership != "join" or prev.get("membership") != "join":
            return
        if self._is_puppet(change.sender):
            return  # a ghost's new avatar came from its network
        avatar, name = content.get("avatar_url"), content.get("displayname")
        avatar_changed = avatar != prev.get("avatar_url")
        name_changed = name != prev.get("displayname")
        if not loaded.features.profile or not (avatar_changed or name_changed):
            return
        profile = MatrixProfile(
            portal=change.portal, event_id=change.event_id, sender=change.sender,
            sender_name=change.sender_name, timestamp=change.timestamp,
            avatar_url=avatar if isinstance(avatar, str) and avatar else None,
            avatar_changed=avatar_changed, name_changed=name_changed,
        )  # fmt: skip
        await cast(SupportsProfileChanges, loaded.client).handle_matrix_profile(profile)

    async def _power_levels(self, portal: Portal, content: dict[str, Any]) -> None:
        """New power levels: the homeserver checked the sender may set them. Creators are read
        from the room (they hold every power in newer room versions)."""
        loaded = self._clients.client_or_none(portal, self._matrix.bot_mxid)
        if loaded is None or not loaded.features.power_levels or not portal.mxid:
            return
        _, creators = await self._matrix.power_levels(portal.mxid)
        await cast(SupportsPowerLevels, loaded.client).handle_matrix_power_levels(
            portal, content, creators
        )

    async def _topic(self, portal: Portal, sender: str, content: dict[str, Any]) -> None:
        topic = content.get("topic")
        if sender == self._matrix.bot_mxid or self._is_puppet(sender) or not isinstance(topic, str):
            return  # the bridge's own doing: it came from the network
        if self._permissions.relay_only(sender):
            return
        loaded = self._clients.client_or_none(portal, sender)
        if loaded is None or not loaded.features.room_metadata:
            return
        name = await self._matrix.get_displayname(portal.mxid or "", sender)
        await cast(SupportsRoomMetadata, loaded.client).handle_matrix_room_info(
            portal, ChatInfo(topic=topic), sender=sender, sender_name=name
        )

    async def _kick(self, portal: Portal, event: dict[str, Any], target: str, *, ban: bool,
                    unban: bool = False) -> None:  # fmt: skip
        """A moderator removed a ghost (a Matrix user kicked is the homeserver's business)."""
        sender = str(event["sender"])
        if sender == self._matrix.bot_mxid or self._is_puppet(sender):
            return  # the bridge's own doing
        if not self._is_puppet(target):
            return
        # A relay-level moderator is no member on the network, but a room the network hosts
        # through the bridge still obeys them: the kick goes on marked ``relayed``.
        relayed = self._permissions.relay_only(sender)
        loaded = self._clients.client_or_none(portal, self._matrix.bot_mxid if relayed else sender)
        if loaded is None or not loaded.features.kicks:
            return
        reason = (event.get("content") or {}).get("reason")
        kick = MatrixKick(
            portal=portal, event_id=str(event["event_id"]), sender=sender, relayed=relayed,
            sender_name=await self._matrix.get_displayname(portal.mxid or "", sender),
            timestamp=int(event.get("origin_server_ts") or time.time() * 1000), target=target,
            ban=ban, reason=reason if isinstance(reason, str) else "", unban=unban,
        )  # fmt: skip
        await cast(SupportsKicks, loaded.client).handle_matrix_kick(kick)

    async def _message(
        self,
        loaded: LoadedClient,
        base: dict[str, Any],
        content: dict[str, Any],
        relates: dict[str, Any],
        *,
        sticker: bool,
    ) -> None:
        portal: Portal = base["portal"]
        caps = self._connectors[portal.network].capabilities()
        msgtype = "m.image" if sticker else str(content.get("msgtype", "m.text"))
        body = str(content.get("body", ""))
        html = (
            content.get("formatted_body")
            if content.get("format") == "org.matrix.custom.html"
            else None
        )
        reply_to = thread_root = None
        reply_text: str | None = None
        reply_id = (relates.get("m.in_reply_to") or {}).get("event_id")
        if relates.get("rel_type") == "m.thread":
            thread_root = await self._in_portal(portal, relates.get("event_id"))
            if relates.get("is_falling_back"):
                reply_id = None
        if reply_id:
            reply_to = await self._in_portal(portal, reply_id)
            if reply_to is not None and caps.replies:
                reply_text = await self._matrix.get_event_text(portal.mxid or "", reply_to.mxid)
            body = _REPLY_FALLBACK.sub("", body, count=1)
            html = _HTML_REPLY_FALLBACK.sub("", html) if isinstance(html, str) else None
        media = None
        if msgtype in _MEDIA_MSGTYPES:
            if not caps.media:
                raise NotSupported(
                    "media not supported", user_message="This network cannot carry files."
                )
            info = content.get("info") or {}
            size = info.get("size") if isinstance(info, dict) else None
            media = Media(
                # Read when the connector needs it: one refusing the file by its announced
                # size (over its limit) downloads nothing.
                fetch=functools.partial(self._matrix.download_content, content),
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                mimetype=str(info.get("mimetype") or "application/octet-stream"),
                filename=str(content.get("filename") or body or "file"),
            )
            if not content.get("filename") or content.get("filename") == body:
                body = ""  # no caption
        if thread_root is not None and not caps.threads:
            thread_root = None  # still delivered, as a plain message (or reply below)
        msg = MatrixMessage(
            **base,
            body=body,
            html=html if isinstance(html, str) else None,
            msgtype=msgtype,
            media=media,
            reply_to=reply_to,
            reply_to_text=reply_text,
            thread_root=thread_root,
        )
        remote_id = await loaded.client.handle_matrix_message(msg)
        await self._remember(portal, base, remote_id, reply_to, thread_root)

    async def _remember(
        self,
        portal: Portal,
        base: dict[str, Any],
        remote_id: RemoteMessageID,
        reply_to: Message | None,
        thread_root: Message | None,
    ) -> None:
        await self._store.add_message(
            Message(
                network=portal.network,
                portal_id=portal.remote_id,
                receiver=portal.receiver,
                remote_id=remote_id,
                mxid=base["event_id"],
                room_id=portal.mxid or "",
                sender_id=base["sender"],
                timestamp=base["timestamp"],
                reply_to_id=reply_to.remote_id if reply_to else None,
                thread_root_id=thread_root.remote_id if thread_root else None,
            )
        )

    async def _in_portal(self, portal: Portal, event_id: Any) -> Message | None:
        """The bridged message of ``event_id`` if it belongs to ``portal``. Event ids are
        global: an edit, reply, reaction or redaction in one room naming an event of another
        room must not act on that other room's remote message."""
        if not isinstance(event_id, str):
            return None
        message = await self._store.get_message_by_mxid(event_id)
        if message is None or message.portal_key != portal.key:
            return None
        return message

    async def _authored(self, base: dict[str, Any], target: Message) -> bool:
        """Whether the sender of this edit or redaction wrote ``target`` in Matrix. Clients
        ignore an edit by anyone else, and a relayed message is stored as the bot's, so the
        author is read from the room."""
        sender = base.get("relayed_sender") or base["sender"]
        if not target.sender_id.startswith("@"):
            return False  # a remote person's message: no Matrix user edits it
        if target.sender_id != self._matrix.bot_mxid:
            return target.sender_id == sender
        author = await self._matrix.event_sender(base["portal"].mxid or "", target.mxid)
        return author == sender

    async def _may_redact(self, base: dict[str, Any]) -> bool:
        """Whether the redaction's sender holds the room's power to redact others' events."""
        sender = base.get("relayed_sender") or base["sender"]
        room_id = base["portal"].mxid or ""
        levels, creators = await self._matrix.power_levels(room_id)
        if sender in creators:
            return True
        users = levels.get("users") or {}
        level = users.get(sender, levels.get("users_default", 0))
        return _as_int(level) >= _as_int(levels.get("redact", 50))

    async def _edit(
        self,
        loaded: LoadedClient,
        base: dict[str, Any],
        content: dict[str, Any],
        relates: dict[str, Any],
    ) -> None:
        target = await self._in_portal(base["portal"], relates.get("event_id"))
        if target is None or not await self._authored(base, target):
            return
        if not loaded.features.edits:
            raise NotSupported(
                "edits not supported", user_message="This network cannot edit messages."
            )
        new = content.get("m.new_content") or {}
        html = new.get("formatted_body") if new.get("format") == "org.matrix.custom.html" else None
        edit = MatrixEdit(
            **base,
            target=target,
            body=str(new.get("body", "")),
            html=html if isinstance(html, str) else None,
        )
        await cast(SupportsEdits, loaded.client).handle_matrix_edit(edit)
        await self._store.bump_edit_count(target.mxid)

    async def _reaction(
        self, loaded: LoadedClient, base: dict[str, Any], relates: dict[str, Any]
    ) -> None:
        if relates.get("rel_type") != "m.annotation":
            return
        target = await self._in_portal(base["portal"], relates.get("event_id"))
        if target is None:
            return
        if not loaded.features.reactions:
            raise NotSupported(
                "reactions not supported", user_message="This network has no reactions."
            )
        emoji = str(relates.get("key", ""))
        await cast(SupportsReactions, loaded.client).handle_matrix_reaction(
            MatrixReaction(**base, target=target, emoji=emoji)
        )
        portal: Portal = base["portal"]
        await self._store.add_reaction(
            Reaction(
                network=portal.network,
                portal_id=portal.remote_id,
                receiver=portal.receiver,
                message_id=target.remote_id,
                part_id=target.part_id,
                sender_id=base["sender"],
                emoji=emoji,
                mxid=base["event_id"],
                room_id=portal.mxid or "",
                timestamp=base["timestamp"],
            )
        )

    async def _redaction(self, loaded: LoadedClient, base: dict[str, Any], redacts: str) -> None:
        message = await self._in_portal(base["portal"], redacts)
        if message is not None:
            if not await self._authored(base, message) and not await self._may_redact(base):
                return
            if not loaded.features.redactions:
                raise NotSupported(
                    "redactions not supported", user_message="This network cannot delete messages."
                )
            await cast(SupportsRedactions, loaded.client).handle_matrix_redaction(
                MatrixRedaction(**base, target=message)
            )
            await self._store.delete_message_parts(message.portal_key, message.remote_id)
            return
        reaction = await self._store.get_reaction_by_mxid(redacts)
        if reaction is None or reaction.portal_key != base["portal"].key:
            return  # none, or another room's
        if reaction.sender_id != base["sender"] and not await self._may_redact(base):
            return  # only its sender or a moderator takes a reaction back
        if loaded.features.reactions:
            await cast(SupportsReactions, loaded.client).handle_matrix_reaction_remove(
                MatrixReactionRemove(**base, target=reaction)
            )
            await self._store.delete_reaction(redacts)

    async def handle_presence(self, event: dict[str, Any]) -> None:
        """``m.presence`` of a Matrix user: to every shared client that shows presence."""
        sender, content = event.get("sender"), event.get("content") or {}
        presence = content.get("presence") if isinstance(content, dict) else None
        if not isinstance(sender, str) or presence not in ("online", "unavailable", "offline"):
            return
        if sender == self._matrix.bot_mxid or self._is_puppet(sender):
            return
        if self._permissions.relay_only(sender):
            return
        status = content.get("status_msg")
        change = MatrixPresence(
            sender=sender,
            presence=str(presence),
            status=status if isinstance(status, str) else None,
        )
        for loaded in list(self._clients.values()):
            if loaded.user_mxid is None and loaded.features.presence:
                await cast(SupportsPresence, loaded.client).handle_matrix_presence(change)

    async def handle_ephemeral(self, portal: Portal, event: dict[str, Any]) -> None:
        """Typing notifications and read receipts in a portal room."""
        room_id = portal.mxid or ""
        content = event.get("content") or {}
        if event.get("type") == "m.typing":
            now = {
                u
                for u in content.get("user_ids", [])
                if isinstance(u, str)
                and not self._is_puppet(u)
                and not self._permissions.relay_only(u)
            }
            before = self._typing.get(room_id, set())
            self._typing[room_id] = now
            for user in now ^ before:
                loaded = self._clients.client_or_none(portal, user)
                if loaded is not None and loaded.features.typing:
                    typing = MatrixTyping(portal=portal, sender=user, typing=user in now)
                    await cast(SupportsTyping, loaded.client).handle_matrix_typing(typing)
        elif event.get("type") == "m.receipt":
            for event_id, receipts in content.items():
                for user in (receipts or {}).get("m.read", {}):
                    if self._is_puppet(user) or self._permissions.relay_only(user):
                        continue
                    target = await self._in_portal(portal, event_id)
                    loaded = self._clients.client_or_none(portal, user)
                    if target is None or loaded is None or not loaded.features.receipts:
                        continue
                    receipt = MatrixReceipt(
                        portal=portal,
                        event_id=event_id,
                        sender=user,
                        target=target,
                        sender_name=await self._matrix.get_displayname(room_id, user),
                        timestamp=int(time.time() * 1000),
                    )
                    await cast(SupportsReceipts, loaded.client).handle_matrix_receipt(receipt)


def relayed_content(name: str, content: dict[str, Any]) -> dict[str, Any]:
    """``content`` of a relayed message or edit: the sender's name in front of the text, as
    mautrix relay mode writes it (``Name: text``; ``* Name text`` for an emote)."""
    out = dict(content)
    new = content.get("m.new_content")
    if isinstance(new, dict):
        out["m.new_content"] = relayed_content(name, new)
    msgtype = content.get("msgtype")
    body = str(content.get("body", ""))
    html = (
        content.get("formatted_body") if content.get("format") == "org.matrix.custom.html" else None
    )
    safe = escape(name)
    if msgtype in _MEDIA_MSGTYPES:
        if content.get("filename") and content.get("filename") != body:  # a caption
            out["body"] = f"{name}: {body}"
        else:  # no caption: the file name goes, the sender's name comes as the caption
            out["filename"] = content.get("filename") or body or "file"
            out["body"] = f"{name} sent a file"
        return out
    if msgtype == "m.emote":
        out["msgtype"] = "m.text"
        out["body"] = f"* {name} {body}"
        if isinstance(html, str):
            out["formatted_body"] = f"* <b>{safe}</b> {html}"
        return out
    out["body"] = f"{name}: {body}"
    if isinstance(html, str):
        out["formatted_body"] = f"<b>{safe}</b>: {html}"
    return out


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
