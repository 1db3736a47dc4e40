"""Bounce addresses (VERP): which recipient a delivery status notification really is about.

A DSN arrives from the empty sender (``MAIL FROM:<>``), which anyone can use, and names the
original mail's Message-ID and recipients, which everyone who received that mail knows. So a
DSN's text proves nothing. Each copy the bridge sends therefore goes out with its own envelope
sender, ``<portal local part>+b-<token>@<domain>``, where the token is an HMAC over the mail's
Message-ID and that one recipient; only the recipient's mail server learns it (it is the
copy's Return-Path). A DSN counts only when it is delivered *to* such an address and the token
matches one recipient the mail was sent to; then that recipient, and only that one, is marked.

The key is derived (HMAC-SHA256 as a KDF, with a fixed label) from a random secret the bridge
generates on first use and keeps in its database (``email_secret``), so every instance of the
hub agrees on it and no operator has to configure one. Deleting that row makes the bounces of
mail sent before unverifiable (they are then ignored), nothing worse.

The token is 12 base32 characters (60 bits): a portal local part is at most 49 characters, and
a local part may have 64 (RFC 5321 §4.5.3.1.1). Guessing one takes ~2^59 forged DSNs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from bridge.email.protocol.addresses import split_address

TAG = "+b-"
TOKEN_CHARS = 12
SECRET_NAME = "verp"
_LABEL = b"pontis email bounce address v1"


class BounceAddresses:
    """Makes and checks the envelope senders of one hub's outgoing mail."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, _LABEL, hashlib.sha256).digest()

    def token(self, message_id: str, recipient: str) -> str:
        mac = hmac.new(
            self._key, f"{message_id}\0{recipient.lower()}".encode(), hashlib.sha256
        ).digest()
        return base64.b32encode(mac).decode("ascii").lower()[:TOKEN_CHARS]

    def sender(self, portal: str, message_id: str, recipient: str) -> str:
        """The envelope sender of the copy of ``message_id`` for ``recipient``."""
        local, domain = split_address(portal)
        return f"{local}{TAG}{self.token(message_id, recipient)}@{domain}"

    def recipient(self, token: str, message_id: str, candidates: list[str]) -> str | None:
        """Which of ``candidates`` (whom the mail was sent to) ``token`` was made for."""
        for candidate in candidates:
            if hmac.compare_digest(self.token(message_id, candidate), token.lower()):
                return candidate
        return None


def split_bounce_address(address: str) -> tuple[str, str | None]:
    """(the portal address, the bounce token or None) of an address the bridge receives for:
    ``room.x+b-abc@d`` is the portal ``room.x@d`` with token ``abc``. Only the shape is read;
    whether the token is right is :meth:`BounceAddresses.recipient`'s question."""
    local, domain = split_address(address)
    base, tag, token = local.partition(TAG)
    if not tag or not base or len(token) != TOKEN_CHARS or not token.isalnum():
        return address, None
    return f"{base}@{domain}", token.lower()
