"""Outgoing mail: subjects for threads and messages built so that nothing can inject headers.

Everything that reaches a header comes from Matrix users (display names, room names, message
text), so it is treated as hostile: control and line-break characters become spaces and encoded
words are defused before the ``email`` package sees them (Python 3.11.7 lacks the fixes for
CVE-2024-6923 and CVE-2026-1299), and addresses go through ``normalize_address`` and
``headerregistry.Address``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime
from typing import Any

from .addresses import is_valid_message_id, split_address
from .filenames import sanitize_filename

MAX_NAME_CHARS = 64
MAX_REFERENCES = 20
NO_SUBJECT = "(no subject)"
# Reply and forward prefixes of common clients and languages, with counters ("Re[2]:",
# "Re(2):") and the space French typography puts before the colon; any number of them.
_PREFIXES = re.compile(
    r"(?:(?:re|aw|sv|vs|fwd?|wg|tr|antw|doorst|rif|enc|odp|ynt)"
    r"(?:\s*[\[(]\d+[\])])?\s*[:\uff1a]\s*)+",
    re.IGNORECASE,
)
_MIMETYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def base_subject(subject: str) -> str:
    """``subject`` without reply/forward prefixes (``Re: AW: Fwd: Re[2]:``), one line."""
    text = " ".join(subject.split())
    prefixes = _PREFIXES.match(text)
    return text[prefixes.end() :] if prefixes else text


def reply_subject(subject: str) -> str:
    """``Re: <base subject>``: one prefix however many the thread collected.

    A thread whose subject is empty gets just ``Re:``: Gmail threads only mails with the same
    base subject, so anything else (``Re: (no subject)``) would split the conversation.
    """
    base = base_subject(subject)
    return f"Re: {base}" if base else "Re:"


def subject_from_body(text: str, max_len: int = 78) -> str:
    """A subject for a new thread started from Matrix: the first non-empty line of ``text``,
    cut at a word boundary with "…" if longer than ``max_len``; ``(no subject)`` if empty."""
    line = next((" ".join(ln.split()) for ln in text.splitlines() if ln.strip()), "")
    line = _header_text(line)
    if not line:
        return NO_SUBJECT
    if len(line) <= max_len:
        return line
    cut = line[: max_len - 1]
    if " " in cut[max_len // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "…"


@dataclass(slots=True)
class OutgoingAttachment:
    filename: str
    mimetype: str
    data: bytes


def _header_text(text: str) -> str:
    """``text`` safe for a header.

    Control, line-break and separator characters (all ``str.splitlines`` and mail software
    split on) and lone surrogates become spaces, and runs of spaces collapse. ``=?`` becomes
    ``= ?``: when a header is assigned, the stdlib decodes RFC 2047 encoded words in it and
    on Python 3.11.7 writes the result out raw, so a display name
    ``=?utf-8?q?=0D=0ABcc:_x?=`` would add a Bcc header (the CVE-2024-6923 family).
    """
    safe = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") else char for char in text
    )
    return re.sub(" {2,}", " ", safe).strip().replace("=?", "= ?")


def _body_text(text: str) -> str:
    """Body text without NULs or lone surrogates (neither can be encoded)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _address(address: str, name: str = "") -> Address:
    local, domain = split_address(address)
    display_name = _header_text(name)[:MAX_NAME_CHARS].rstrip()
    return Address(display_name=display_name, username=local, domain=domain)


def _check_message_id(value: str, what: str) -> str:
    if not is_valid_message_id(value):
        raise ValueError(f"{what} {value[:80]!r} is not a Message-ID of the form <id@domain>")
    return value


def _check_token(value: str, what: str) -> str:
    if not value or not value.isascii() or not value.isprintable() or "=?" in value:
        raise ValueError(
            f"{what} must be non-empty printable ASCII without '=?', got {value[:80]!r}"
        )
    return value


class _MessageIdsHeader(BaseHeader):
    """Message-ID, In-Reply-To and References as plain space-separated ids, folded between ids
    only. Python 3.11 folds an id longer than a line (Outlook's are ~80 characters) into RFC
    2047 encoded words, which no client matches, and the thread breaks."""

    max_count = 1

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["parse_tree"] = None
        kwds["decoded"] = " ".join(value.split())

    def fold(self, *, policy: Policy) -> str:
        lines = [f"{self.name}:"]
        limit = policy.max_line_length or float("inf")
        for token in str(self).split():
            if len(lines[-1]) + 1 + len(token) > limit and lines[-1].endswith(">"):
                lines.append("")
            lines[-1] += " " + token
        return str(policy.linesep).join(lines) + str(policy.linesep)


_HEADERS = HeaderRegistry()
for _name in ("Message-ID", "In-Reply-To", "References"):
    _HEADERS.map_to_type(_name, _MessageIdsHeader)
_POLICY = policy.SMTP.clone(header_factory=_HEADERS)


def _references(references: list[str] | None, in_reply_to: str | None) -> list[str]:
    """Valid ids, ``in_reply_to`` last; the thread root and the nearest ancestors if too many."""
    ids = [r for r in references or [] if is_valid_message_id(r)]
    if in_reply_to is not None and in_reply_to not in ids:
        ids.append(in_reply_to)
    ids = list(dict.fromkeys(ids))
    return ids if len(ids) <= MAX_REFERENCES else [ids[0], *ids[-(MAX_REFERENCES - 1) :]]


def _mimetype(value: str) -> tuple[str, str]:
    """``(maintype, subtype)`` for an attachment; multipart/* and message/* go as opaque
    bytes (RFC 2046 forbids base64 for message/rfc822, and a file is a file)."""
    mimetype = value.strip().lower()
    if not _MIMETYPE.fullmatch(mimetype) or mimetype.split("/")[0] in ("multipart", "message"):
        mimetype = "application/octet-stream"
    maintype, _, subtype = mimetype.partition("/")
    return maintype, subtype


def compose_mail(
    *,
    from_name: str,
    from_address: str,
    to: list[str],
    cc: list[str] | None = None,
    subject: str,
    message_id: str,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    text: str,
    html: str | None = None,
    attachments: list[OutgoingAttachment] | None = None,
    date: datetime | None = None,
    auto_submitted: str | None = None,
    loop_marker: str,
    reply_to: str | None = None,
) -> EmailMessage:
    """One outgoing mail, ready for ``as_bytes(policy=email.policy.SMTP)`` or aiosmtplib.

    ``text`` alone makes a text/plain mail; with ``html`` a multipart/alternative; attachments
    wrap either in a multipart/mixed. Display names and the subject are made single-line (see
    ``_header_text``), names cut to 64 characters. ``References`` gets ``in_reply_to`` if
    missing and keeps the root plus the 19 nearest ids. ``X-Pontis-Loop: <loop_marker>`` is
    always set, so the bridge recognises its own mail coming back; ``auto_submitted``
    (``auto-replied``, ``auto-generated``) sets ``Auto-Submitted`` and asks Exchange not to
    answer (``X-Auto-Response-Suppress: All``). ``date`` defaults to now; a naive one is UTC.

    Raises ``InvalidAddress`` for a bad address, ``ValueError`` for no recipient, a malformed
    Message-ID or an unprintable loop marker / Auto-Submitted value.
    """
    if not to:
        raise ValueError("a mail needs at least one recipient")
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _address(from_address, from_name)
    msg["To"] = [_address(address) for address in to]
    if cc:
        msg["Cc"] = [_address(address) for address in cc]
    if reply_to is not None:
        msg["Reply-To"] = _address(reply_to)
    msg["Subject"] = _header_text(subject)
    when = date or datetime.now(UTC)
    msg["Date"] = format_datetime(when if when.tzinfo else when.replace(tzinfo=UTC))
    msg["Message-ID"] = _check_message_id(message_id, "message_id")
    if in_reply_to is not None:
        msg["In-Reply-To"] = _check_message_id(in_reply_to, "in_reply_to")
    thread = _references(references, in_reply_to)
    if thread:
        msg["References"] = " ".join(thread)
    if auto_submitted is not None:
        msg["Auto-Submitted"] = _check_token(auto_submitted, "auto_submitted")
        msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Pontis-Loop"] = _check_token(loop_marker, "loop_marker")
    msg["MIME-Version"] = "1.0"
    msg.set_content(_body_text(text))
    if html is not None:
        msg.add_alternative(_body_text(html), subtype="html")
    for attachment in attachments or []:
        maintype, subtype = _mimetype(attachment.mimetype)
        msg.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=sanitize_filename(attachment.filename, f"{maintype}/{subtype}"),
        )
    return msg
