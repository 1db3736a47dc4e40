"""A Matrix message as a mail from the portal's address.

The sender's display name is the ``From`` name and the portal's address the ``From`` address,
so replies come back to the room. A reply or thread message answers the mail it points at
(``Re:`` subject, ``In-Reply-To``, ``References``); any other message starts a conversation
whose subject is its first line. Who receives it is decided in :mod:`bridge.email.recipients`:
one mail per :class:`Delivery`, all with the same Message-ID. Files become attachments (an ``mxc://`` link is useless to a
mail reader). Notices are marked ``Auto-Submitted`` so out-of-office robots do not answer them.
"""

from __future__ import annotations

import html as htmllib
from dataclasses import dataclass
from email.message import EmailMessage

import nh3

from bridge.core import MatrixMessage, bound_html
from bridge.email.protocol.compose import (
    OutgoingAttachment,
    compose_mail,
    reply_subject,
    subject_from_body,
)
from bridge.email.recipients import Delivery


@dataclass(slots=True, kw_only=True)
class Parent:
    """The mail a Matrix message answers."""

    message_id: str
    subject: str
    references: list[str]


@dataclass(slots=True, kw_only=True)
class Outgoing:
    """The mails of one Matrix message, one per delivery, in the same order."""

    mails: list[EmailMessage]
    subject: str
    references: list[str]


async def compose_from_matrix(
    msg: MatrixMessage,
    *,
    from_address: str,
    deliveries: list[Delivery],
    message_id: str,
    parent: Parent | None,
    loop_marker: str,
) -> Outgoing:
    text, html = _content(msg)
    attachments = []
    if msg.media is not None:
        data = await msg.media.read()
        attachments.append(
            OutgoingAttachment(filename=msg.media.filename, mimetype=msg.media.mimetype, data=data)
        )
    if parent is not None:
        subject = reply_subject(parent.subject)
        references = [*parent.references, parent.message_id]
    else:
        subject = subject_from_body(text)
        references = []
    mails = [
        compose_mail(
            from_name=msg.sender_name,
            from_address=from_address,
            to=delivery.to,
            cc=delivery.cc,
            subject=subject,
            message_id=message_id,
            in_reply_to=parent.message_id if parent is not None else None,
            references=references,
            text=text,
            html=html,
            attachments=attachments,
            auto_submitted="auto-generated" if msg.msgtype == "m.notice" else None,
            loop_marker=loop_marker,
        )
        for delivery in deliveries
    ]
    return Outgoing(mails=mails, subject=subject, references=references)


def _content(msg: MatrixMessage) -> tuple[str, str | None]:
    """(plain text, HTML or None) of the message body, with a quote of what it replies to."""
    if msg.media is not None and msg.body in ("", msg.media.filename):
        return f"{msg.sender_name} sent {msg.media.filename}", None
    text = msg.body
    # The sender's HTML goes into other people's mail readers: clean it the same way ammonia
    # cleans untrusted HTML for the web, not with Matrix's narrower allow-list.
    html = nh3.clean(bound_html(msg.html)) if msg.html else None
    if msg.msgtype == "m.emote":
        text = f"* {msg.sender_name} {text}"
        html = None
    if msg.reply_to_text:
        quoted = "\n".join(f"> {line}" for line in msg.reply_to_text.splitlines())
        text = f"{text}\n\n{quoted}"
        html = (
            None if html is None else f"{html}<blockquote>{_escape(msg.reply_to_text)}</blockquote>"
        )
    return text, html


def _escape(text: str) -> str:
    return htmllib.escape(text).replace("\n", "<br>")
