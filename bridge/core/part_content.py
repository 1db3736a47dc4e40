"""The Matrix content of a remote message part: text, sanitised HTML with its inline images,
media, and the relation to what it answers."""

from __future__ import annotations

from typing import Any

from bridge.core.errors import NotFound, NotSupported, PermanentError
from bridge.core.events import Media, MessagePart
from bridge.core.html import sanitize_html
from bridge.core.inline_images import place_inline
from bridge.core.matrix import MatrixAPI
from bridge.portal.models import Message

_MSGTYPE_BY_MIME = {"image": "m.image", "video": "m.video", "audio": "m.audio"}


async def part_content(
    matrix: MatrixAPI, sender: str, room_id: str, part: MessagePart
) -> dict[str, Any]:
    """The content of the Matrix event that shows ``part``, its media uploaded as ``sender``."""
    msgtype = "m.notice" if part.notice else "m.emote" if part.emote else "m.text"
    content: dict[str, Any] = {**part.extra, "msgtype": msgtype, "body": part.text}
    if part.html:
        content["format"] = "org.matrix.custom.html"

        async def upload(image: Media) -> str:
            data = await image.read()
            return await matrix.upload(sender, data, image.mimetype, image.filename)

        # After sanitising, which keeps the placeholders' mxc:// URLs.
        content["formatted_body"] = await place_inline(
            sanitize_html(part.html), part.inline, upload
        )
    if part.media is not None:
        media = part.media
        try:
            data = await media.read()
            uploaded = await matrix.upload_for_room(
                sender, room_id, data, media.mimetype, media.filename
            )
        except (PermanentError, NotSupported, NotFound):
            if part.fallback is None:
                raise
            # For good (too big for the homeserver, grown past the limit): the fallback says so.
            return await part_content(matrix, sender, room_id, part.fallback)
        content.update(uploaded)
        content["msgtype"] = _MSGTYPE_BY_MIME.get(media.mimetype.split("/")[0], "m.file")
        content["info"] = {"mimetype": media.mimetype, "size": len(data)}
        content["filename"] = media.filename
        if not part.text:  # no caption: the body is the file name, as clients expect
            content["body"] = media.filename
    return content


def relation(reply: Message | None, root: Message | None) -> dict[str, Any] | None:
    """The ``m.relates_to`` of a message answering ``reply`` within the thread of ``root``."""
    if root is not None:
        in_reply_to = reply or root
        return {
            "rel_type": "m.thread",
            "event_id": root.mxid,
            "is_falling_back": reply is None,
            "m.in_reply_to": {"event_id": in_reply_to.mxid},
        }
    if reply is not None:
        return {"m.in_reply_to": {"event_id": reply.mxid}}
    return None
