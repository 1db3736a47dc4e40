"""Bounces (delivery status notifications) of mail the bridge sent: which recipient to mark.

The envelope sender of each copy is its own bounce address (:mod:`bridge.email.verp`); a DSN
is believed only when it comes back to one and names, by its token, a recipient of that mail.
"""

from __future__ import annotations

import re

from bridge.core import ConnectorContext, PermanentError, RemoteMessageID
from bridge.email.ids import portal_key
from bridge.email.protocol.parse import Bounce
from bridge.email.store import EmailStore
from bridge.email.verp import BounceAddresses

BOUNCE_TOKEN_KEY = "bounce_token"
"""Payload key of a bounce's stored item: the token of the bounce address it was delivered to."""
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


async def handle_bounce(
    ctx: ConnectorContext,
    store: EmailStore,
    bounces: BounceAddresses,
    address: str,
    bounce: Bounce,
    *,
    token: str | None,
) -> None:
    """Mark the bounced recipient of one of our mails and tell the room.

    Anyone can send a DSN from the empty sender, and anyone who received one of the room's
    mails knows its Message-ID and the other recipients. So a DSN counts only when it came
    to the bounce address of one copy (:mod:`bridge.email.verp`) and that address's token
    names a recipient the mail was sent to: that recipient, and only that one, is marked.
    The room's notice is fixed text with the recipient and the status code; the DSN's
    free-form diagnostic is never shown."""
    if token is None:
        ctx.log.info("Ignored a bounce for %s sent to the portal's own address, not to a"
                     " bounce address (forged, or for mail not sent by the bridge)",
                     address)  # fmt: skip
        return
    if bounce.original_message_id is None:
        ctx.log.info("Ignored a bounce for %s without the original Message-ID", address)
        return
    message = await ctx.store.get_message(
        portal_key(address).remote_id, RemoteMessageID(bounce.original_message_id)
    )
    sent = await store.mail(address, bounce.original_message_id)
    if message is None or sent is None or not sent.sent_to:
        ctx.log.info("Ignored a bounce for %s: %s is no mail the bridge sent", address,
                     bounce.original_message_id)  # fmt: skip
        return
    rcpt = bounces.recipient(token, bounce.original_message_id, sent.sent_to)
    if rcpt is None:
        ctx.log.warning("Ignored a bounce for %s about %s: its bounce address names none of"
                        " the mail's recipients (forged?)", address,
                        bounce.original_message_id)  # fmt: skip
        return
    status = bounce.status if _STATUS.fullmatch(bounce.status) else "unknown"
    await store.mark_bounced(address, rcpt, f"status {status}")
    ctx.log.info("Mail %s to %s bounced (status %s); marked it",
                 bounce.original_message_id, rcpt, status)  # fmt: skip
    err = PermanentError(
        f"bounce {status} for {bounce.original_message_id}",
        user_message=f"The mail to {rcpt} could not be delivered (status {status})."
        f" {rcpt} no longer receives this room's mail; a member can send"
        " `email contacts <room> add <address>` once it is fixed.",
    )
    await ctx.delivery_failed(message.mxid, err)
