"""Network → Matrix: portals and ghosts created on demand, remote events written to Matrix.

Runs inside the portal's ordered queue (see :mod:`bridge.core.router`), so a reply always finds
the message it answers and an edit never overtakes its original.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from bridge.core.connector import NetworkClient, NetworkInfo
from bridge.core.encryption import ends_at_hub_notice
from bridge.core.errors import BridgeError
from bridge.core.events import (
    ChatInfo,
    Media,
    MessagePart,
    RemoteChatInfo,
    RemoteEdit,
    RemoteEvent,
    RemoteKick,
    RemoteMessage,
    RemotePowerLevel,
    RemoteReaction,
    RemoteReactionRemove,
    RemoteReactionSync,
    RemoteReceipt,
    RemoteRedaction,
    RemoteTyping,
    UserInfo,
)
from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID, PartID, PortalKey, RemoteMessageID, RemoteUserID
from bridge.core.inline_images import inline_as_files
from bridge.core.matrix import MatrixAPI, deterministic_txn_id
from bridge.core.part_content import part_content, relation
from bridge.core.removals import MatrixRemovals
from bridge.core.spaces import Spaces
from bridge.portal.models import FIRST_PART, Ghost, Message, Portal, Reaction
from bridge.portal.store import Store

_NOTICE_SENT = "core.encryption_notice_room"
BRIDGE_ENCRYPTION_FIELD = "fi.pontis.encryption"


class PortalManager:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        domain: str,
        bridge_id: str,
        networks: dict[NetworkID, NetworkInfo],
        log: logging.Logger,
        ghost_names: GhostNames | None = None,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._domain = domain
        self.ghost_names = ghost_names or GhostNames(domain)
        """Each connector's ghost names (``ghost_username_template``); the defaults if not given."""
        self._bridge_id = bridge_id
        self._networks = networks
        self._log = log
        self.room_keys: dict[str, PortalKey] = {}
        """room id → portal key, for routing Matrix events to the portal's queue."""
        # Every message needs its portal and its sender's ghost; all writes go through here,
        # so these caches are never stale. Bounded: cleared when full, refilled on demand.
        self._portals: dict[PortalKey, Portal] = {}
        self._rooms: dict[str, PortalKey | None] = {}
        self._ghosts: dict[tuple[NetworkID, RemoteUserID], Ghost] = {}
        self.spaces = Spaces(store, matrix, domain, log)
        self.removals = MatrixRemovals(
            store=store, matrix=matrix, save=self.save_portal, log=log,
            network_name=lambda n: info.display_name if (info := networks.get(NetworkID(n))) else n,
        )  # fmt: skip

    # --- portals and ghosts ---------------------------------------------------------------------

    async def find_portal(self, key: PortalKey) -> Portal | None:
        portal = self._portals.get(key)
        if portal is None:
            portal = await self._store.get_portal(key)
            if portal is not None:
                self._remember(portal)
        return portal

    async def portal_by_room(self, room_id: str) -> Portal | None:
        if room_id in self._rooms:
            key = self._rooms[room_id]
            return None if key is None else await self.find_portal(key)
        portal = await self._store.get_portal_by_mxid(room_id)
        if portal is None:
            _bounded_set(self._rooms, room_id, None)
        else:
            self._remember(portal)
        return portal

    async def save_portal(self, portal: Portal) -> None:
        await self._store.save_portal(portal)
        self._remember(portal)

    def _remember(self, portal: Portal) -> None:
        _bounded_set(self._portals, portal.key, portal)
        if portal.mxid:
            _bounded_set(self._rooms, portal.mxid, portal.key)
            self.room_keys[portal.mxid] = portal.key

    async def ensure_portal(
        self,
        key: PortalKey,
        client: NetworkClient,
        info: ChatInfo | None,
        *,
        alias_localpart: str | None = None,
    ) -> Portal:
        portal = await self.find_portal(key)
        if portal is not None and portal.mxid:
            return portal
        if info is None:
            info = await client.get_chat_info(key)
        portal = portal or Portal(
            network=key.network, remote_id=key.remote_id, receiver=key.receiver
        )
        portal.name, portal.topic = info.name, info.topic
        portal.is_direct = bool(info.is_direct)
        encryption = self._matrix.encryption
        encrypted = encryption is not None and encryption.encrypt_new_rooms
        state_key, bridge_state = self._bridge_state(key, info, encrypted=encrypted)
        initial_state: list[dict[str, Any]] = [
            {"type": t, "state_key": state_key, "content": bridge_state}
            for t in ("m.bridge", "uk.half-shot.bridge")
        ]
        initial_state.append(
            {
                "type": "io.element.functional_members",
                "state_key": "",
                "content": {"service_members": [self._matrix.bot_mxid]},
            }
        )
        if encryption is not None and encrypted:
            initial_state.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": encryption.encryption_state(),
                }
            )
        # Ghosts exist before the room does, so they are invited in the createRoom call itself
        # and join at the first try (no refused join, no second invite).
        ghosts = [
            (await self.ensure_ghost(key.network, member, client, None)).mxid
            for member in info.members or []
        ]
        portal.mxid = await self._matrix.create_room(
            # A DM takes its name from the other person, as in any Matrix client.
            name=None if portal.is_direct else info.name,
            topic=info.topic,
            is_direct=portal.is_direct,
            invite=[*(info.matrix_users or []), *ghosts],
            initial_state=initial_state,
            alias_localpart=alias_localpart,
        )
        if encryption is not None:
            await encryption.room_created(portal.mxid, encrypted)
        await self.save_portal(portal)
        for mxid in info.matrix_users or []:
            await self._store.add_portal_user(mxid, key)
        self.room_keys[portal.mxid] = key
        self._log.info("Created portal %s for %s", portal.mxid, key)
        for ghost_mxid_ in ghosts:
            await self._matrix.ensure_joined(ghost_mxid_, portal.mxid)
        await self.spaces.place(key.network, portal.mxid, info)
        await self.announce_encryption(portal)
        return portal

    async def announce_encryption(self, portal: Portal) -> None:
        """Tell the room once where its encryption ends, if it is encrypted."""
        if not portal.mxid or portal.metadata.get(_NOTICE_SENT) == portal.mxid:
            return
        if not await self._matrix.room_encrypted(portal.mxid):
            return
        network = self._networks[portal.network].display_name
        text = ends_at_hub_notice(self._domain, network)
        try:
            await self._matrix.send(
                self._matrix.bot_mxid, portal.mxid, {"msgtype": "m.notice", "body": text},
                txn_id=deterministic_txn_id("encryption-notice", portal.mxid),
            )  # fmt: skip
        except BridgeError as err:
            self._log.warning("Could not tell %s where its encryption ends: %s", portal.mxid, err)
            return
        portal.metadata[_NOTICE_SENT] = portal.mxid
        await self.save_portal(portal)

    async def adopt_room(self, key: PortalKey, room_id: str, info: ChatInfo) -> Portal:
        """Make an existing Matrix room the portal of ``key`` (the ``bridge`` command)."""
        portal = await self.find_portal(key) or Portal(
            network=key.network, remote_id=key.remote_id, receiver=key.receiver
        )
        portal.mxid, portal.name, portal.topic = room_id, info.name, info.topic
        await self.save_portal(portal)
        self.room_keys[room_id] = key
        encrypted = await self._matrix.room_encrypted(room_id)
        state_key, content = self._bridge_state(key, info, encrypted=encrypted)
        for event_type in ("m.bridge", "uk.half-shot.bridge"):
            try:
                await self._matrix.set_state(
                    self._matrix.bot_mxid, room_id, event_type, content, state_key
                )
            except BridgeError as err:  # the room's owner did not give the bot power to do so
                self._log.info("No bridge info state in %s: %s", room_id, err)
                break
        await self.spaces.place(key.network, room_id, info)
        await self.announce_encryption(portal)
        return portal

    async def move_room(self, old: Portal, key: PortalKey) -> Portal:
        """The room of ``old`` becomes the portal of ``key``, a chat the network made to
        replace it (``SupportsInvites``); ``old`` keeps its messages but no room. Only for a
        room where nothing of ``old`` was bridged (its history would reach the new people)."""
        room_id = old.mxid
        assert room_id is not None
        old.mxid = None
        await self.save_portal(old)
        self._rooms.pop(room_id, None)
        self.room_keys.pop(room_id, None)
        return await self.adopt_room(key, room_id, ChatInfo())

    async def forget(self, portal: Portal) -> None:
        """Stop bridging ``portal``: its mapping, messages and members are deleted, the room
        stays (``unbridge``, ``delete-portal``), and its bridge info state is emptied."""
        await self._store.delete_portal(portal.key)
        self._portals.pop(portal.key, None)
        if not portal.mxid:
            return
        self._rooms.pop(portal.mxid, None)
        self.room_keys.pop(portal.mxid, None)
        state_key = f"{self._bridge_id}/{portal.network}/{portal.remote_id}"
        for event_type in ("m.bridge", "uk.half-shot.bridge"):
            try:
                await self._matrix.set_state(
                    self._matrix.bot_mxid, portal.mxid, event_type, {}, state_key
                )
            except BridgeError as err:
                self._log.info("Could not empty %s in %s: %s", event_type, portal.mxid, err)
                break

    def _bridge_state(
        self, key: PortalKey, info: ChatInfo, *, encrypted: bool
    ) -> tuple[str, dict[str, Any]]:
        network = self._networks[key.network]
        content: dict[str, Any] = {
            "bridgebot": self._matrix.bot_mxid,
            "creator": self._matrix.bot_mxid,
            "protocol": {
                "id": network.id,
                "displayname": network.display_name,
                "external_url": network.url or None,
            },
            "channel": {"id": key.remote_id, "displayname": info.name},
        }
        if encrypted:
            # Where end-to-end encryption ends: at this hub, which decrypts to deliver.
            content[BRIDGE_ENCRYPTION_FIELD] = "ends-at-bridge"
        return f"{self._bridge_id}/{key.network}/{key.remote_id}", content

    async def ensure_ghost(
        self,
        network: NetworkID,
        remote_id: RemoteUserID,
        client: NetworkClient,
        info: UserInfo | None,
    ) -> Ghost:
        ghost = self._ghosts.get((network, remote_id)) or await self._store.get_ghost(
            network, remote_id
        )
        is_new = ghost is None
        if ghost is None:
            ghost = Ghost(
                network=network,
                remote_id=remote_id,
                mxid=self.ghost_names.mxid(network, remote_id),
            )
            await self._matrix.ensure_registered(ghost.mxid)
            if info is None:
                info = await client.get_user_info(remote_id)
        elif info is None:
            _bounded_set(self._ghosts, (network, remote_id), ghost)
            return ghost
        changed = False
        if info.name is not None and info.name != ghost.name:
            await self._matrix.set_profile(ghost.mxid, name=info.name, avatar_mxc=None)
            ghost.name, changed = info.name, True
        if info.avatar is not None and (
            info.avatar.avatar_id is None or info.avatar.avatar_id != ghost.avatar_id
        ):
            mxc = await self._upload(ghost.mxid, info.avatar)
            await self._matrix.set_profile(ghost.mxid, name=None, avatar_mxc=mxc)
            ghost.avatar_mxc, ghost.avatar_id, changed = mxc, info.avatar.avatar_id, True
        elif info.avatar_removed and (ghost.avatar_mxc or ghost.avatar_id):
            await self._matrix.set_profile(ghost.mxid, name=None, avatar_mxc="")
            ghost.avatar_mxc, ghost.avatar_id, changed = None, None, True
        if changed or is_new:
            await self._store.save_ghost(ghost)
        _bounded_set(self._ghosts, (network, remote_id), ghost)
        return ghost

    async def _upload(self, sender: str, media: Media) -> str:
        data = await media.read()
        return await self._matrix.upload(sender, data, media.mimetype, media.filename)

    # --- remote events --------------------------------------------------------------------------

    async def handle(self, event: RemoteEvent, client: NetworkClient) -> None:
        key = event.portal
        if event.create_portal:
            portal = await self.ensure_portal(key, client, event.chat_info)
        else:
            found = await self.find_portal(key)
            if found is None or not found.mxid:
                self._log.debug("Dropping %s for %s: no portal yet", type(event).__name__, key)
                return
            portal = found
        assert portal.mxid is not None
        await self.announce_encryption(portal)  # retried here if it failed at creation
        sender_mxid: str = self._matrix.bot_mxid
        if event.sender is not None:
            ghost = await self.ensure_ghost(key.network, event.sender, client, event.sender_info)
            await self._matrix.ensure_joined(ghost.mxid, portal.mxid)
            sender_mxid = ghost.mxid
        match event:
            case RemoteMessage():
                await self._message(portal, sender_mxid, event)
            case RemoteEdit():
                await self._edit(portal, sender_mxid, event)
            case RemoteRedaction():
                for part in await self._store.get_message_parts(key, event.target):
                    await self._matrix.redact(sender_mxid, portal.mxid, part.mxid)
                await self._store.delete_message_parts(key, event.target)
            case RemoteReaction():
                await self._reaction(portal, sender_mxid, event)
            case RemoteReactionRemove():
                reaction = await self._store.get_reaction(
                    key, event.target, event.target_part, event.sender or "", event.emoji
                )
                if reaction is not None:
                    await self._matrix.redact(sender_mxid, portal.mxid, reaction.mxid)
                    await self._store.delete_reaction(reaction.mxid)
            case RemoteReactionSync():
                await self._reaction_sync(portal, sender_mxid, event)
            case RemoteTyping():
                await self._matrix.set_typing(
                    sender_mxid, portal.mxid, event.typing, event.timeout_ms
                )
            case RemoteReceipt():
                parts = await self._store.get_message_parts(key, event.up_to)
                if parts:
                    await self._matrix.mark_read(sender_mxid, portal.mxid, parts[-1].mxid)
            case RemoteChatInfo():
                await self._chat_info(portal, event.info, client)
            case RemoteKick(matrix_user=str(mxid)) if mxid:  # told, not raised, if refused
                await self.removals.remove(portal, mxid, event.reason, event.target)
            case RemoteKick():  # a ban holds for someone not in the room yet, a kick does not
                ghost = await self.ensure_ghost(key.network, event.target, client, None)
                if event.leave and ghost.mxid in await self._matrix.joined_members(portal.mxid):
                    await self._matrix.leave(portal.mxid, event.reason, mxid=ghost.mxid)
                elif event.ban or ghost.mxid in await self._matrix.joined_members(portal.mxid):
                    await self._matrix.kick(portal.mxid, ghost.mxid, event.reason, ban=event.ban)
            case RemotePowerLevel():
                ghost = await self.ensure_ghost(key.network, event.target, client, None)
                await self._power_level(portal.mxid, ghost.mxid, event.level)
            case _:
                raise TypeError(f"unknown remote event {type(event).__name__}")

    async def _power_level(self, room_id: str, mxid: str, level: int) -> None:
        """Give ``mxid`` power ``level`` in ``room_id`` as the bot, unless it has it already."""
        levels, _ = await self._matrix.power_levels(room_id)
        users = dict(levels.get("users") or {})
        default = levels.get("users_default", 0)
        if users.get(mxid, default) == level:
            return
        if level == default:
            users.pop(mxid, None)
        else:
            users[mxid] = level
        await self._matrix.set_state(
            self._matrix.bot_mxid, room_id, "m.room.power_levels", {**levels, "users": users}
        )

    async def _message(self, portal: Portal, sender: str, event: RemoteMessage) -> None:
        key = portal.key
        assert portal.mxid is not None
        parts = await self._inline_as_files(portal.mxid, event.parts)
        stored = await self._stored_parts(key, event.id, parts)
        if stored >= {part.part_id for part in parts}:
            self._log.debug("Message %s in %s already bridged", event.id, key)
            return
        reply = root = None
        if event.reply_to:
            reply = await self._store.get_message(key, event.reply_to)
        if event.thread_root == event.reply_to:  # a reply to the thread's first message
            root = reply
        elif event.thread_root:
            root = await self._store.get_message(key, event.thread_root)
        for index, part in enumerate(parts):
            if part.part_id in stored:
                continue  # sent before a later part failed; the retry sends only the rest
            content = await part_content(self._matrix, sender, portal.mxid, part)
            # The first part answers the reply; every part of a thread's message stays in it.
            relates = relation(reply, root) if index == 0 else relation(None, root)
            if relates:
                content["m.relates_to"] = relates
            txn = deterministic_txn_id(str(key), event.id, part.part_id)
            event_id = await self._matrix.send(
                sender, portal.mxid, content, txn_id=txn, timestamp=event.timestamp
            )
            await self._store.add_message(
                Message(
                    network=key.network,
                    portal_id=key.remote_id,
                    receiver=key.receiver,
                    remote_id=event.id,
                    part_id=part.part_id,
                    mxid=event_id,
                    room_id=portal.mxid,
                    sender_id=event.sender or "",
                    timestamp=event.timestamp or _now(),
                    thread_root_id=event.thread_root,
                    reply_to_id=event.reply_to,
                )
            )

    async def _stored_parts(
        self, key: PortalKey, message_id: RemoteMessageID, parts: list[MessagePart]
    ) -> set[PartID]:
        """The ``parts`` of message ``message_id`` on Matrix already (one query either way)."""
        if len(parts) == 1 and parts[0].part_id == FIRST_PART:
            found = await self._store.get_message(key, message_id)
            return {FIRST_PART} if found is not None else set()
        return {m.part_id for m in await self._store.get_message_parts(key, message_id)}

    async def _inline_as_files(self, room_id: str, parts: list[MessagePart]) -> list[MessagePart]:
        """``parts``, where the room is encrypted with each inline image as a file event of its
        own after its part (see :attr:`MessagePart.inline`); unchanged elsewhere."""
        if not any(part.inline for part in parts) or not await self._matrix.room_encrypted(room_id):
            return parts
        return inline_as_files(parts)

    async def _edit(self, portal: Portal, sender: str, event: RemoteEdit) -> None:
        assert portal.mxid is not None
        stored = {
            m.part_id: m for m in await self._store.get_message_parts(portal.key, event.target)
        }
        for part in event.parts:
            target = stored.get(part.part_id)
            if target is None:
                continue
            new_content = await part_content(self._matrix, sender, portal.mxid, part)
            content = dict(new_content)
            content["body"] = f"* {part.text}"
            if "formatted_body" in content:
                content["formatted_body"] = f"* {content['formatted_body']}"
            content["m.new_content"] = new_content
            content["m.relates_to"] = {"rel_type": "m.replace", "event_id": target.mxid}
            digest = hashlib.sha256(f"{part.text}\x1f{part.html}".encode()).hexdigest()[:16]
            txn = deterministic_txn_id(str(portal.key), "edit", event.target, part.part_id, digest)
            await self._matrix.send(
                sender, portal.mxid, content, txn_id=txn, timestamp=event.timestamp
            )
            await self._store.bump_edit_count(target.mxid)

    async def _reaction(self, portal: Portal, sender: str, event: RemoteReaction) -> None:
        assert portal.mxid is not None
        key = portal.key
        target = await self._store.get_message(key, event.target, event.target_part)
        if target is None:
            self._log.debug("Reaction to unknown message %s in %s dropped", event.target, key)
            return
        sender_id = event.sender or ""
        if await self._store.get_reaction(
            key, event.target, event.target_part, sender_id, event.emoji
        ):
            return
        content = {
            "m.relates_to": {
                "rel_type": "m.annotation",
                "event_id": target.mxid,
                "key": event.emoji,
            }
        }
        # Without a remote timestamp, a reaction removed and added again must not reuse the
        # transaction id, or the homeserver would hand back the redacted first one.
        stamp = str(event.timestamp or time.time_ns())
        txn = deterministic_txn_id(
            str(key), "reaction", event.target, sender_id, event.emoji, stamp
        )
        event_id = await self._matrix.send(
            sender,
            portal.mxid,
            content,
            event_type="m.reaction",
            txn_id=txn,
            timestamp=event.timestamp,
        )
        await self._store.add_reaction(
            Reaction(
                network=key.network,
                portal_id=key.remote_id,
                receiver=key.receiver,
                message_id=event.target,
                part_id=event.target_part,
                sender_id=sender_id,
                emoji=event.emoji,
                mxid=event_id,
                room_id=portal.mxid,
                timestamp=event.timestamp or _now(),
            )
        )

    async def _reaction_sync(self, portal: Portal, sender: str, event: RemoteReactionSync) -> None:
        assert portal.mxid is not None
        sender_id = event.sender or ""
        current = await self._store.list_reactions(portal.key, event.target, sender_id)
        for reaction in current:
            if reaction.part_id == event.target_part and reaction.emoji not in event.emojis:
                await self._matrix.redact(sender, portal.mxid, reaction.mxid)
                await self._store.delete_reaction(reaction.mxid)
        have = {r.emoji for r in current if r.part_id == event.target_part}
        for emoji in sorted(event.emojis - have):
            add = RemoteReaction(
                portal=event.portal,
                sender=event.sender,
                timestamp=event.timestamp,
                target=event.target,
                target_part=event.target_part,
                emoji=emoji,
            )
            await self._reaction(portal, sender, add)

    async def _chat_info(self, portal: Portal, info: ChatInfo, client: NetworkClient) -> None:
        assert portal.mxid is not None
        bot = self._matrix.bot_mxid
        if info.name is not None and info.name != portal.name:
            await self._matrix.set_state(bot, portal.mxid, "m.room.name", {"name": info.name})
            portal.name = info.name
        if info.topic is not None and info.topic != portal.topic:
            await self._matrix.set_state(bot, portal.mxid, "m.room.topic", {"topic": info.topic})
            portal.topic = info.topic
        if info.avatar is not None:
            mxc = await self._upload(bot, info.avatar)
            await self._matrix.set_state(bot, portal.mxid, "m.room.avatar", {"url": mxc})
            portal.avatar_mxc = mxc
        await self.save_portal(portal)
        for mxid in info.matrix_users or []:
            await self._matrix.invite(portal.mxid, mxid)
            await self._store.add_portal_user(mxid, portal.key)
        for member in info.members or []:
            ghost = await self.ensure_ghost(portal.network, member, client, None)
            await self._matrix.ensure_joined(ghost.mxid, portal.mxid)


def _now() -> int:
    return int(time.time() * 1000)


CACHE_LIMIT = 50_000


def _bounded_set(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHE_LIMIT and key not in cache:
        cache.clear()
    cache[key] = value
