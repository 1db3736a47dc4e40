"""The bridge bot's crypto device: one ``OlmMachine`` in appservice mode, no /sync.

The device is created with MSC4190 (``PUT /devices/{id}`` as the appservice); to-device events,
device lists and one-time-key counts arrive in appservice transactions (MSC2409/MSC4203/MSC3202),
which the core has stored in its inbox before answering 200 and hands here one row at a time. A
crash between receiving a room key and using it therefore loses nothing: the row is handled
again after the restart.

Ghosts have no devices. What a ghost sends is encrypted with the bot's Megolm session and sent
*as the ghost*; the keys go only to the Matrix members' devices that the verification levels
allow, never to ghosts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
from mautrix.client import Client
from mautrix.crypto import OlmMachine, PgCryptoStore, RejectKeyShare
from mautrix.crypto.attachments import decrypt_attachment, encrypt_attachment
from mautrix.errors import (
    DecryptionError,
    DeviceValidationError,
    DuplicateMessageIndex,
    EncryptionError,
    MatrixError,
    MatrixRequestError,
    MNotFound,
    SessionNotFound,
    VerificationError,
)
from mautrix.types import (
    ASToDeviceEvent,
    DeviceID,
    DeviceIdentity,
    DeviceLists,
    DeviceOTKCount,
    EncryptedEvent,
    EncryptedFile,
    EncryptionKeyAlgorithm,
    EventType,
    IdentityKey,
    KeyID,
    RequestedKeyInfo,
    RoomID,
    RoomKeyWithheldCode,
    StateEvent,
    TrustState,
    UserID,
)
from mautrix.util.async_db import Database

from bridge.core.encryption_settings import EncryptionSettings
from bridge.core.errors import PermanentError, TransientError
from bridge.core.pickle_key import PickleKey, SecretBox
from bridge.crypto.probe import PROBE_TYPE, DeliveryProbe
from bridge.crypto.state import EncryptedRooms, RoomStateStore
from bridge.crypto.store import CachedCryptoStore

MEGOLM = "m.megolm.v1.aes-sha2"
PROBE_SECONDS = 30.0
"""How long the bridge waits for its delivery probe before it reports missing settings."""
KvGet = Callable[[str], Awaitable[str | None]]
KvSet = Callable[[str, str], Awaitable[None]]
IsGhost = Callable[[str], bool]
IsPortal = Callable[[str], Awaitable[bool]]


_ROUTINE = ("isn't cross-signed", "Didn't find cross-signing key", "Got OTK count for unknown")


def _quiet_routine_warnings(record: logging.LogRecord) -> bool:
    """mautrix warns for every message from a device without cross-signing (most clients'
    today) and about key counts of other devices: normal here, so logged at DEBUG."""
    if record.levelno == logging.WARNING and any(t in record.getMessage() for t in _ROUTINE):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return True


class KeysMissing(PermanentError):
    """The room key of a message never reached the bridge."""


class Untrusted(PermanentError):
    """A message from a device below ``verification_levels.send``."""


class CryptoEngine:
    def __init__(
        self,
        *,
        settings: EncryptionSettings,
        pickle_key: PickleKey,
        db: Database,
        http: aiohttp.ClientSession,
        homeserver_url: str,
        as_token: str,
        bot_mxid: str,
        is_ghost: IsGhost,
        is_portal: IsPortal,
        kv_get: KvGet,
        kv_set: KvSet,
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self._secrets: SecretBox = pickle_key.secret_box()
        self._db = db
        self._is_ghost = is_ghost
        self._is_portal = is_portal
        self._kv_get, self._kv_set = kv_get, kv_set
        self._log = log
        self.state_store = RoomStateStore(db)
        self.rooms = EncryptedRooms(self.state_store)
        delete = settings.delete_keys
        self.crypto_store = CachedCryptoStore(
            bot_mxid, pickle_key.olm_passphrase(), db,
            persist_ratchet=delete.get("ratchet_on_decrypt", False)
            or delete.get("delete_fully_used_on_decrypt", False),
        )  # fmt: skip
        self.client = Client(
            mxid=UserID(bot_mxid),
            base_url=homeserver_url,
            token=as_token,
            client_session=http,
            state_store=self.state_store,
            log=log.getChild("client"),
        )
        log.getChild("olm").addFilter(_quiet_routine_warnings)
        self.machine = OlmMachine(
            self.client,
            self.crypto_store,
            self.state_store,
            log=log.getChild("olm"),  # type: ignore[arg-type]
        )
        self._min_send_trust = TrustState.parse(settings.verification_levels.send)
        self.machine.send_keys_min_trust = TrustState.parse(settings.verification_levels.receive)
        self.machine.share_keys_min_trust = TrustState.parse(settings.verification_levels.share)
        self.machine.allow_key_share = self._allow_key_share
        self.machine.dont_store_outbound_keys = delete.get("dont_store_outbound", False)
        self.machine.delete_outbound_keys_on_ack = delete.get("delete_outbound_on_ack", False)
        self.machine.delete_previous_keys_on_receive = delete.get(
            "delete_prev_on_new_session", False
        )
        self.machine.ratchet_keys_on_decrypt = delete.get("ratchet_on_decrypt", False)
        self.machine.delete_fully_used_keys_on_decrypt = delete.get(
            "delete_fully_used_on_decrypt", False
        )
        self.machine.delete_keys_on_device_delete = delete.get("delete_on_device_delete", False)
        self.machine.disable_device_change_key_rotation = (
            settings.rotation.disable_device_change_key_rotation
        )
        self._sharing: dict[str, asyncio.Lock] = {}
        self.probe = DeliveryProbe()
        self._probe_task: asyncio.Task[None] | None = None
        self._topping_up: asyncio.Task[None] | None = None

    @property
    def device_id(self) -> str:
        return str(self.client.device_id)

    @property
    def encrypt_new_rooms(self) -> bool:
        return self.settings.default

    @property
    def require(self) -> bool:
        return self.settings.require

    # --- start ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the tables, the device and its keys; cross-sign the device if configured."""
        await RoomStateStore.upgrade_table.upgrade(self._db)
        await PgCryptoStore.upgrade_table.upgrade(self._db)
        await self.crypto_store.open()
        device_id = await self.crypto_store.get_device_id()
        # MSC4190: the appservice creates (or renames) its bot's device; no login, no UIA.
        await self.client.create_device_msc4190(
            device_id=device_id or "", initial_display_name=self.settings.device_name
        )
        await self.machine.load()
        assert self.machine.account is not None
        if not device_id:
            await self.crypto_store.put_device_id(self.client.device_id)
            self._log.info("Created the bot's crypto device %s", self.client.device_id)
            await self.machine.share_keys()
        elif not self.machine.account.shared or not await self._keys_on_server():
            self.machine.account.shared = False
            await self.machine.share_keys()
        if self.settings.self_sign:
            await self._self_sign()
        self._log.info(
            "Encryption ready: device %s of %s (appservice mode)", self.device_id, self.client.mxid
        )
        self._probe_task = asyncio.create_task(self._check_delivery(), name="crypto-probe")

    async def stop(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)

    async def _check_delivery(self) -> None:
        """Send a to-device event to our own device and see whether transactions bring it
        back, with key counts: if not, the homeserver lacks a setting, and each missing one is
        logged as an error that says what to set."""

        async def send() -> None:
            await self.client.send_to_device(
                EventType.find(PROBE_TYPE, EventType.Class.TO_DEVICE),
                {self.client.mxid: {self.client.device_id: cast(Any, self.probe.content())}},
            )

        try:
            await self.probe.run(send, PROBE_SECONDS)
        except MatrixError as err:
            self._log.warning("Could not send the delivery probe: %s", err)
            return
        for problem in self.probe.problems():
            self._log.error("%s. Encrypted rooms cannot work until this is fixed.", problem)

    def health(self) -> dict[str, Any]:
        """For ``/_pontis/health``: the device, and the homeserver settings found missing
        (``probe`` is ``pending`` until the delivery probe came back or timed out)."""
        done = self._probe_task is not None and self._probe_task.done()
        return {
            "device": self.device_id,
            "probe": "done" if done else "pending",
            "problems": self.probe.problems() if done else [],
        }

    async def _keys_on_server(self) -> bool:
        resp = await self.client.query_keys([self.client.mxid])
        device = resp.device_keys.get(self.client.mxid, {}).get(self.client.device_id)
        assert self.machine.account is not None
        if device is None:
            self._log.warning(
                "The homeserver lost the keys of device %s; uploading them again",
                self.client.device_id,
            )
            return False
        ours = self.machine.account.identity_key
        if (
            str(device.keys.get(KeyID(EncryptionKeyAlgorithm.CURVE25519, self.client.device_id)))
            != ours
        ):
            raise RuntimeError(
                f"device {self.client.device_id} on the homeserver has other keys than the "
                "bridge's crypto store (was the database restored from another hub?); delete "
                "the device on the homeserver to let the bridge create a new one"
            )
        return True

    async def _self_sign(self) -> None:
        trust = await self.machine.resolve_trust(self.machine.own_identity)
        if trust >= TrustState.CROSS_SIGNED_UNTRUSTED:
            return
        recovery_key = await self.machine.generate_recovery_key()
        sealed = self._secrets.seal(recovery_key, context="recovery_key")
        await self._kv_set("recovery_key", sealed)
        # Never logged: `pontis show-recovery-key` prints it for whoever runs the bridge.
        self._log.info(
            "Cross-signed device %s; its recovery key is stored sealed with the pickle key "
            "(`pontis show-recovery-key` prints it)",
            self.client.device_id,
        )

    async def recovery_key(self) -> str | None:
        sealed = await self._kv_get("recovery_key")
        return None if sealed is None else self._secrets.open(sealed, context="recovery_key")

    # --- what transactions carry ------------------------------------------------------------------

    async def handle_transaction_data(self, kind: str, payload: dict[str, Any]) -> None:
        """One inbox row of kind ``to_device``, ``device_lists``, ``otk_count`` or
        ``fallback_keys``. Raises on failures worth retrying."""
        if self.probe.observe(kind, payload):
            return
        if kind == "to_device":
            await self._to_device(payload)
        elif kind == "device_lists":
            lists = DeviceLists.deserialize(cast(Any, payload))
            await self.machine.handle_device_lists(lists)
        elif kind == "otk_count":
            mine = (payload.get(self.client.mxid) or {}).get(self.client.device_id)
            if isinstance(mine, dict):
                await self.machine.handle_otk_count(DeviceOTKCount.deserialize(cast(Any, mine)))

    def note_key_counts(self, kind: str, payload: dict[str, Any]) -> None:
        """One-time-key counts as a transaction carried them (not stored: every transaction
        repeats them). Too few left: upload more, once at a time."""
        self.probe.observe(kind, payload)
        if kind != "otk_count" or (self._topping_up is not None and not self._topping_up.done()):
            return
        mine = (payload.get(self.client.mxid) or {}).get(self.client.device_id)
        if not isinstance(mine, dict) or self.machine.account is None:
            return
        count = mine.get("signed_curve25519")
        if isinstance(count, int) and count < self.machine.account.max_one_time_keys // 2:
            self._topping_up = asyncio.create_task(self._top_up(count), name="crypto-otk")

    async def _top_up(self, count: int) -> None:
        try:
            await self.machine.share_keys(count)
        except Exception as err:  # the next transaction's count tries again
            self._log.warning("Could not upload one-time keys: %s", err)

    async def _to_device(self, payload: dict[str, Any]) -> None:
        try:
            event = cast(ASToDeviceEvent, ASToDeviceEvent.deserialize(cast(Any, payload)))
        except Exception as err:
            self._log.warning("Ignoring a malformed to-device event: %s", err)
            return
        try:
            await self.machine.handle_as_to_device_event(event)
        except (DecryptionError, VerificationError, DeviceValidationError) as err:
            # Replayed after a crash (the Olm message was already used) or not for us: the
            # room key it carried, if any, is stored already. Not worth a retry.
            self._log.info(
                "Could not use to-device %s from %s: %s", payload.get("type"), event.sender, err
            )

    async def handle_state_event(self, event: dict[str, Any]) -> None:
        """A state event of a room: encryption turned on, members coming and going. A member
        leaving (or a new one) makes the next message use a new session."""
        try:
            evt = StateEvent.deserialize(cast(Any, event))
        except Exception:
            return
        if evt.type == EventType.ROOM_ENCRYPTION:
            self.rooms.remember(str(evt.room_id), True)
        elif evt.type == EventType.ROOM_MEMBER and self._is_ghost(str(evt.state_key)):
            return  # ghosts hold no keys: their coming and going rotates nothing
        if evt.type == EventType.ROOM_MEMBER:
            await self.machine.handle_member_event(evt)
        await self.state_store.update_state(evt)

    # --- rooms ----------------------------------------------------------------------------------

    def encryption_state(self) -> dict[str, Any]:
        """The ``m.room.encryption`` content of a room the bridge creates."""
        return {"algorithm": MEGOLM, **self.settings.rotation.room_content()}

    async def room_created(self, room_id: str, encrypted: bool) -> None:
        # Only "encrypted" is certain: a homeserver that encrypts every room does so even when
        # we did not ask, so "not asked" is left for the first send to check.
        if encrypted:
            self.rooms.remember(room_id, True)
            await self.state_store.set_encryption_info(RoomID(room_id), self.encryption_state())

    async def is_encrypted(self, room_id: str) -> bool:
        known = await self.rooms.stored(room_id)
        if known is not None:
            return known
        try:
            content = await self.client.get_state_event(RoomID(room_id), EventType.ROOM_ENCRYPTION)
        except MNotFound:
            self.rooms.remember(room_id, False)
            return False
        except MatrixRequestError as err:
            status = getattr(err, "http_status", 0)
            if status >= 500 or status == 429:
                raise TransientError(f"reading the encryption state of {room_id}: {err}") from err
            raise PermanentError(
                f"reading the encryption state of {room_id}: {status} {err}",
                user_message="The bridge cannot read this room's encryption settings.",
            ) from err
        except MatrixError as err:  # the homeserver is away
            raise TransientError(f"reading the encryption state of {room_id}: {err}") from err
        await self.state_store.set_encryption_info(RoomID(room_id), cast(Any, content))
        self.rooms.remember(room_id, True)
        return True

    # --- send -----------------------------------------------------------------------------------

    async def encrypt(
        self, room_id: str, event_type: str, content: dict[str, Any]
    ) -> dict[str, Any]:
        """``content`` as ``m.room.encrypted`` content, sharing a new session first if needed."""
        room = RoomID(room_id)
        etype = EventType.find(event_type)
        try:
            encrypted = await self.machine.encrypt_megolm_event(room, etype, content)
        except EncryptionError:
            lock = self._sharing.setdefault(room_id, asyncio.Lock())
            async with lock:
                if not self.machine.is_sharing_group_session(room):
                    try:
                        encrypted = await self.machine.encrypt_megolm_event(room, etype, content)
                        return cast(dict[str, Any], encrypted.serialize())
                    except EncryptionError:
                        pass
                await self._share(room)
            encrypted = await self.machine.encrypt_megolm_event(room, etype, content)
        return cast(dict[str, Any], encrypted.serialize())

    async def _share(self, room: RoomID) -> None:
        if not await self.state_store.has_full_member_list(room):
            await self.client.get_state(room)  # fills members and encryption into the store
        users = [u for u in await self.state_store.members_for_keys(room) if not self._is_ghost(u)]
        self._log.debug("Sharing a new session in %s with %d users", room, len(users))
        await self.machine.share_group_session(room, users)

    def encrypt_file(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        """(ciphertext to upload, the ``file`` object without its ``url``)."""
        ciphertext, info = encrypt_attachment(data)
        return ciphertext, cast(dict[str, Any], info.serialize())

    @staticmethod
    def decrypt_file(ciphertext: bytes, file: dict[str, Any]) -> bytes:
        try:
            info = EncryptedFile.deserialize(cast(Any, file))
            return decrypt_attachment(ciphertext, info.key.key, info.hashes["sha256"], info.iv)
        except (DecryptionError, KeyError, ValueError, TypeError) as err:
            raise PermanentError(
                f"encrypted attachment unreadable: {err}",
                user_message="The file could not be decrypted; send it again.",
            ) from err

    # --- receive --------------------------------------------------------------------------------

    async def decrypt(self, event: dict[str, Any], *, wait: bool = True) -> dict[str, Any]:
        """The decrypted form of an ``m.room.encrypted`` event (same id, sender and room).

        Waits ``key_wait_seconds`` for a missing room key, then asks the sender's devices for it
        and waits ``key_request_seconds`` more; raises :class:`KeysMissing` if it never comes,
        :class:`Untrusted` below ``verification_levels.send``, another :class:`PermanentError`
        for what can never be decrypted.
        """
        try:
            evt = EncryptedEvent.deserialize(cast(Any, event))
        except Exception as err:
            raise PermanentError(
                f"malformed encrypted event: {err}",
                user_message="The bridge could not read this encrypted message.",
            ) from err
        try:
            if wait:
                decrypted = await self._decrypt_waiting(evt)
            else:  # an event read back from the homeserver: its key is here or never will be
                decrypted = await self.machine.decrypt_megolm_event(evt)
        except SessionNotFound as err:
            raise KeysMissing(f"no room key for session {err.session_id}") from err
        except DuplicateMessageIndex as err:
            raise PermanentError(
                "replayed Megolm message index",
                user_message="The message reused an encryption index (a replay) and was refused.",
            ) from err
        except (DecryptionError, VerificationError) as err:
            raise PermanentError(
                f"decryption failed: {err}",
                user_message="The bridge could not decrypt this message.",
            ) from err
        trust = decrypted["mautrix"]["trust_state"]
        if trust < self._min_send_trust:
            raise Untrusted(
                f"device trust {trust} below {self._min_send_trust}",
                user_message=(
                    "It came from a device the hub does not trust enough "
                    f"({trust}; this hub needs {self._min_send_trust}). Verify your device, "
                    "then send it again."
                ),
            )
        out = cast(dict[str, Any], decrypted.serialize())
        out.pop("mautrix", None)
        out["unsigned"] = event.get("unsigned") or {}
        out["pontis_encrypted"] = True
        return out

    async def _decrypt_waiting(self, evt: EncryptedEvent) -> Any:
        try:
            return await self.machine.decrypt_megolm_event(evt)
        except SessionNotFound as err:
            missing = err
        room, session_id = evt.room_id, evt.content.session_id
        got = await self.machine.wait_for_session(
            room, session_id, timeout=self.settings.key_wait_seconds
        )
        if not got and self.settings.key_request_seconds > 0:
            devices = [evt.content.device_id] if evt.content.device_id else []
            self._log.info(
                "No key for %s in %s yet; asking %s's devices %s",
                evt.event_id, room, evt.sender, devices or "(all)",
            )  # fmt: skip
            from_devices = {evt.sender: devices or await self._devices_of(evt.sender)}
            got = await self.machine.request_room_key(
                room, IdentityKey(missing.sender_key or evt.content.sender_key), session_id, from_devices,
                timeout=self.settings.key_request_seconds,
            )  # fmt: skip
        if not got:
            raise KeysMissing(
                f"no room key for session {session_id}",
                user_message=(
                    "The hub never received the keys to decrypt it. Make sure your client "
                    "shares keys with unverified devices, then send it again."
                ),
            ) from missing
        return await self.machine.decrypt_megolm_event(evt)

    async def _devices_of(self, user_id: UserID) -> list[DeviceID]:
        devices = await self.crypto_store.get_devices(user_id)
        return list(devices or {})

    async def _allow_key_share(self, device: DeviceIdentity, request: RequestedKeyInfo) -> bool:
        """A member's device asks for a key of the bot's: only if sharing is on, the device is
        trusted enough, the room is a portal and the user is in it."""
        who = f"{device.user_id}/{device.device_id}"
        if not self.settings.allow_key_sharing:
            raise RejectKeyShare(
                f"key sharing is off; refused {who}",
                code=cast(RoomKeyWithheldCode, RoomKeyWithheldCode.UNAVAILABLE),
                reason="This hub does not share keys on request",
            )
        if await self.machine.resolve_trust(device) < self.machine.share_keys_min_trust:
            raise RejectKeyShare(
                f"untrusted device {who}",
                code=cast(RoomKeyWithheldCode, RoomKeyWithheldCode.UNVERIFIED),
                reason="Your device is not trusted by the hub",
            )
        if not await self._is_portal(str(request.room_id)):
            raise RejectKeyShare(
                f"{request.room_id} is not a portal",
                code=cast(RoomKeyWithheldCode, RoomKeyWithheldCode.UNAVAILABLE),
                reason="That room is not bridged",
            )
        members = await self.state_store.members_for_keys(request.room_id)
        if device.user_id not in members:
            raise RejectKeyShare(
                f"{device.user_id} is not in {request.room_id}",
                code=cast(RoomKeyWithheldCode, RoomKeyWithheldCode.UNAUTHORIZED),
                reason="You are not in that room",
            )
        return True
