"""The reference-network paths of :mod:`bench.paths.reference` in three portals: one of a bridge
with encryption off, and an unencrypted and an encrypted one of a bridge with encryption on
(:data:`VARIANTS`), with an encrypting Matrix client on the Matrix side.

The Matrix user is :class:`TimedEncryptedUser`, the end-to-end tests' matrix-nio client
(``tests/e2e/nio_user.py``, vodozemac) with arrival timestamps, the same kind of client in every
portal, so the encrypted portal differs from the others only in the room's encryption:

- **network → Matrix.** The bridge Megolm-encrypts the ghost's message with its bot device
  (``MatrixAPI.send``) and sends ``m.room.encrypted``; nio decrypts it. Arrival: the moment nio's
  ``/sync`` hands the decrypted event to the client (it includes nio's decryption).
- **Matrix → network.** nio Megolm-encrypts (its session shared with the bridge's device, never
  with the ghosts, which have none); the bridge decrypts the ``m.room.encrypted`` event in the
  router before routing it. Arrival: the reference network's HTTP handler, as in the plain paths.

In the other two portals nio sends and receives plain ``m.room.message`` events. Sends go
straight to nio's ``room_send`` (which shares a new Megolm session when the old one is used up
or a member changed, as a client does), not through ``EncryptedUser.send_text``, which refetches
the member list and queries keys before every message as the tests need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import nio

from bench.timing import Arrivals, TimedRemoteNetwork
from tests.e2e.nio_user import EncryptedUser

NOTE = (
    "reference network, on two bridges of their own, one with `encryption: {allow: false}`, "
    "one with `encryption: {allow: true}` (an unencrypted and an encrypted portal), each with "
    "its own Synapse; the Matrix user is a matrix-nio client (vodozemac) in the benchmark process"
)


class TimedEncryptedUser(EncryptedUser):
    """An :class:`EncryptedUser` that timestamps every text message its ``/sync`` delivers,
    decrypted or plain, and remembers which bodies arrived encrypted."""

    def __init__(self, mxid: str, token: str, base_url: str, **kw: Any) -> None:
        super().__init__(mxid, token, base_url, **kw)
        self.arrivals = Arrivals()
        self.arrived_encrypted: set[str] = set()

    def _timestamp(self, event: nio.Event, at: float) -> None:
        if isinstance(event, nio.RoomMessageText):
            if self.was_encrypted(event):
                self.arrived_encrypted.add(event.body)
            self.arrivals.arrived(event.body, at)

    def _on_event(self, room: nio.MatrixRoom, event: nio.Event | nio.InviteMemberEvent) -> None:
        now = time.perf_counter()
        super()._on_event(room, event)
        if not isinstance(event, nio.InviteMemberEvent | nio.MegolmEvent):
            self._timestamp(event, now)

    def _on_room_key(self, event: nio.RoomKeyEvent | nio.ForwardedRoomKeyEvent) -> None:
        """Events that waited for their room key count from the moment it arrived."""
        now = time.perf_counter()
        mark = len(self.events)
        super()._on_room_key(event)
        for _, decrypted in self.events[mark:]:
            self._timestamp(decrypted, now)

    async def send_bench(self, room_id: str, body: str) -> None:
        """One ``m.text``, encrypted if the room is, without the tests' per-send member and key
        refresh."""
        content = {"msgtype": "m.text", "body": body}
        response = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        if isinstance(response, nio.ErrorResponse):
            raise RuntimeError(f"sending to {room_id} failed: {response}")


@dataclass(frozen=True, slots=True)
class Variant:
    """One of the three ways a portal can stand to encryption."""

    tag: str
    """In the path keys: ``encryption-<tag>-in``, ``encryption-<tag>-out``."""
    room: str
    """In the labels."""
    encrypted: bool


OFF = Variant("off", "encryption off (`allow: false`)", encrypted=False)
"""A portal of a bridge without encryption, as in every run before it existed."""
PLAIN = Variant("plain", "unencrypted portal (`allow: true`)", encrypted=False)
"""An unencrypted portal of the bridge that has encryption on."""
ON = Variant("on", "encrypted portal", encrypted=True)
"""An encrypted portal of that same bridge."""
VARIANTS = (OFF, PLAIN, ON)


@dataclass(frozen=True, slots=True)
class Portal:
    chat: str
    room_id: str
    sender: str
    variant: Variant


@dataclass
class RemoteToEncryptable:
    remote: TimedRemoteNetwork
    portal: Portal
    arrivals: Arrivals
    bridge_pid: int
    synapse_pid: int
    """The processes metered for this path (:func:`bench.measure.measure_paths`)."""
    key: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or f"encryption-{self.portal.variant.tag}-in"
        self.label = self.label or f"Reference network → Matrix user, {self.portal.variant.room}"

    async def send(self, token: str) -> None:
        await self.remote.push(
            {
                "kind": "message",
                "chat": self.portal.chat,
                "sender": self.portal.sender,
                "id": token,
                "text": token,
            }
        )


@dataclass
class EncryptableToRemote:
    user: TimedEncryptedUser
    portal: Portal
    arrivals: Arrivals
    bridge_pid: int
    synapse_pid: int
    key: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or f"encryption-{self.portal.variant.tag}-out"
        self.label = self.label or f"Matrix user → reference network, {self.portal.variant.room}"

    async def send(self, token: str) -> None:
        await self.user.send_bench(self.portal.room_id, token)


KEYS = tuple(f"encryption-{v.tag}-{direction}" for direction in ("in", "out") for v in VARIANTS)
"""Every path key of the comparison (``--paths encryption`` selects them)."""
