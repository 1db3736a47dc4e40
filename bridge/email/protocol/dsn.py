"""Delivery status notifications (RFC 3464): which of our mails bounced, for whom, and why.

A DSN is a ``multipart/report; report-type=delivery-status`` with a human-readable part, a
``message/delivery-status`` part (one block of per-message fields, then one block per
recipient) and the original message or its headers (``message/rfc822`` or
``text/rfc822-headers``). Only recipients with ``Action: failed`` make a bounce: a ``delayed``
DSN says the MTA is still trying, and ``delivered``/``relayed``/``expanded`` are success reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.policy import Policy
from email.utils import collapse_rfc2231_value

from .addresses import InvalidAddress, normalize_address, parse_message_ids
from .charsets import decode_text

_STATUS_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")


@dataclass(slots=True)
class Bounce:
    """A failed delivery of one of our mails, read from a DSN.

    ``status`` and ``diagnostic`` are those of the first failed recipient (``5.1.1``,
    ``550 5.1.1 <bob@example.org>: Recipient address rejected: …``); ``recipients`` are all
    failed recipients, normalized where they are valid addresses; ``original_recipients``
    their ``Original-Recipient`` where the MTA gave one (the address as the sender wrote it,
    before aliases and forwarding rewrote ``Final-Recipient``).
    """

    original_message_id: str | None
    status: str
    diagnostic: str
    recipients: list[str] = field(default_factory=list)
    original_recipients: list[str] = field(default_factory=list)


def _one_line(value: str | None) -> str:
    return " ".join((value or "").split())


def _typed_value(value: str | None) -> str:
    """``rfc822; bob@example.org`` → ``bob@example.org`` (RFC 3464 address/diagnostic types)."""
    text = _one_line(value)
    kind, semicolon, rest = text.partition(";")
    return rest.strip() if semicolon and kind and " " not in kind.strip() else text


def _sub_messages(part: Message) -> list[Message]:
    """What the parser made of a multipart or message/* part; nothing for a leaf (whose
    ``get_payload()`` would decode it, and can raise doing so)."""
    return [m for m in part.get_payload() if isinstance(m, Message)] if part.is_multipart() else []


def _field_blocks(part: Message, policy: Policy) -> Iterator[Message]:
    """The header blocks of a delivery-status part.

    The stdlib splits ``message/delivery-status`` into one sub-message per block; it parses
    the UTF-8 ``message/global-delivery-status`` (RFC 6533) as one message whose body holds
    the remaining blocks, which are split here.
    """
    for block in _sub_messages(part):
        yield block
        rest = block.get_payload(decode=True)
        if not block.is_multipart() and isinstance(rest, bytes) and rest.strip():
            for chunk in re.split(r"\r?\n[ \t]*\r?\n", decode_text(rest.strip(), "utf-8")):
                yield HeaderParser(policy=policy).parsestr(chunk)


def _original_message_id(part: Message, policy: Policy) -> str | None:
    if part.get_content_type() == "text/rfc822-headers":
        data = part.get_payload(decode=True)
        raw = data if isinstance(data, bytes) else b""
        headers = HeaderParser(policy=policy).parsestr(decode_text(raw, part.get_content_charset()))
    else:
        inner = _sub_messages(part)
        if not inner:
            return None
        headers = inner[0]
    ids = parse_message_ids(_one_line(headers.get("Message-ID")))
    return ids[0] if ids else None


def _recipient(value: str | None) -> str:
    address = _typed_value(value).strip("<>")
    try:
        return normalize_address(address)
    except InvalidAddress:
        return address


def is_delivery_report(msg: Message) -> bool:
    """Whether ``msg`` is a ``multipart/report; report-type=delivery-status``."""
    report_type = msg.get_param("report-type")
    if isinstance(report_type, tuple):
        report_type = collapse_rfc2231_value(report_type)
    return (
        msg.get_content_type() == "multipart/report"
        and isinstance(report_type, str)
        and report_type.strip().lower() == "delivery-status"
    )


def read_bounce(msg: Message, policy: Policy) -> Bounce | None:
    """The bounce ``msg`` reports, or ``None`` if it is no DSN or nothing failed.

    ``policy`` is the one ``msg`` was parsed with, used for the nested header blocks.
    """
    if not is_delivery_report(msg):
        return None
    failed: list[Message] = []
    message_id = None
    for part in _sub_messages(msg):
        content_type = part.get_content_type()
        if content_type in _STATUS_PARTS and not failed:
            failed = [
                block
                for block in _field_blocks(part, policy)
                if _one_line(block.get("Action")).lower().startswith("failed")
            ]
        elif content_type in ("message/rfc822", "message/global", "text/rfc822-headers"):
            message_id = message_id or _original_message_id(part, policy)
    if not failed:
        return None
    first = failed[0]
    status = _STATUS_CODE.search(_one_line(first.get("Status")))
    return Bounce(
        original_message_id=message_id,
        status=status.group(0) if status else "",
        diagnostic=_typed_value(first.get("Diagnostic-Code")),
        recipients=[_recipient(block.get("Final-Recipient")) for block in failed],
        original_recipients=[
            _recipient(block.get("Original-Recipient"))
            for block in failed
            if block.get("Original-Recipient")
        ],
    )
