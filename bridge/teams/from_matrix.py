"""Matrix events → Graph chatMessage bodies.

Teams renders a useful subset of HTML, so Matrix HTML goes through as it is (minus the reply
fallback, which Teams shows as a ``messageReference`` card instead). Messages of Matrix users
without a Teams login are posted by the relay account under a line that marks them external
and names their Matrix ID (:func:`relayed`).
"""

from __future__ import annotations

import html
import json
import re
import unicodedata

from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment
from msgraph.generated.models.chat_message_hosted_content import ChatMessageHostedContent
from msgraph.generated.models.chat_message_mention import ChatMessageMention
from msgraph.generated.models.item_body import ItemBody

from bridge.core.events import MatrixEvent
from bridge.portal.models import Message

_MX_REPLY = re.compile(r"<mx-reply>.*?</mx-reply>", re.S | re.I)


def body_html(body: str, formatted: str | None) -> str:
    """The Teams HTML of a Matrix message: its HTML, else its text with line breaks kept."""
    if formatted:
        return _MX_REPLY.sub("", formatted).strip()
    return html.escape(body).replace("\n", "<br>")


EXTERNAL = "External · via Matrix"
"""Marks every message the relay account posts for a Matrix user: that person is not one of
the tenant's, whatever their display name says."""

NAME_LIMIT = 64
"""Characters of a display name shown; a longer one is cut (with …)."""

_LOOKS_LIKE_MXID = re.compile(r"^\s*@[^\s:]+:\S+")


def shown_text(text: str, limit: int = NAME_LIMIT) -> str:
    """``text`` as one plain line: no line breaks, no invisible or direction-changing
    characters (Unicode "format" and "control" categories), spaces collapsed, cut at
    ``limit``. Not escaped."""
    kept = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1].rstrip() + "…"


def relayed(sender_name: str, sender_mxid: str, content: str) -> str:
    """``content`` as the relay account posts it, after a first line that says who wrote it:
    the fixed marker, then the Matrix ID (which the sender's homeserver vouches for and no
    one else can take), then the display name in quotes (which anyone can choose). So a
    display name that copies a colleague's, the marker or a Matrix ID cannot pass as the
    tenant's own: it is always a quoted name after "External · via Matrix" and a Matrix ID."""
    mxid = shown_text(sender_mxid, 255)
    name = shown_text(sender_name)
    header = f"<b>{html.escape(EXTERNAL)}</b> · <b>{html.escape(mxid)}</b>"
    if name and name != mxid and not _LOOKS_LIKE_MXID.match(name):
        header += f" · “{html.escape(name)}”"
    return f"<p>{header}</p>{content}"


def as_posted(event: MatrixEvent, content: str, *, relay: bool) -> str:
    """What the acting account posts: through the relay account, who wrote it first. In the
    core's relay mode (``event.sender`` is the bot, whichever account posts) that is the user
    the core relays for: the connector declares ``marks_relayed_senders``, so the core leaves
    the text alone and every relayed post carries the same marker line as our own relay path."""
    if event.relayed:
        return relayed(event.relayed_sender_name, event.relayed_sender or event.sender, content)
    if relay:
        return relayed(event.sender_name, event.sender, content)
    return content


def reply_attachment(target: Message, preview: str) -> tuple[str, ChatMessageAttachment]:
    """The placeholder and attachment that make a Teams chat message quote ``target``."""
    sender = target.sender_id if not target.sender_id.startswith("@") else None
    reference = {
        "messageId": target.remote_id,
        "messagePreview": preview[:200],
        "messageSender": {"user": {"id": sender, "userIdentityType": "aadUser"}}
        if sender
        else None,
    }
    attachment = ChatMessageAttachment(
        id=target.remote_id, content_type="messageReference", content=json.dumps(reference)
    )
    return f'<attachment id="{html.escape(target.remote_id)}"></attachment>', attachment


def chat_message(
    content: str,
    *,
    reply_to: Message | None = None,
    reply_text: str | None = None,
    image: tuple[bytes, str] | None = None,
    mentions: list[ChatMessageMention] | None = None,
    file: tuple[str, ChatMessageAttachment] | None = None,
) -> ChatMessage:
    """A chatMessage to POST. ``image`` (bytes, mime type) is sent as hosted content, which
    is how Teams carries a pasted picture; ``file`` (placeholder, ``reference`` attachment) is
    a file shared from OneDrive (:func:`bridge.teams.files.share_to_chat`)."""
    attachments: list[ChatMessageAttachment] = []
    hosted: list[ChatMessageHostedContent] = []
    if reply_to is not None:
        placeholder, attachment = reply_attachment(reply_to, reply_text or "")
        content = placeholder + content
        attachments.append(attachment)
    if file is not None:
        content += file[0]
        attachments.append(file[1])
    if image is not None:
        data, mimetype = image
        content += '<p><img src="../hostedContents/1/$value"></p>'
        hosted.append(
            ChatMessageHostedContent(
                content_bytes=data,
                content_type=mimetype,
                additional_data={"@microsoft.graph.temporaryId": "1"},
            )
        )
    return ChatMessage(
        body=ItemBody(content_type=BodyType.Html, content=content),
        attachments=attachments or None,
        hosted_contents=hosted or None,
        mentions=mentions or None,
    )


def edited_message(content: str, mentions: list[ChatMessageMention] | None = None) -> ChatMessage:
    return ChatMessage(
        body=ItemBody(content_type=BodyType.Html, content=content), mentions=mentions or None
    )
