"""Matrix events → Graph chatMessage bodies.

Teams renders a useful subset of HTML, so Matrix HTML goes through as it is (minus the reply
fallback, which Teams shows as a ``messageReference`` card instead). Messages of Matrix users
without a Teams login are posted by the relay account with the sender's name in front.
"""

from __future__ import annotations

import html
import json
import re

from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment
from msgraph.generated.models.chat_message_hosted_content import ChatMessageHostedContent
from msgraph.generated.models.item_body import ItemBody

from bridge.core.events import MatrixEvent
from bridge.portal.models import Message

_MX_REPLY = re.compile(r"<mx-reply>.*?</mx-reply>", re.S | re.I)


def body_html(body: str, formatted: str | None) -> str:
    """The Teams HTML of a Matrix message: its HTML, else its text with line breaks kept."""
    if formatted:
        return _MX_REPLY.sub("", formatted).strip()
    return html.escape(body).replace("\n", "<br>")


def relayed(sender_name: str, content: str) -> str:
    """``content`` as the relay account posts it: who wrote it comes first, in bold."""
    return f"<b>{html.escape(sender_name)}</b>: {content}"


def as_posted(event: MatrixEvent, content: str, *, relay: bool) -> str:
    """What the acting account posts: through the relay account, the sender's name first,
    unless the core's relay mode put it there already (``event.sender`` is then the bot)."""
    return relayed(event.sender_name, content) if relay and not event.relayed else content


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
) -> ChatMessage:
    """A chatMessage to POST. ``image`` (bytes, mime type) is sent as hosted content, which
    is how Teams carries a pasted picture."""
    attachments: list[ChatMessageAttachment] = []
    hosted: list[ChatMessageHostedContent] = []
    if reply_to is not None:
        placeholder, attachment = reply_attachment(reply_to, reply_text or "")
        content = placeholder + content
        attachments.append(attachment)
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
    )


def edited_message(content: str) -> ChatMessage:
    return ChatMessage(body=ItemBody(content_type=BodyType.Html, content=content))
