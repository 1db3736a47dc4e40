"""Acting on the homeserver as the bot and as ghosts (mautrix IntentAPI underneath).

Every event the bridge puts on Matrix goes through :meth:`MatrixAPI.send`, so encryption
(DESIGN §7) and error mapping live in one place.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, cast

import aiohttp
from mautrix.appservice import AppServiceAPI, IntentAPI
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore
from mautrix.errors import (
    IntentError,
    MatrixConnectionError,
    MatrixRequestError,
    MatrixStandardRequestError,
)
from mautrix.types import (
    ContentURI,
    EventID,
    EventType,
    PaginationDirection,
    PresenceState,
    RoomAlias,
    RoomCreatePreset,
    RoomID,
    StateEvent,
    UserID,
)

from bridge.core.encryption import ENCRYPTED, RoomEncryption
from bridge.core.errors import BridgeError, PermanentError, TransientError
from bridge.core.permissions import privileged_creators

INTENT_CACHE = 4096


class _StateStore(MemoryStateStore, ASStateStore):
    """Room state and registration cache in memory; rebuilt lazily after a restart."""

    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


def deterministic_txn_id(*parts: str) -> str:
    """A transaction id that is the same every time the same thing is sent, so a retried send
    after a crash is deduplicated by the homeserver instead of appearing twice."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f"pontis_{digest}"


def _wrap(err: Exception, action: str) -> Exception:
    if isinstance(err, MatrixConnectionError | aiohttp.ClientError | TimeoutError):
        return TransientError(f"{action}: homeserver unreachable: {err}")
    if isinstance(err, IntentError):  # mautrix's own checks, e.g. missing power level
        return PermanentError(f"{action}: {err}")
    if isinstance(err, MatrixRequestError):
        status = getattr(err, "http_status", 0)
        code = getattr(err, "errcode", "") if isinstance(err, MatrixStandardRequestError) else ""
        if status >= 500 or status == 429:
            return TransientError(f"{action}: homeserver answered {status} {code}")
        return PermanentError(f"{action}: homeserver refused with {status} {code}: {err.message}")
    return err


class MatrixAPI:
    def __init__(
        self,
        *,
        homeserver_url: str,
        appservice_id: str,
        as_token: str,
        bot_mxid: str,
        http: aiohttp.ClientSession,
        log: logging.Logger,
    ) -> None:
        self.appservice_id = appservice_id
        self.bot_mxid = UserID(bot_mxid)
        self.state_store = _StateStore()
        self._log = log
        self._api = AppServiceAPI(
            homeserver_url,
            UserID(bot_mxid),
            token=as_token,
            log=log.getChild("api"),  # type: ignore[arg-type]
            state_store=self.state_store,
            client_session=http,
            default_retry_count=2,
        )
        self.bot = IntentAPI(UserID(bot_mxid), self._api, state_store=self.state_store)
        self._intents: dict[str, IntentAPI] = {}
        self.encryption: RoomEncryption | None = None
        """Set when encryption is on: sends into encrypted rooms go through it."""

    async def room_encrypted(self, room_id: str) -> bool:
        return self.encryption is not None and await self.encryption.is_encrypted(room_id)

    def intent(self, mxid: str) -> IntentAPI:
        if mxid == self.bot_mxid:
            return self.bot
        intent = self._intents.pop(mxid, None) or self.bot.user(UserID(mxid))
        self._intents[mxid] = intent  # most recently used last
        if len(self._intents) > INTENT_CACHE:
            del self._intents[next(iter(self._intents))]
        return intent

    async def ping_homeserver(self) -> int:
        """Ask the homeserver to ping us back; on Synapse this also makes it retry queued
        transactions at once instead of waiting out its backoff. Returns the round trip in ms."""
        return await self.bot.appservice_ping(
            self.appservice_id, txn_id=deterministic_txn_id("ping")
        )

    async def ensure_bot(self, displayname: str, avatar_mxc: str) -> None:
        await self.bot.ensure_registered()
        await self.bot.set_displayname(displayname)
        if avatar_mxc:
            await self.bot.set_avatar_url(ContentURI(avatar_mxc))

    async def send(
        self,
        sender: str,
        room_id: str,
        content: dict[str, Any],
        *,
        event_type: str = "m.room.message",
        txn_id: str | None = None,
        timestamp: int | None = None,
    ) -> str:
        """Send one message event as ``sender`` (the bot or a ghost already in the room).

        In an encrypted room the content is encrypted with the bot's device first (a ghost has
        no device of its own) and sent as ``m.room.encrypted``, still as ``sender``."""
        intent = self.intent(sender)
        crypto = self.encryption
        if crypto is not None and event_type != ENCRYPTED and await crypto.is_encrypted(room_id):
            try:  # sharing a new session talks to the homeserver, which may be away
                content = await crypto.encrypt(room_id, event_type, content)
            except Exception as err:
                raise _wrap(err, f"encrypting for {room_id}") from err
            event_type = ENCRYPTED
        kwargs: dict[str, Any] = {}
        if timestamp is not None:
            kwargs["timestamp"] = timestamp
        try:
            event_id: EventID = await intent.send_message_event(
                RoomID(room_id),
                EventType.find(event_type),
                cast(Any, content),
                txn_id=txn_id,
                **kwargs,
            )
        except Exception as err:
            raise _wrap(err, f"sending {event_type} to {room_id}") from err
        return str(event_id)

    async def redact(self, sender: str, room_id: str, event_id: str, reason: str = "") -> None:
        if reason and await self.room_encrypted(room_id):
            reason = ""  # a redaction cannot be encrypted; its reason would be in the clear
        try:
            await self.intent(sender).redact(RoomID(room_id), EventID(event_id), reason or None)
        except Exception as err:
            raise _wrap(err, f"redacting {event_id}") from err

    async def set_state(
        self,
        sender: str,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str = "",
    ) -> None:
        try:
            await self.intent(sender).send_state_event(
                RoomID(room_id),
                EventType.find(event_type, EventType.Class.STATE),
                content,
                state_key,
            )
        except Exception as err:
            raise _wrap(err, f"setting {event_type} in {room_id}") from err

    async def set_typing(self, sender: str, room_id: str, typing: bool, timeout_ms: int) -> None:
        try:
            await self.intent(sender).set_typing(RoomID(room_id), timeout_ms if typing else 0)
        except Exception as err:
            raise _wrap(err, f"typing in {room_id}") from err

    async def set_presence(self, mxid: str, presence: str, status: str | None) -> None:
        """``presence``: ``online``, ``unavailable`` or ``offline`` (Matrix's three)."""
        try:
            await self.intent(mxid).set_presence(PresenceState(presence), status, ignore_cache=True)
        except Exception as err:
            raise _wrap(err, f"setting presence of {mxid}") from err

    async def get_presence(self, mxid: str) -> str:
        """``mxid``'s presence as the homeserver reports it (``offline`` where it has none)."""
        try:
            content = await self.intent(mxid).get_presence(UserID(mxid))  # always visible to itself
        except Exception as err:
            raise _wrap(err, f"reading presence of {mxid}") from err
        return str(content.presence.value if content.presence else "offline")

    async def mark_read(self, sender: str, room_id: str, event_id: str) -> None:
        try:
            await self.intent(sender).mark_read(RoomID(room_id), EventID(event_id))
        except Exception as err:
            raise _wrap(err, f"read receipt in {room_id}") from err

    async def ensure_joined(self, mxid: str, room_id: str) -> None:
        try:
            await self.intent(mxid).ensure_joined(RoomID(room_id), bot=self.bot)
        except Exception as err:
            raise _wrap(err, f"joining {mxid} to {room_id}") from err

    async def ensure_registered(self, mxid: str) -> None:
        try:
            await self.intent(mxid).ensure_registered()
        except Exception as err:
            raise _wrap(err, f"registering {mxid}") from err

    async def set_profile(self, mxid: str, *, name: str | None, avatar_mxc: str | None) -> None:
        """Set what is not None; ``avatar_mxc=""`` removes the avatar."""
        intent = self.intent(mxid)
        try:
            if name is not None:
                await intent.set_displayname(name, check_current=False)
            if avatar_mxc is not None:
                await intent.set_avatar_url(ContentURI(avatar_mxc), check_current=False)
        except Exception as err:
            raise _wrap(err, f"setting profile of {mxid}") from err

    async def create_room(
        self,
        *,
        name: str | None,
        topic: str | None,
        is_direct: bool,
        invite: list[str],
        initial_state: list[dict[str, Any]],
        alias_localpart: str | None = None,
        creation_content: dict[str, Any] | None = None,
    ) -> str:
        """Create a room as the bot. With an alias, anyone who knows it may join (the room is
        still not listed in the directory). ``creation_content`` goes into ``m.room.create``
        (``{"type": "m.space"}`` makes a space)."""
        try:
            room_id = await self.bot.create_room(
                alias_localpart=alias_localpart,
                preset=RoomCreatePreset.PUBLIC if alias_localpart else RoomCreatePreset.PRIVATE,
                name=name,
                topic=topic,
                is_direct=is_direct,
                invitees=[UserID(u) for u in invite],
                initial_state=initial_state,
                creation_content=creation_content,
            )
        except Exception as err:
            raise _wrap(err, "creating a portal room") from err
        return str(room_id)

    async def invite(self, room_id: str, mxid: str, *, inviter: str | None = None) -> None:
        intent = self.intent(inviter or self.bot_mxid)
        try:
            await intent.invite_user(RoomID(room_id), UserID(mxid), check_cache=True)
        except MatrixStandardRequestError as err:
            if "already in the room" in err.message or "already joined" in err.message:
                return
            raise _wrap(err, f"inviting {mxid}") from err
        except Exception as err:
            raise _wrap(err, f"inviting {mxid}") from err

    async def join(self, room_id: str, *, mxid: str | None = None) -> None:
        try:
            await self.intent(mxid or self.bot_mxid).join_room_by_id(RoomID(room_id))
        except Exception as err:
            raise _wrap(err, f"joining {room_id}") from err

    async def leave(self, room_id: str, reason: str = "", *, mxid: str | None = None) -> None:
        """Leave ``room_id``, or reject an invite to it, with ``reason`` shown to the members."""
        try:
            await self.intent(mxid or self.bot_mxid).leave_room(RoomID(room_id), reason or None)
        except Exception as err:
            raise _wrap(err, f"leaving {room_id}") from err

    async def kick(self, room_id: str, mxid: str, reason: str = "", *, ban: bool = False) -> None:
        """The bot kicks (or bans) ``mxid`` from ``room_id``; it needs the power to."""
        intent = self.intent(self.bot_mxid)
        try:
            if ban:
                await intent.ban_user(RoomID(room_id), UserID(mxid), reason)
            else:
                await intent.kick_user(RoomID(room_id), UserID(mxid), reason)
        except Exception as err:
            raise _wrap(err, f"removing {mxid} from {room_id}") from err

    async def get_displayname(self, room_id: str, mxid: str) -> str:
        member = await self.state_store.get_member(RoomID(room_id), UserID(mxid))
        if member is not None and member.displayname:
            return member.displayname
        try:
            name = await self.bot.get_displayname(UserID(mxid))
        except Exception:
            name = None
        return name or mxid

    async def get_profile(self, mxid: str) -> tuple[str | None, bytes | None, str]:
        """(display name, avatar bytes, avatar mime type); avatars over 1 MiB are left out."""
        try:
            profile = await self.bot.get_profile(UserID(mxid))
        except Exception as err:
            self._log.debug("No profile for %s: %s", mxid, err)
            return None, None, ""
        avatar, mimetype = None, ""
        if profile.avatar_url:
            try:
                data = await self.bot.download_media(profile.avatar_url)
            except Exception as err:
                self._log.debug("Avatar of %s unreadable: %s", mxid, err)
            else:
                if len(data) <= 1024 * 1024:
                    avatar, mimetype = data, _sniff_image(data)
        return profile.displayname, avatar, mimetype

    async def add_alias(self, room_id: str, alias_localpart: str) -> None:
        try:
            await self.bot.add_room_alias(RoomID(room_id), alias_localpart, override=False)
        except Exception as err:
            raise _wrap(err, f"adding alias {alias_localpart} to {room_id}") from err

    async def resolve_alias(self, alias: str) -> str | None:
        try:
            info = await self.bot.resolve_room_alias(RoomAlias(alias))
        except MatrixStandardRequestError as err:
            if err.http_status == 404:
                return None
            raise _wrap(err, f"resolving {alias}") from err
        except Exception as err:
            raise _wrap(err, f"resolving {alias}") from err
        return str(info.room_id)

    async def room_audience(self, room_id: str) -> tuple[str, set[str]]:
        """The room's join rule and everyone joined or invited, read from the homeserver."""
        try:
            events = await self.bot.get_state(RoomID(room_id))
        except Exception as err:
            raise _wrap(err, f"reading the members of {room_id}") from err
        join_rule, people = "invite", set()
        for event in events:
            content = cast(dict[str, Any], event.content.serialize())
            if event.type == EventType.ROOM_JOIN_RULES:
                join_rule = str(content.get("join_rule", "invite"))
            elif event.type == EventType.ROOM_MEMBER and content.get("membership") in (
                "join", "invite",
            ):  # fmt: skip
                people.add(str(event.state_key))
        return join_rule, people

    async def power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]:
        """The room's ``m.room.power_levels`` content and, where the room version gives its
        creators unlimited power (12 and later), its creators; read from the homeserver, not the
        cache, since it decides who may change the room."""
        try:
            events = await self.bot.get_state(RoomID(room_id))
        except Exception as err:
            raise _wrap(err, f"reading the power levels of {room_id}") from err
        levels: dict[str, Any] = {}
        create: dict[str, Any] = {}
        creator = ""
        for event in events:
            if event.type == EventType.ROOM_POWER_LEVELS:
                levels = cast(dict[str, Any], event.content.serialize())
            elif event.type == EventType.ROOM_CREATE:
                create, creator = cast(dict[str, Any], event.content.serialize()), event.sender
        if not levels:  # no power levels at all: only the creator is trusted with the room
            return {}, [creator] if creator else []
        return levels, privileged_creators(create, creator)

    async def room_name_and_topic(self, room_id: str) -> tuple[str | None, str | None]:
        values: list[str | None] = []
        for event_type, field in ((EventType.ROOM_NAME, "name"), (EventType.ROOM_TOPIC, "topic")):
            try:
                content = await self.bot.get_state_event(RoomID(room_id), event_type)
            except Exception:
                values.append(None)
                continue
            value = getattr(content, field, None)
            values.append(value if isinstance(value, str) and value else None)
        return values[0], values[1]

    async def recent_messages(self, room_id: str, limit: int) -> list[tuple[str, str, str, int]]:
        """The last ``limit`` text messages, oldest first: (event id, sender, body, timestamp)."""
        try:
            page = await self.bot.get_messages(
                RoomID(room_id), PaginationDirection.BACKWARD, limit=limit,
                filter_json={"types": ["m.room.message", ENCRYPTED]},
            )  # fmt: skip
        except Exception as err:
            raise _wrap(err, f"reading history of {room_id}") from err
        messages = []
        events: list[Any] = page.events  # type: ignore[attr-defined]  # functional NamedTuple
        for event in reversed(events):
            content = await self._readable_content(event)
            body = content.get("body") if content.get("msgtype") else None
            if isinstance(body, str) and body:
                messages.append(
                    (str(event.event_id), str(event.sender), body, int(event.timestamp))
                )
        return messages

    async def has_devices(self, mxid: str) -> bool:
        """Whether the homeserver lists a device with keys of ``mxid``. A deactivated account
        has none (Synapse deletes its devices before it makes it leave every room); neither has
        an account whose clients never set up encryption."""
        try:
            resp = await self.bot.query_keys([UserID(mxid)])
        except Exception as err:
            raise _wrap(err, f"reading {mxid}'s devices") from err
        return bool(resp.device_keys.get(UserID(mxid)))

    async def membership(self, room_id: str, mxid: str) -> str | None:
        """``mxid``'s membership in the room (``join``, ``ban``, …), read from the homeserver,
        not the cache: a ban made while the bridge was away counts too. None: never a member."""
        try:
            content = await self.bot.get_state_event(
                RoomID(room_id), EventType.ROOM_MEMBER, state_key=mxid
            )
        except MatrixRequestError as err:
            if getattr(err, "http_status", 0) == 404:
                return None
            raise _wrap(err, f"reading {mxid}'s membership in {room_id}") from err
        except Exception as err:
            raise _wrap(err, f"reading {mxid}'s membership in {room_id}") from err
        membership = getattr(content, "membership", None)
        return str(getattr(membership, "value", membership) or "") or None

    async def joined_members(self, room_id: str) -> dict[str, str]:
        """mxid → display name of the room's joined members, as the bot sees them."""
        try:
            members = await self.bot.get_joined_members(RoomID(room_id))
        except Exception as err:
            raise _wrap(err, f"listing members of {room_id}") from err
        return {str(mxid): member.displayname or str(mxid) for mxid, member in members.items()}

    async def event_sender(self, room_id: str, event_id: str) -> str | None:
        """Who sent ``event_id`` in ``room_id``, or None if it cannot be read."""
        try:
            event = await self.bot.get_event(RoomID(room_id), EventID(event_id))
        except Exception as err:
            self._log.debug("Could not read %s in %s: %s", event_id, room_id, err)
            return None
        return str(event.sender)

    async def get_event_text(self, room_id: str, event_id: str) -> str | None:
        """The plain-text body of a message event, or None if it cannot be read."""
        try:
            event = await self.bot.get_event(RoomID(room_id), EventID(event_id))
        except Exception as err:
            self._log.debug("Could not read %s in %s: %s", event_id, room_id, err)
            return None
        body = (await self._readable_content(event)).get("body")
        return body if isinstance(body, str) else None

    async def _readable_content(self, event: Any) -> dict[str, Any]:
        """The content of an event read back from the homeserver, decrypted if it must be
        (empty if it cannot be)."""
        raw = cast(dict[str, Any], event.serialize())
        if raw.get("type") == ENCRYPTED:
            if self.encryption is None:
                return {}
            try:
                raw = await self.encryption.decrypt(raw, wait=False)
            except BridgeError as err:
                self._log.debug("Cannot decrypt %s: %s", raw.get("event_id"), err)
                return {}
        content = raw.get("content")
        return content if isinstance(content, dict) else {}

    async def upload(self, sender: str, data: bytes, mimetype: str, filename: str) -> str:
        try:
            mxc = await self.intent(sender).upload_media(
                data, mime_type=mimetype, filename=filename
            )
        except Exception as err:
            raise _wrap(err, f"uploading {filename}") from err
        return str(mxc)

    async def upload_for_room(
        self, sender: str, room_id: str, data: bytes, mimetype: str, filename: str
    ) -> dict[str, Any]:
        """Upload a file for a message in ``room_id``: ``{"url": mxc}``, or in an encrypted room
        ``{"file": {...}}`` with the key, iv and hash of an encrypted attachment."""
        if self.encryption is None or not await self.encryption.is_encrypted(room_id):
            return {"url": await self.upload(sender, data, mimetype, filename)}
        ciphertext, file = self.encryption.encrypt_file(data)
        file["url"] = await self.upload(sender, ciphertext, "application/octet-stream", filename)
        return {"file": file}

    async def download_content(self, content: dict[str, Any]) -> bytes:
        """The file of a media message: ``url``, or ``file`` (an encrypted attachment, which is
        decrypted here)."""
        file = content.get("file")
        if isinstance(file, dict) and isinstance(file.get("url"), str):
            if self.encryption is None:
                raise PermanentError(
                    "encrypted attachment with encryption off",
                    user_message="Encrypted files cannot be bridged: this hub has encryption off.",
                )
            url = str(file["url"])
            if not url.startswith("mxc://"):
                raise PermanentError(
                    "attachment without mxc url", user_message="The file could not be read."
                )
            return self.encryption.decrypt_file(await self.download(url), file)
        plain_url = content.get("url")
        if not isinstance(plain_url, str) or not plain_url.startswith("mxc://"):
            raise PermanentError(
                "media without mxc url", user_message="The file could not be read."
            )
        return await self.download(plain_url)

    async def download(self, mxc: str) -> bytes:
        try:
            return await self.bot.download_media(ContentURI(mxc))
        except Exception as err:
            raise _wrap(err, f"downloading {mxc}") from err

    async def update_state_cache(self, event: dict[str, Any]) -> None:
        """Feed a state event from a transaction into the cache IntentAPI consults."""
        try:
            await self.state_store.update_state(StateEvent.deserialize(cast(Any, event)))
        except Exception:  # a malformed state event must not stop processing
            self._log.debug("Could not cache state event %s", event.get("event_id"))


def _sniff_image(data: bytes) -> str:
    for magic, mimetype in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                            (b"RIFF", "image/webp")):  # fmt: skip
        if data.startswith(magic):
            return mimetype
    return "application/octet-stream"
