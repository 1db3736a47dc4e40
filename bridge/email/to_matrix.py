"""A received mail as the Matrix events of one :class:`RemoteMessage`.

The first event carries the text: the subject in bold when it starts a conversation (or
changes it), the new part of the mail, and the quoted history folded into a ``<details>``
block so nothing is lost but the room stays readable. Images the HTML shows in place
(``cid:`` URLs, RFC 2392) stay in place, as ``mxc:`` images of the formatted body; each other
attachment follows as an event of its own. A mail too long for one Matrix event (64 KiB) is cut
and the whole mail attached as ``message.eml``.

Signed mail says so above its text, with the signature's status (:mod:`.protocol.secure`);
encrypted mail, which the bridge cannot read, becomes a notice with the original attached as
``message.eml`` for the reader's mail client. Attachments the operator's policy does not allow
(type, size) are withheld, and a notice names each and says why.
"""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import unquote

from mautrix.util.formatter import parse_html

from bridge.core import INLINE_URL, Media, MessagePart, PartID, bound_html, sanitize_html
from bridge.email.protocol.parse import Attachment, ParsedMail, Security
from bridge.email.protocol.quotes import strip_quoted_html, strip_quoted_text

# Leaves room in the 65,536-byte event for the JSON around body and formatted_body.
MAX_TEXT_BYTES = 24_000
EMPTY_TEXT = "(empty mail)"
# Mail HTML is read only up to here (and its nesting capped) before anything parses it. Longer
# mail is cut to MAX_TEXT_BYTES and attached whole anyway; reading it costs the event loop about
# 4 s per MiB (quote stripping and parse_html are html.parser underneath). Five times the text
# limit, so that an HTML-only mail that is mostly markup still fills the event.
MAX_HTML_CHARS = 131_072
# Plain text is read only up to here before the quote stripper (pure Python, ~60 ms per MiB on
# the event loop) sees it: a longer mail is cut to MAX_TEXT_BYTES and attached whole anyway.
MAX_PLAIN_CHARS = 4 * MAX_TEXT_BYTES
# <img src="cid:…"> as the quote stripper's HTML normaliser writes it (attribute values quoted).
_CID_IMAGE = re.compile(r"""(<img\b[^>]*?\bsrc\s*=\s*)(["'])cid:([^"']*)\2""", re.I)
_MIB = 1024 * 1024
SECURITY_KEY = "fi.pontis.email.security"
"""Key of the first event's content describing a signed or encrypted mail, for clients and
auditors: ``{"kind": "smime"|"openpgp", "signed", "encrypted", "status", "signer"}``."""


@dataclass(frozen=True, slots=True)
class AttachmentPolicy:
    """Which attachments of incoming mail are passed on: MIME types (``image/*`` patterns),
    and a size per file."""

    allowed_types: tuple[str, ...] = ("*/*",)
    max_bytes: int = 25 * _MIB

    def refusal(self, attachment: Attachment) -> str | None:
        """Why ``attachment`` is withheld, or None if it may go to the room."""
        return self.refusal_of(attachment.mimetype, len(attachment.data))

    def refusal_of(self, mimetype: str, size: int) -> str | None:
        """Why a file of this type and size is withheld, or None."""
        mimetype = mimetype.lower()
        if not any(fnmatchcase(mimetype, pattern) for pattern in self.allowed_types):
            return f"{mimetype} files are not allowed here"
        if size > self.max_bytes:
            return f"{_size(size)}, larger than the {_size(self.max_bytes)} allowed per file"
        return None


def _size(count: int) -> str:
    return f"{count / _MIB:.1f} MiB" if count >= _MIB else f"{max(1, count // 1024)} KiB"


async def mail_parts(
    mail: ParsedMail,
    raw: bytes,
    *,
    show_subject: bool,
    strip_quotes: bool,
    policy: AttachmentPolicy | None = None,
) -> list[MessagePart]:
    policy = policy or AttachmentPolicy()
    if mail.security is not None and mail.security.encrypted:
        return _encrypted(mail, raw, show_subject=show_subject, policy=policy)
    text, html = await _body(mail, show_subject=show_subject, strip_quotes=strip_quotes)
    withheld: list[tuple[Attachment, str]] = []
    files: list[tuple[int, Attachment]] = []  # numbered in the mail: stable part ids
    for number, attachment in enumerate(mail.attachments, start=1):
        if (reason := policy.refusal(attachment)) is not None:
            withheld.append((attachment, reason))
        else:
            files.append((number, attachment))
    inline: dict[str, Media] = {}
    placed: list[tuple[int, Attachment]] = []
    if html is not None:
        html, inline, placed = _inline_images(html, files, withheld)
        files = [file for file in files if file not in placed]
    if mail.security is not None:
        sender = mail.from_[0].address if mail.from_ else ""
        text, html = _with_status(mail.security, sender, text, html)
    parts = []
    truncated = (
        len(text.encode()) > MAX_TEXT_BYTES
        or len((html or "").encode()) > MAX_TEXT_BYTES
        or len(mail.html or "") > MAX_HTML_CHARS
        or len(mail.text or "") > MAX_PLAIN_CHARS
    )
    eml = _original(raw, policy, withheld) if truncated else None
    if truncated:
        notice = (
            "[The mail is too long for one message: see message.eml]"
            if eml is not None
            else "[The mail is too long for one message; the rest is not passed on]"
        )
        text = f"{_cut(text, MAX_TEXT_BYTES)}\n\n{notice}" if text else notice
        html, inline = None, {}
        files = sorted(files + placed, key=lambda file: file[0])  # no HTML to place them in
    if text or html or not files:
        parts.append(
            MessagePart(
                text=text or EMPTY_TEXT,
                html=html,
                notice=mail.auto_submitted,
                inline=inline,
            )
        )
    for number, attachment in files:
        media = Media(
            mimetype=attachment.mimetype,
            filename=attachment.filename,
            size=len(attachment.data),
            data=attachment.data,
        )
        parts.append(MessagePart(part_id=PartID(f"attachment{number}"), media=media))
    if withheld:
        parts.append(_withheld_notice(withheld))
    if eml is not None:
        parts.append(eml)
    if parts and parts[0].part_id != PartID(""):
        parts[0].part_id = PartID("")  # the first event is the message's own (replies point at it)
    _describe(mail.security, parts)
    return parts


def _describe(security: Security | None, parts: list[MessagePart]) -> None:
    if security is not None and parts:
        parts[0].extra[SECURITY_KEY] = {
            "kind": security.kind,
            "signed": security.signed,
            "encrypted": security.encrypted,
            "status": security.status if security.signed else None,
            "signer": security.signer or None,
        }


async def _body(
    mail: ParsedMail, *, show_subject: bool, strip_quotes: bool
) -> tuple[str, str | None]:
    """(plain text, HTML or None) of the mail's new content, with the subject if shown."""
    quoted_html: str | None = None
    if mail.html is not None:
        source = bound_html(mail.html, MAX_HTML_CHARS)
        new_html, quoted_html = strip_quoted_html(source) if strip_quotes else (source, None)
        if mail.text is not None:
            source_text = mail.text[:MAX_PLAIN_CHARS]
            text = strip_quoted_text(source_text)[0] if strip_quotes else source_text
        else:
            # parse_html is built on html.parser: give it only well-formed markup.
            text = await parse_html(sanitize_html(new_html, MAX_HTML_CHARS))
        html: str | None = new_html
    else:
        source = (mail.text or "")[:MAX_PLAIN_CHARS]
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


def _inline_images(
    html: str, files: list[tuple[int, Attachment]], withheld: list[tuple[Attachment, str]]
) -> tuple[str, dict[str, Media], list[tuple[int, Attachment]]]:
    """``html`` with its ``cid:`` images pointing at inline media (see ``MessagePart.inline``),
    those media, and the numbered files placed so. A withheld image loses its URL (the
    withheld notice names it); a ``cid:`` naming no part of the mail is left to the sanitiser
    (which drops the URL)."""
    by_cid = {a.content_id: (n, a) for n, a in files if a.content_id}
    refused = {a.content_id for a, _ in withheld if a.content_id}
    inline: dict[str, Media] = {}
    placed: dict[int, tuple[int, Attachment]] = {}

    def place(match: re.Match[str]) -> str:
        cid = unquote(htmllib.unescape(match.group(3))).strip().strip("<>")
        if cid in refused:  # no image; the withheld notice names it
            return f'{match.group(1)}""'
        found = by_cid.get(cid)
        if found is None:
            return match.group(0)
        number, attachment = found
        key = f"image{number}"
        inline[key] = Media(
            mimetype=attachment.mimetype,
            filename=attachment.filename,
            size=len(attachment.data),
            data=attachment.data,
        )
        placed[number] = found
        return f"{match.group(1)}{match.group(2)}{INLINE_URL}{key}{match.group(2)}"

    html = _CID_IMAGE.sub(place, html)
    return html, inline, list(placed.values())


def _original(
    raw: bytes, policy: AttachmentPolicy, withheld: list[tuple[Attachment, str]]
) -> MessagePart | None:
    """The whole mail as ``message.eml``, or None (and a line in ``withheld`` saying why) when
    the policy refuses it: it holds every attachment, so once one is withheld the original is
    too, and it is a file of type ``message/rfc822`` and its size like any other."""
    reason = policy.refusal_of("message/rfc822", len(raw))
    if reason is None and withheld:
        reason = "the original mail holds the files withheld here"
    if reason is not None:
        original = Attachment(filename="message.eml", mimetype="message/rfc822", data=b"")
        withheld.append((original, reason))
        return None
    eml = Media(mimetype="message/rfc822", filename="message.eml", size=len(raw), data=raw)
    return MessagePart(part_id=PartID("eml"), media=eml)


def _withheld_notice(withheld: list[tuple[Attachment, str]]) -> MessagePart:
    lines = [f"{a.filename}: {reason}" for a, reason in withheld]
    count = "1 file was" if len(lines) == 1 else f"{len(lines)} files were"
    text = (
        f"{count} not passed on by the bridge's attachment policy:\n"
        + "\n".join(f"- {line}" for line in lines)
        + "\nAsk the sender to share it another way, or an admin for the original mail."
    )
    html = (
        f"<p>{count} not passed on by the bridge's attachment policy:</p><ul>"
        + "".join(f"<li>{htmllib.escape(line)}</li>" for line in lines)
        + "</ul><p>Ask the sender to share it another way, or an admin for the original"
        " mail.</p>"
    )
    return MessagePart(part_id=PartID("withheld"), text=text, html=html, notice=True)


_SMIME_STATUS = {
    "valid": "S/MIME signature valid",
    "untrusted": "S/MIME signature intact, but the signer is not trusted (the certificate is"
    " not from an authority this bridge trusts)",
    "invalid": "S/MIME signature INVALID: the mail was changed after it was signed, or the"
    " signature is not genuine",
    "unchecked": "S/MIME signed; the signature could not be checked",
}


def status_line(security: Security, sender: str) -> str:
    """One line telling a reader how the mail is signed and whether the signature holds;
    ``sender`` is the From address, which the signing certificate should name."""
    if security.kind == "openpgp":
        return "OpenPGP signed (the bridge does not check OpenPGP signatures)"
    line = _SMIME_STATUS.get(security.status, _SMIME_STATUS["unchecked"])
    if security.signer:
        emails = security.signer_emails
        line += f"; signed by {security.signer}" + (f" <{emails[0]}>" if emails else "")
        if sender and security.status != "invalid" and sender not in emails:
            line += f"; the certificate is not for {sender}"
    if security.detail and security.status == "unchecked":
        line += f" ({security.detail})"
    return line


def _with_status(
    security: Security, sender: str, text: str, html: str | None
) -> tuple[str, str | None]:
    if not security.signed:
        return text, html
    line = status_line(security, sender)
    mark = "\u26a0\ufe0f" if security.status == "invalid" else "\U0001f50f"
    text = f"{mark} {line}\n\n{text}" if text else f"{mark} {line}"
    banner = f"<p><em>{mark} {htmllib.escape(line)}</em></p>"
    return text, banner + (html if html is not None else _text_html(text.split("\n\n", 1)[-1]))


def _encrypted(
    mail: ParsedMail, raw: bytes, *, show_subject: bool, policy: AttachmentPolicy
) -> list[MessagePart]:
    """An encrypted (or opaque S/MIME) mail: a notice saying so, and the original to open,
    if the attachment policy allows it (and every attachment the parser could see in it: a
    mail may merely claim to be encrypted)."""
    security = mail.security
    assert security is not None
    kind = "OpenPGP" if security.kind == "openpgp" else "S/MIME"
    what = "signed (opaque)" if security.signed and security.kind == "smime" else "encrypted"
    withheld = [(a, r) for a in mail.attachments if (r := policy.refusal(a)) is not None]
    original = _original(raw, policy, withheld)
    text = f"\U0001f512 {kind} {what} mail: the bridge cannot show it." + (
        " Open the attached message.eml with your mail client."
        if original is not None
        else " The original is not passed on (see below)."
    )
    subject = mail.subject.strip() if show_subject else ""
    html = f"<p>{htmllib.escape(text)}</p>"
    if subject:
        text = f"{subject}\n\n{text}"
        html = f"<p><strong>{htmllib.escape(subject)}</strong></p>{html}"
    parts = [MessagePart(text=text, html=html, notice=mail.auto_submitted)]
    if original is not None:
        parts.append(original)
    if withheld:
        parts.append(_withheld_notice(withheld))
    _describe(security, parts)
    return parts
