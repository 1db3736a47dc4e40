"""A Matrix user's file to XMPP: a slot from the server's upload service (XEP-0363) requested
as that user's JID, the bytes PUT there, and the GET URL sent in the message."""

from __future__ import annotations

import aiohttp
from slixmpp import JID, ComponentXMPP

from bridge.core import Media, NotSupported, TransientError

SLOT_TIMEOUT = 30


async def upload(
    xmpp: ComponentXMPP, http: aiohttp.ClientSession, service: str, uploader: str, media: Media
) -> str:
    """The URL the file can be fetched from; ``service`` is the upload service's JID."""
    if not service:
        raise NotSupported(
            "no upload_service configured", user_message="Files cannot be sent to XMPP here."
        )
    data = await media.read()
    try:
        slot = await xmpp.plugin["xep_0363"].request_slot(
            JID(service), media.filename, len(data), media.mimetype,
            ifrom=JID(uploader), timeout=SLOT_TIMEOUT,
        )  # fmt: skip
    except Exception as err:
        raise TransientError(f"upload slot request failed: {err}") from err
    put = slot["http_upload_slot"]["put"]
    headers = {h["name"]: h["value"] for h in put["headers"]} if put["headers"] else {}
    headers["Content-Type"] = media.mimetype
    async with http.put(put["url"], data=data, headers=headers) as resp:
        if resp.status >= 400:
            raise TransientError(f"upload of {media.filename} failed with HTTP {resp.status}")
    return str(slot["http_upload_slot"]["get"]["url"])
