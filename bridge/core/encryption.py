"""What the core needs from end-to-end encryption, as a protocol.

The implementation is :class:`bridge.crypto.engine.CryptoEngine`; the core only sees this
surface, so it never imports the crypto libraries and runs unchanged with encryption off.
Every Matrix event the core routes has passed :meth:`RoomEncryption.decrypt` once, and every
message it sends passes :meth:`RoomEncryption.encrypt` when its room is encrypted
(``MatrixAPI.send``), whichever connector it belongs to.
"""

from __future__ import annotations

from typing import Any, Protocol

ENCRYPTED = "m.room.encrypted"
TRANSACTION_DATA_KINDS = frozenset({"to_device", "device_lists", "otk_count", "fallback_keys"})
"""Inbox kinds that carry crypto data, not room events."""


class RoomEncryption(Protocol):
    @property
    def encrypt_new_rooms(self) -> bool:
        """Whether portals the bridge creates are encrypted (``encryption.default``)."""
        ...

    @property
    def require(self) -> bool:
        """Whether unencrypted messages in portals are refused (``encryption.require``)."""
        ...

    def encryption_state(self) -> dict[str, Any]:
        """The ``m.room.encryption`` content for a room the bridge creates."""
        ...

    async def room_created(self, room_id: str, encrypted: bool) -> None: ...

    async def is_encrypted(self, room_id: str) -> bool: ...

    async def encrypt(
        self, room_id: str, event_type: str, content: dict[str, Any]
    ) -> dict[str, Any]: ...

    def encrypt_file(self, data: bytes) -> tuple[bytes, dict[str, Any]]: ...

    def decrypt_file(self, ciphertext: bytes, file: dict[str, Any]) -> bytes: ...

    async def decrypt(self, event: dict[str, Any], *, wait: bool = True) -> dict[str, Any]:
        """The decrypted event, or a ``PermanentError`` whose user message says why not.
        ``wait``: wait for (and request) a missing room key, for events as they arrive."""
        ...

    async def handle_transaction_data(self, kind: str, payload: dict[str, Any]) -> None: ...

    def note_key_counts(self, kind: str, payload: dict[str, Any]) -> None:
        """``otk_count``/``fallback_keys`` of a transaction, handed over without storing."""
        ...

    async def handle_state_event(self, event: dict[str, Any]) -> None: ...


def ends_at_hub_notice(server: str, network: str) -> str:
    """The one-time notice of an encrypted portal: where its encryption ends."""
    return (
        f"🔒 Messages in this room are encrypted between your devices and the Pontis hub at "
        f"{server}. The hub decrypts them to deliver them to {network}, which is not "
        "end-to-end encrypted."
    )
