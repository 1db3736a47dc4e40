"""A received mail as the Matrix events of one :class:`RemoteMessage`.

The first event carries the text: the subject in bold when it starts a conversation (or
changes it), the new part of the mail, and the quoted history folded into a ``<details>``
block so nothing is lost but the room stays readable. Each attachment follows as an event of
its own. A mail too long for one Matrix event (64 KiB) is cut and the whole mail attached as
``message.eml``.
"""

from __future__ import annotations

import html as htmllib

from mautrix.util.formatter import parse_html

from bridge.core import Media, MessagePart, PartID, bound_html, sanitize_html
from bridge.email.protocol.parse import ParsedMail
from bridge.email.protocol.quotes import strip_quoted_html, strip_quoted_text

# Leaves room in the 65,536-byte event for the JSON around body and formatted_body.
MAX_TEXT_BYTES = 24_000
EMPTY_TEXT = "(empty mail)"
# Mail HTML is read only up to here (and its nesting capped) before anything parses it. Longer
# mail is cut to MAX_TEXT_BYTES and attached whole anyway; reading it costs the event loop about
# 4 s per MiB (quote stripping and parse_html are html.parser underneath). Five times the text
# limit, so that an HTML-only mail that is mostly markup still fills the event.
MAX_HTML_CHARS = 131_072


async def mail_parts(
    mail: ParsedMail, raw: bytes, *, show_subject: bool, strip_quotes: bool
) -> list[MessagePart]:
    text, html = await _body(mail, show_subject=show_subject, strip_quotes=strip_quotes)
    parts = []
    truncated = (
        len(text.encode()) > MAX_TEXT_BYTES
        or len((html or "").encode()) > MAX_TEXT_BYTES
        or len(mail.html or "") > MAX_HTML_CHARS
    )
    if truncated:
        notice = "[The mail is too long for one message: see message.eml]"
        text = f"{_cut(text, MAX_TEXT_BYTES)}\n\n{notice}" if text else notice
        html = None
    if text or html or not mail.attachments:
        parts.append(MessagePart(text=text or EMPTY_TEXT, html=html, notice=mail.auto_submitted))
    for index, attachment in enumerate(mail.attachments, start=1):
        media = Media(
            mimetype=attachment.mimetype,
            filename=attachment.filename,
            size=len(attachment.data),
            data=attachment.data,
        )
        parts.append(MessagePart(part_id=PartID(f"attachment{index}"), media=media))
    if truncated:
        eml = Media(mimetype="message/rfc822", filename="message.eml", size=len(raw), data=raw)
        parts.append(MessagePart(part_id=PartID("eml"), media=eml))
    if parts and parts[0].part_id != PartID(""):
        parts[0].part_id = PartID("")  # the first event is the message's own (replies point at it)
    return parts


async def _body(
    mail: ParsedMail, *, show_subject: bool, strip_quotes: bool
) -> tuple[str, str | None]:
    """(plain text, HTML or None) of the mail's new content, with the subject if shown."""
    quoted_html: str | None = None
    if mail.html is not None:
        source = bound_html(mail.html, MAX_HTML_CHARS)
        new_html, quoted_html = strip_quoted_html(source) if strip_quotes else (source, None)
        if mail.text is not None:
            text = strip_quoted_text(mail.text)[0] if strip_quotes else mail.text
        else:
            # parse_html is built on html.parser: give it only well-formed markup.
            text = await parse_html(sanitize_html(new_html, MAX_HTML_CHARS))
        html: str | None = new_html
    else:
        source = mail.text or ""
        text, quoted_text = strip_quoted_text(source) if strip_quotes else (source, None)
        html = None
        if quoted_text is not None:
            html = _text_html(text)
            quoted_html = _text_html(quoted_text)
    text = text.strip()
    subject = mail.subject.strip() if show_subject else ""
    if subject:
        text = f"{subject}\n\n{text}" if text else subject
        html = f"<p><strong>{htmllib.escape(subject)}</strong></p>" + (
            html if html is not None else _text_html(text[len(subject) :].strip())
        )
    if quoted_html is not None and html is not None:
        html += f"<details><summary>Quoted text</summary>{quoted_html}</details>"
    return text, html


def _text_html(text: str) -> str:
    return htmllib.escape(text).replace("\n", "<br>")


def _cut(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode(errors="ignore")
