"""An end-to-end-encrypting Matrix test client on matrix-nio[e2e] (vodozemac).

:class:`EncryptedUser` mirrors :class:`tests.e2e.matrix_client.MatrixUser`: built from ``(mxid,
access_token, base_url)``, a background ``/sync`` after ``start()``, every timeline event recorded
(as nio objects, decrypted where possible) and waited for with explicit timeouts. Events nio
cannot decrypt stay ``MegolmEvent`` in ``undecryptable(room_id)`` until their room key arrives.
Every device is trusted (``ignore_unverified_devices=True``); there is no cross-signing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nio
from nio.crypto.attachments import decrypt_attachment

if TYPE_CHECKING:
    from tests.e2e.synapse import SynapseServer

Match = Callable[[nio.Event], bool] | str

SYNC_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 500}}, "presence": {"types": []}}
MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2"}
ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": MEGOLM}


def _ok(response: Any, what: str) -> Any:
    if isinstance(response, nio.ErrorResponse):
        raise RuntimeError(f"{what} failed: {response}")
    return response


def _matcher(match: Match) -> Callable[[nio.Event], bool]:
    if isinstance(match, str):
        return lambda e: getattr(e, "body", None) == match
    return match


def describe_event(event: nio.Event) -> str:
    body = getattr(event, "body", None)
    text = f": {body[:200]!r}" if isinstance(body, str) else ""
    flag = " (decrypted)" if getattr(event, "decrypted", False) else ""
    return f"  {type(event).__name__} {event.event_id} from {event.sender}{flag}{text}"


class EncryptedUser:
    """A logged-in, encrypting Matrix user: ``EncryptedUser(mxid, access_token, base_url)``.

    The device is the one the access token belongs to (looked up with ``/whoami`` unless
    ``device_id`` is given); its Olm account and sessions live in ``store_dir`` (a temporary
    directory, removed by ``close()``, unless given). With ``auto_join`` every invite is joined.
    """

    def __init__(
        self,
        mxid: str,
        token: str,
        base_url: str,
        *,
        device_id: str | None = None,
        store_dir: Path | None = None,
        auto_join: bool = False,
    ) -> None:
        self.mxid = mxid
        self.token = token
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
        self.auto_join = auto_join
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="nio-store-"))
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        self.client = nio.AsyncClient(
            self.base_url, mxid, store_path=str(self.store_dir), config=config
        )
        self.events: list[tuple[str, nio.Event]] = []
        self.invites: list[tuple[str, str]] = []  # (room_id, inviter)
        self._invites_taken: set[int] = set()
        self._auto_joined: set[str] = set()
        self._undecryptable: dict[str, list[nio.MegolmEvent]] = {}
        self.sync_error: BaseException | None = None
        self._keys_lock = asyncio.Lock()
        self._changed: asyncio.Condition | None = None
        self._sync_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"EncryptedUser({self.mxid!r}, device={self.device_id!r})"

    @classmethod
    async def register(
        cls, synapse: SynapseServer, localpart: str, *, displayname: str | None = None, **kw: Any
    ) -> EncryptedUser:
        """Register ``localpart`` on ``synapse`` and return the started user."""
        mxid, token = await synapse.register_user(localpart, displayname=displayname)
        user = cls(mxid, token, synapse.base_url, **kw)
        await user.start()
        return user

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Initial sync, key upload/query/claim, then a background sync loop."""
        if self._sync_task is not None:
            return
        if self.device_id is None:
            self.client.access_token = self.token
            self.device_id = _ok(await self.client.whoami(), "whoami").device_id
            if not self.device_id:
                raise RuntimeError(f"{self.mxid}: the access token has no device")
        self.client.restore_login(self.mxid, self.device_id, self.token)
        self.client.add_event_callback(self._on_event, (nio.Event, nio.InviteMemberEvent))
        self.client.add_to_device_callback(
            self._on_room_key, (nio.RoomKeyEvent, nio.ForwardedRoomKeyEvent)
        )
        self._changed = asyncio.Condition()
        await self._sync_once(timeout_ms=0)
        if self.client.should_upload_keys:
            raise RuntimeError(f"{self.mxid}: device keys still not uploaded after first sync")
        self._sync_task = asyncio.create_task(self._sync_loop(), name=f"nio sync {self.mxid}")

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
            self._sync_task = None
        await self.client.close()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    # -- sync and keys ------------------------------------------------------------------------

    async def _maintain_keys(self) -> None:
        async with self._keys_lock:
            c = self.client
            if c.should_upload_keys:
                _ok(await c.keys_upload(), "keys upload")
            if c.should_query_keys:
                _ok(await c.keys_query(), "keys query")
            if c.should_claim_keys:
                _ok(await c.keys_claim(c.get_users_for_key_claiming()), "keys claim")

    async def _sync_once(self, timeout_ms: int) -> None:
        _ok(await self.client.sync(timeout=timeout_ms, sync_filter=SYNC_FILTER), "sync")
        for response in await self.client.send_to_device_messages():
            _ok(response, "sending to-device messages")
        await self._maintain_keys()
        for room_id in set(self.client.invited_rooms) - self._auto_joined if self.auto_join else ():
            self._auto_joined.add(room_id)
            _ok(await self.client.join(room_id), f"auto-joining {room_id}")
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self._sync_once(timeout_ms=1000)
                self.sync_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.sync_error = e
                await asyncio.sleep(0.5)

    def _on_event(self, room: nio.MatrixRoom, event: nio.Event | nio.InviteMemberEvent) -> None:
        if isinstance(event, nio.InviteMemberEvent):  # invite_state of an invited room
            mine = event.state_key == self.mxid and event.membership == "invite"
            if mine and room.room_id not in {r for r, _ in self.invites}:
                self.invites.append((room.room_id, event.sender))
        elif isinstance(event, nio.MegolmEvent):
            self._undecryptable.setdefault(room.room_id, []).append(event)
        else:
            self.events.append((room.room_id, event))

    def _on_room_key(self, event: nio.RoomKeyEvent | nio.ForwardedRoomKeyEvent) -> None:
        """A room key arrived after its events: decrypt those now (nio does not retry)."""
        pending = self._undecryptable.get(event.room_id, [])
        for megolm in [m for m in pending if m.session_id == event.session_id]:
            try:
                decrypted = self.client.decrypt_event(megolm)
            except nio.EncryptionError:
                continue
            if not isinstance(decrypted, nio.MegolmEvent):
                pending.remove(megolm)
                self.events.append((event.room_id, decrypted))

    # -- waiting ------------------------------------------------------------------------------

    async def _wait(
        self, check: Callable[[], Any], timeout: float, describe: Callable[[], str]
    ) -> Any:
        if self._changed is None:
            raise RuntimeError(f"{self.mxid}: call start() before waiting")
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                found = check()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = f"\nlast sync error: {self.sync_error!r}" if self.sync_error else ""
                    raise AssertionError(f"{self.mxid}: {describe()}{error}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def _room(self, room_id: str) -> nio.MatrixRoom | None:
        return self.client.rooms.get(room_id)

    async def _wait_for_room(self, room_id: str, timeout: float, encrypted: bool = False) -> None:
        def check() -> bool | None:
            room = self._room(room_id)
            return True if room is not None and (room.encrypted or not encrypted) else None

        def describe() -> str:
            room = self._room(room_id)
            state = "not in sync" if room is None else f"encrypted={room.encrypted}"
            return f"room {room_id} not joined{' and encrypted' * encrypted} within {timeout} s ({state})"

        await self._wait(check, timeout, describe)

    def mark(self) -> int:
        """Position in ``events`` now; pass it as ``after=`` to wait only for newer events."""
        return len(self.events)

    def seen(self, match: Match, room_id: str | None = None) -> list[nio.Event]:
        """Every (decrypted or plain) timeline event seen so far that matches."""
        pred = _matcher(match)
        return [e for r, e in self.events if (room_id is None or r == room_id) and pred(e)]

    def undecryptable(self, room_id: str) -> list[nio.MegolmEvent]:
        """Events in ``room_id`` that stayed ``m.room.encrypted`` (no room key so far)."""
        return list(self._undecryptable.get(room_id, []))

    async def wait_for_message(
        self, room_id: str, match: Match, timeout: float = 15.0, *, after: int = 0
    ) -> nio.Event:
        """The first timeline event in ``room_id`` (from ``after`` on) that matches ``match``
        (a predicate on the nio event, or a ``body`` string); AssertionError on timeout."""
        pred = _matcher(match)

        def check() -> nio.Event | None:
            for r, e in self.events[after:]:
                if r == room_id and pred(e):
                    return e
            return None

        def describe() -> str:
            seen = [e for r, e in self.events if r == room_id]
            lost = self._undecryptable.get(room_id, [])
            return (
                f"no matching event in {room_id} within {timeout} s; "
                f"last {min(10, len(seen))} of {len(seen)} seen:\n"
                + ("\n".join(map(describe_event, seen[-10:])) or "  (none)")
                + f"\nundecryptable ({len(lost)}):\n"
                + ("\n".join(f"  {m.event_id} session {m.session_id}" for m in lost) or "  (none)")
            )

        result: nio.Event = await self._wait(check, timeout, describe)
        return result

    async def wait_for_invite(self, timeout: float = 15.0, *, inviter: str | None = None) -> str:
        """The room id of the next invite not yet returned here, optionally only by ``inviter``."""

        def check() -> str | None:
            for i, (room_id, sender) in enumerate(self.invites):
                if i not in self._invites_taken and inviter in (None, sender):
                    self._invites_taken.add(i)
                    return room_id
            return None

        def describe() -> str:
            return f"no new invite within {timeout} s; seen (room, inviter): {self.invites}"

        return str(await self._wait(check, timeout, describe))

    async def wait_for_member(self, room_id: str, mxid: str, timeout: float = 15.0) -> None:
        """Until this client's sync shows ``mxid`` joined to ``room_id``."""

        def check() -> bool | None:
            room = self._room(room_id)
            ok = room is not None and mxid in room.users and mxid not in room.invited_users
            return True if ok else None

        def describe() -> str:
            room = self._room(room_id)
            members = sorted(room.users) if room else "room not synced"
            return f"{mxid} not joined to {room_id} within {timeout} s; members: {members}"

        await self._wait(check, timeout, describe)

    # -- rooms --------------------------------------------------------------------------------

    async def create_room(
        self,
        invite: list[str] | None = None,
        is_direct: bool = False,
        name: str | None = None,
        *,
        encrypted: bool = True,
        preset: nio.RoomPreset | None = None,
        initial_state: list[dict[str, Any]] | None = None,
        timeout: float = 15.0,
    ) -> str:
        """Create a room (megolm-encrypted from the start unless ``encrypted=False``; the
        homeserver may still encrypt it by default) and wait until it is synced."""
        state = list(initial_state or [])
        if encrypted:
            state.append(ENCRYPTION_STATE)
        presets = nio.RoomPreset
        preset = preset or (presets.trusted_private_chat if is_direct else presets.private_chat)
        response = await self.client.room_create(
            name=name, is_direct=is_direct, preset=preset, invite=invite or (), initial_state=state
        )
        room_id = str(_ok(response, "createRoom").room_id)
        await self._wait_for_room(room_id, timeout, encrypted=encrypted)
        return room_id

    async def create_dm(self, invitee_mxid: str, encrypted: bool = True, **kw: Any) -> str:
        return await self.create_room([invitee_mxid], is_direct=True, encrypted=encrypted, **kw)

    async def join(self, room_id: str, timeout: float = 15.0) -> str:
        joined = str(_ok(await self.client.join(room_id), f"joining {room_id}").room_id)
        await self._wait_for_room(joined, timeout)
        return joined

    async def invite(self, room_id: str, user_id: str) -> None:
        _ok(await self.client.room_invite(room_id, user_id), f"inviting {user_id}")

    async def room_is_encrypted(self, room_id: str) -> bool:
        """Whether the room has ``m.room.encryption`` state (asked from the homeserver)."""
        response = await self.client.room_get_state_event(room_id, "m.room.encryption")
        if isinstance(response, nio.RoomGetStateEventError):
            if response.status_code == "M_NOT_FOUND":
                return False
            raise RuntimeError(f"reading m.room.encryption of {room_id} failed: {response}")
        return bool(response.content.get("algorithm"))

    # -- sending ------------------------------------------------------------------------------

    async def send_event(
        self, room_id: str, type: str, content: dict[str, Any], timeout: float = 15.0
    ) -> str:
        """Send (encrypted if the room is) to every device of every member, verified or not.
        nio never encrypts ``m.reaction``: reactions go out in plaintext even here."""
        await self._wait_for_room(room_id, timeout)
        async with self._keys_lock:
            room = self._room(room_id)
            assert room is not None
            if room.encrypted:
                # nio shares the room key only with devices it knows: load the current members
                # and query their devices first (room_send does so only once per room).
                _ok(await self.client.joined_members(room_id), f"members of {room_id}")
                if self.client.should_query_keys:
                    _ok(await self.client.keys_query(), "keys query")
            response = await self.client.room_send(
                room_id, type, content, ignore_unverified_devices=True
            )
        return str(_ok(response, f"sending {type} to {room_id}").event_id)

    async def send_text(
        self,
        room_id: str,
        body: str,
        *,
        html: str | None = None,
        reply_to: str | None = None,
        **extra_content: Any,
    ) -> str:
        """``m.text`` unless ``msgtype=...``; any other keyword goes into the content."""
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if html is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = html
        if reply_to is not None:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await self.send_event(room_id, "m.room.message", content | extra_content)

    async def send_file(
        self, room_id: str, data: bytes, filename: str, mimetype: str, *, msgtype: str | None = None
    ) -> str:
        """Upload ``data`` as an encrypted attachment and send it (``content.file`` holds
        ``url``, ``key``, ``iv``, ``hashes``, ``v``)."""
        response, keys = await self.client.upload(
            io.BytesIO(data), mimetype, filename, encrypt=True, filesize=len(data)
        )
        url = _ok(response, f"uploading {filename}").content_uri
        assert keys is not None
        if msgtype is None:
            kind = mimetype.split("/", 1)[0]
            msgtype = f"m.{kind}" if kind in ("image", "video", "audio") else "m.file"
        content = {
            "msgtype": msgtype,
            "body": filename,
            "filename": filename,
            "info": {"mimetype": mimetype, "size": len(data)},
            "file": {"url": url, **{k: keys[k] for k in ("key", "iv", "hashes", "v")}},
        }
        return await self.send_event(room_id, "m.room.message", content)

    # -- received events ----------------------------------------------------------------------

    async def download_decrypted(self, event: nio.RoomEncryptedMedia) -> bytes:
        """The plaintext of an encrypted attachment (checks its SHA-256 and decrypts)."""
        response = _ok(await self.client.download(event.url), f"downloading {event.url}")
        return bytes(
            decrypt_attachment(response.body, event.key["k"], event.hashes["sha256"], event.iv)
        )

    @staticmethod
    def was_encrypted(event: nio.Event) -> bool:
        """The event arrived as ``m.room.encrypted`` and nio decrypted it."""
        return bool(getattr(event, "decrypted", False))
