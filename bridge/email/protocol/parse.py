"""Inbound mail: raw bytes to a ``ParsedMail``, refusing what cannot be trusted.

``parse_mail`` never raises anything but ``MalformedMail``, whatever the bytes: the caller
answers the MTA with a permanent error carrying the message, and nothing else happens.

Why not ``email.policy.default`` throughout: on Python 3.11 its header parser raises
``IndexError`` on real mail (Exchange's ``Message-ID: <[..]@[..]>``, odd address lists;
cpython#94306, #105802) and ``get_content()`` raises ``LookupError`` on unknown charsets. So the
structure is parsed with a ``compat32`` policy (header values stay raw text and the structure
parser registers defects instead of raising), and the few headers we need are read here: address
headers through the stdlib's RFC 5322 parser, guarded, everything else with small tolerant
readers. Refused outright: mail over a ``ParseLimits`` limit (parts, nesting, headers, decoded
size: counted by the parser as it parses, see ``limits``), several From headers or a From naming
several mailboxes without a Sender (both spoofing tricks, espoofer), and a missing From unless
the mail system itself reports a delivery status.

Parsing is CPU-bound and runs ``openssl`` for S/MIME signatures: the bridge calls it in a worker
process (``bridge.email.parsing``), never on its event loop.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC
from email import errors, policy
from email.generator import BytesGenerator
from email.headerregistry import BaseHeader
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from .addresses import InvalidAddress, normalize_address, parse_message_ids
from .charsets import decode_8bit_header, decode_header_words, decode_text
from .dsn import Bounce, is_delivery_report, read_bounce
from .filenames import sanitize_filename
from .limits import Budget, CountingFeedParser, LimitExceeded, ParseLimits
from .secure import Security, is_signature_part, read_security

__all__ = [
    "Attachment",
    "Bounce",
    "Mailbox",
    "MalformedMail",
    "ParseLimits",
    "ParsedMail",
    "Security",
    "parse_mail",
]

MAX_REFERENCES = 100
MAX_STRICT_ADDRESS_HEADER = 1000  # characters; see _mailboxes
_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_SYSTEM_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_NOT_SET = frozenset({"", "no", "false", "0"})
# Embedding, override and isolate controls: they reorder how a name or subject is displayed.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ENCODED_WORD_GAP = re.compile(r"\?=\s+(?==\?)")
_JOINED_WORDS_DEFECT = "missing trailing whitespace after encoded-word"  # what the join causes
_FEED_CHUNK = 64 * 1024


@dataclass(slots=True)
class Mailbox:
    """One mailbox of an address header: the normalized address and the display name."""

    address: str
    name: str = ""


@dataclass(slots=True)
class Attachment:
    """A leaf MIME part that is not the body: a file, an inline image, a forwarded mail.

    ``filename`` is safe to use (see ``sanitize_filename``); ``content_id`` is the
    Content-ID without angle brackets, as HTML refers to it in ``cid:`` URLs.
    """

    filename: str
    mimetype: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(slots=True)
class ParsedMail:
    """What the bridge needs from one inbound mail. See ``parse_mail``."""

    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_: list[Mailbox] = field(default_factory=list)
    sender: Mailbox | None = None
    reply_to: list[Mailbox] = field(default_factory=list)
    to: list[Mailbox] = field(default_factory=list)
    cc: list[Mailbox] = field(default_factory=list)
    date_ms: int | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    auto_submitted: bool = False
    list_mail: bool = False
    authentication_results: list[str] = field(default_factory=list)
    loop_markers: list[str] = field(default_factory=list)
    bounce: Bounce | None = None
    defects: list[str] = field(default_factory=list)
    security: Security | None = None
    """S/MIME or OpenPGP: signed (and the signature's status) or encrypted; see ``secure``."""


class MalformedMail(ValueError):
    """A mail the bridge refuses; the message says what is wrong with it."""


class _MailPolicy(policy.Compat32):
    """``compat32`` whose header values come back as ``str`` even with raw 8-bit bytes in them
    (decoded as UTF-8, else windows-1252) instead of ``Header`` objects full of U+FFFD."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return decode_8bit_header(value)


_POLICY = _MailPolicy()
_SERIALIZE_POLICY = _POLICY.clone(linesep="\r\n")


def _one_line(text: str) -> str:
    """Whitespace (folding included) collapsed, control and bidi-override characters removed."""
    return "".join(
        char
        for char in " ".join(text.split())
        if char not in _BIDI_CONTROLS and unicodedata.category(char) not in ("Cc", "Cs")
    )


def _headers(msg: Message, name: str) -> list[str]:
    return [re.sub(r"\r?\n(?=[ \t])", "", str(value)) for value in msg.get_all(name) or []]


def _first(msg: Message, name: str, defects: list[str]) -> str | None:
    values = _headers(msg, name)
    if len(values) > 1:
        defects.append(f"{len(values)} {name} headers; the first is used")
    return values[0] if values else None


def _address_header(name: str, value: str) -> BaseHeader:
    """``value`` parsed by the stdlib's RFC 5322 parser (which may raise).

    Whitespace between adjacent encoded words is dropped first: RFC 2047 §6.2 says to ignore
    it, but in display names Python keeps it ("Müller, Jürg en" from a long folded name).
    """
    return policy.default.header_factory(name, _ENCODED_WORD_GAP.sub("?=", value))


def _address_pairs(header: BaseHeader) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs of a header parsed by the stdlib's RFC 5322 parser."""
    return [(a.display_name, f"{a.username}@{a.domain}") for a in getattr(header, "addresses", ())]


def _mailboxes(name: str, value: str | None, defects: list[str]) -> list[Mailbox]:
    """The valid mailboxes of a (non-From) address header; what is skipped becomes a defect.

    Long values are read with the old, linear ``getaddresses``: the RFC 5322 parser takes
    quadratic time on some input (100,000 commas: 71 s).
    """
    if value is None:
        return []
    pairs = None
    if len(value) <= MAX_STRICT_ADDRESS_HEADER:
        with suppress(Exception):  # stdlib parser bugs (cpython#151857, #148518): read leniently
            pairs = _address_pairs(_address_header(name, value))
    if pairs is None:
        defects.append(f"{name} header read leniently")
        try:
            pairs = [(decode_header_words(n), a) for n, a in getaddresses([value])]
        except RecursionError:  # comments nested thousands deep
            defects.append(f"{name} header ignored: it cannot be read")
            return []
    mailboxes = []
    for display_name, address in pairs:
        try:
            mailboxes.append(Mailbox(normalize_address(address), _one_line(display_name)))
        except InvalidAddress as exc:
            defects.append(f"{name} header: skipped an address: {exc}")
    return mailboxes


def _from(msg: Message) -> list[Mailbox]:
    """The From mailboxes, refusing anything another parser could read differently.

    The DMARC verifier in the MTA and the recipient's mail client parse From too; where
    parsers disagree (``Mallory <m@evil.example> <ceo@agency.example>``), the mail names
    one sender to the verifier and another to the reader (espoofer). So any defect beyond
    obsolete-but-unambiguous syntax refuses the mail.
    """
    values = _headers(msg, "From")
    if len(values) > 1:
        raise MalformedMail(f"{len(values)} From headers; a mail has exactly one")
    if not values:
        return []
    if len(values[0]) > MAX_STRICT_ADDRESS_HEADER:  # see _mailboxes; no real From is this long
        raise MalformedMail(
            f"the From header is longer than {MAX_STRICT_ADDRESS_HEADER} characters"
        )
    try:
        header = _address_header("From", values[0])
        pairs = _address_pairs(header)
    except Exception as exc:  # stdlib parser bugs: refuse rather than guess who sent it
        raise MalformedMail("the From header cannot be parsed") from exc
    problems = [
        d
        for d in header.defects
        # A non-ASCII local part is RFC 6531 (SMTPUTF8) mail, not an ambiguity.
        if not isinstance(d, errors.ObsoleteHeaderDefect | errors.NonASCIILocalPartDefect)
        and str(d) != _JOINED_WORDS_DEFECT
    ]
    if problems:
        raise MalformedMail(f"the From header is ambiguous ({problems[0]})")
    if not pairs:
        raise MalformedMail("the From header names no mailbox")
    try:
        return [Mailbox(normalize_address(a), _one_line(n)) for n, a in pairs]
    except InvalidAddress as exc:
        raise MalformedMail(f"the From header has an invalid address: {exc}") from exc


def _date_ms(value: str | None, defects: list[str]) -> int | None:
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, origin time zone unknown (RFC 5322 §3.3)
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    except Exception:  # ValueError, TypeError, OverflowError depending on the garbage
        defects.append("the Date header cannot be read")
        return None


def _is_auto_submitted(msg: Message, from_: list[Mailbox], bounce: Bounce | None) -> bool:
    """RFC 3834 and the common non-standard markers of mail no one typed (or must answer)."""
    for value in _headers(msg, "Auto-Submitted"):
        if re.split(r"[\s;(]", value.strip(), maxsplit=1)[0].lower() not in _NOT_SET:
            return True
    if any(v.strip().lower() not in _NOT_SET for v in _headers(msg, "X-Autoreply")):
        return True
    if _headers(msg, "X-Autorespond"):
        return True
    if any(v.strip().lower() in _AUTO_PRECEDENCE for v in _headers(msg, "Precedence")):
        return True
    if any(v.strip() == "<>" for v in _headers(msg, "Return-Path")):
        return True
    return bounce is not None or any(m.address.split("@")[0] in _SYSTEM_SENDERS for m in from_)


def _children(part: Message) -> list[Message] | None:
    """The sub-parts of a multipart or message/* part, ``None`` for a leaf."""
    if not part.is_multipart():  # get_payload() of a leaf decodes, and can raise doing so
        return None
    return [child for child in part.get_payload() if isinstance(child, Message)]


def _all_parts(msg: Message) -> list[Message]:
    """Every part, depth first; their number and depth were bounded by the parser."""
    parts: list[Message] = []
    stack = [msg]
    while stack:
        part = stack.pop()
        parts.append(part)
        stack.extend(reversed(_children(part) or []))
    return parts


def _is_attachment(part: Message) -> bool:
    return part.get_content_disposition() == "attachment" or part.get_filename() is not None


def _content_id(part: Message) -> str | None:
    ids = parse_message_ids(str(part.get("Content-ID", "")))
    return ids[0][1:-1] if ids else None


def _body_candidates(part: Message) -> Iterator[Message]:
    """Text parts that may be the body, in the order ``EmailMessage.get_body`` considers them:
    never an attachment, and in a multipart/related only its start part."""
    if _is_attachment(part):
        return
    content_type = part.get_content_type()
    if content_type in ("text/plain", "text/html"):
        yield part
        return
    children = _children(part)
    if part.get_content_maintype() != "multipart" or children is None:
        return
    if content_type == "multipart/related" and children:
        start = parse_message_ids(str(part.get_param("start") or ""))
        root = [c for c in children if start and f"<{_content_id(c)}>" == start[0]]
        children = root[:1] or children[:1]
    for child in children:
        yield from _body_candidates(child)


def _leaves(part: Message) -> Iterator[Message]:
    """Leaf parts in document order; message/* parts are leaves (a forwarded mail is a file)."""
    children = _children(part)
    if part.get_content_maintype() == "multipart" and children is not None:
        for child in children:
            yield from _leaves(child)
    else:
        yield part


def _unflow(text: str, delsp: bool) -> str:
    """Join the soft line breaks of RFC 3676 ``format=flowed`` text, per quote depth."""
    lines: list[str] = []
    paragraph, open_depth = "", -1
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:].removeprefix(" ")
        soft = content.endswith(" ") and content.rstrip(" ") != "--"  # "-- " is a signature
        if soft and delsp:
            content = content[:-1]
        if open_depth not in (-1, depth):  # a flowed paragraph cut short by a depth change
            lines.append(">" * open_depth + (" " + paragraph if open_depth else paragraph))
            paragraph = ""
        paragraph, open_depth = paragraph + content, depth
        if not soft:
            lines.append(">" * depth + (" " + paragraph if depth and paragraph else paragraph))
            paragraph, open_depth = "", -1
    if open_depth != -1:
        lines.append(">" * open_depth + (" " + paragraph if open_depth else paragraph))
    return "\n".join(lines)


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    return value.strip().lower() if isinstance(value, str) else ""


def _decoded(part: Message, budget: Budget) -> bytes:
    data = part.get_payload(decode=True)
    data = data if isinstance(data, bytes) else b""
    budget.decoded(len(data))
    return data


def _body_text(part: Message, budget: Budget) -> str:
    text = decode_text(_decoded(part, budget), part.get_content_charset())
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_type() == "text/plain" and _param(part, "format") == "flowed":
        text = _unflow(text, _param(part, "delsp") == "yes")
    return text


def _leaf_bytes(part: Message, budget: Budget) -> bytes:
    if not part.is_multipart():
        return _decoded(part, budget)
    # message/*: the parser made sub-messages of it; give the file back as bytes.
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=_SERIALIZE_POLICY).flatten(part)
    data = buffer.getvalue().partition(b"\r\n\r\n")[2]
    budget.decoded(len(data))
    return data


def _attachment(part: Message, budget: Budget) -> Attachment:
    mimetype = part.get_content_type()
    content_id = _content_id(part)
    disposition = part.get_content_disposition()
    return Attachment(
        filename=sanitize_filename(part.get_filename(), mimetype),
        mimetype=mimetype,
        data=_leaf_bytes(part, budget),
        content_id=content_id,
        inline=disposition == "inline" or (disposition is None and content_id is not None),
    )


def _read(msg: Message, raw: bytes, budget: Budget, trust_anchors: str | None) -> ParsedMail:
    parts = _all_parts(msg)
    defects: list[str] = []
    mail = ParsedMail(from_=_from(msg), bounce=read_bounce(msg, _POLICY))
    if not mail.from_ and not is_delivery_report(msg):
        raise MalformedMail("no From header")
    senders = _mailboxes("Sender", _first(msg, "Sender", defects), defects)
    if len(senders) > 1:
        defects.append("the Sender header names several mailboxes; it is ignored")
    mail.sender = senders[0] if len(senders) == 1 else None
    if len(mail.from_) > 1 and mail.sender is None:
        raise MalformedMail("the From header names several mailboxes and there is no Sender")

    message_ids = parse_message_ids(_first(msg, "Message-ID", defects) or "")
    mail.message_id = message_ids[0] if message_ids else None
    mail.in_reply_to = parse_message_ids(" ".join(_headers(msg, "In-Reply-To")))
    references = parse_message_ids(" ".join(_headers(msg, "References")))
    if len(references) > MAX_REFERENCES:  # keep the root and the nearest ancestors
        defects.append(f"References cut from {len(references)} to {MAX_REFERENCES} ids")
        references = [references[0], *references[-(MAX_REFERENCES - 1) :]]
    mail.references = references
    mail.subject = _one_line(decode_header_words(_first(msg, "Subject", defects) or ""))
    mail.reply_to = _mailboxes("Reply-To", _first(msg, "Reply-To", defects), defects)
    mail.to = _mailboxes("To", _first(msg, "To", defects), defects)
    mail.cc = _mailboxes("Cc", _first(msg, "Cc", defects), defects)
    mail.date_ms = _date_ms(_first(msg, "Date", defects), defects)
    mail.auto_submitted = _is_auto_submitted(msg, mail.from_, mail.bounce)
    mail.list_mail = bool(_headers(msg, "List-Id") or _headers(msg, "List-Unsubscribe"))
    mail.authentication_results = [v.strip() for v in _headers(msg, "Authentication-Results")]
    mail.loop_markers = [_one_line(v) for v in _headers(msg, "X-Pontis-Loop")]

    mail.security = read_security(msg, raw, trust_anchors)
    if mail.security is not None and mail.security.encrypted:
        # Nothing to show but that it is encrypted; the caller attaches the original.
        mail.defects = defects
        return mail
    candidates = list(_body_candidates(msg))
    text_part = next((p for p in candidates if p.get_content_type() == "text/plain"), None)
    html_part = next((p for p in candidates if p.get_content_type() == "text/html"), None)
    mail.text = _body_text(text_part, budget) if text_part is not None else None
    mail.html = _body_text(html_part, budget) if html_part is not None else None
    mail.security = mail.security or read_security(msg, raw, trust_anchors, text=mail.text)
    mail.attachments = [
        _attachment(part, budget)
        for part in _leaves(msg)
        if part is not text_part
        and part is not html_part
        and not (mail.security is not None and is_signature_part(part))
    ]
    # Decoding registers defects (bad base64, …) on the parts, so they are collected last.
    for index, part in enumerate(parts):
        where = "the message" if index == 0 else f"part {index} ({part.get_content_type()})"
        defects.extend(f"{type(defect).__name__} in {where}" for defect in part.defects)
    mail.defects = defects
    return mail


def parse_mail(
    raw: bytes,
    *,
    max_parts: int | None = None,
    max_depth: int | None = None,
    limits: ParseLimits | None = None,
    trust_anchors: str | None = None,
) -> ParsedMail:
    """Parse one mail as received (RFC 5322 + MIME). Raises only ``MalformedMail``.

    Header values are decoded (RFC 2047, 8-bit), subjects and names made single-line without
    control characters; addresses are normalized (invalid ones in To/Cc/Reply-To are skipped
    and noted in ``defects``). The body is the first text/plain and the first text/html that
    are not attachments, as ``EmailMessage.get_body`` chooses them; every other leaf part is an
    attachment (an S/MIME or OpenPGP signature is not: it becomes ``security``). ``html`` is
    not sanitized: that is the caller's job. ``defects`` lists what was wrong but tolerated, for
    the log. ``limits`` bound the work (``max_parts``/``max_depth`` override two of them);
    ``trust_anchors`` is the CA file S/MIME signers are checked against (None: OpenSSL's).

    CPU-bound and blocking (S/MIME runs ``openssl``): call it off the event loop.
    """
    limits = limits or ParseLimits()
    if max_parts is not None or max_depth is not None:
        limits = replace(
            limits,
            max_parts=limits.max_parts if max_parts is None else max_parts,
            max_depth=limits.max_depth if max_depth is None else max_depth,
        )
    budget = Budget(limits)
    try:
        parser = CountingFeedParser(budget, _POLICY)
        for start in range(0, len(raw), _FEED_CHUNK):
            parser.feed(raw[start : start + _FEED_CHUNK])
        msg = parser.close()
        return _read(msg, raw, budget, trust_anchors)
    except MalformedMail:
        raise
    except LimitExceeded as exc:
        raise MalformedMail(str(exc)) from None
    except RecursionError:  # a limit set far too high: the parser recurses per nesting level
        raise MalformedMail("MIME nesting too deep to read") from None
    except Exception as exc:  # a stdlib bug on hostile input must not escape as a crash
        raise MalformedMail(f"the mail cannot be read ({type(exc).__name__})") from exc
