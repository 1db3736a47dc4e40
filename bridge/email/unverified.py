"""How a mail from an unverified sender looks in a room (``unverified_mail: mark``).

It comes from a ghost of its own, not the verified sender's: the remote id is
``unverified:<address>`` (no mail address contains a colon, so no sender can name that ghost),
and the ghost's display name always ends in " (unverified)". The text starts with a warning
that names the claimed address and why it is not verified. The sender chooses the display name
and the text, never the ghost or the warning; characters that reorder or hide text (Unicode
format characters) are taken out of the name, so it cannot swallow the suffix.
"""

from __future__ import annotations

import html
import unicodedata

from bridge.core import MessagePart, PartID, RemoteUserID

PAYLOAD_KEY = "unverified"
"""Key of the stored mail's payload holding why its sender is not verified; absent: verified
(mail stored before this key existed passed the verification that refused the rest)."""
PREFIX = "unverified:"
SUFFIX = " (unverified)"
MAX_NAME = 80


def sender_id(address: str, *, verified: bool) -> RemoteUserID:
    return RemoteUserID(address if verified else PREFIX + address)


def display_name(name: str, address: str, *, verified: bool) -> str:
    """``Name (address)``, or the address alone, with the suffix when not verified."""
    clean = "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in name
        if unicodedata.category(c) != "Cf"
    )
    clean = " ".join(clean.split())[:MAX_NAME]
    shown = f"{clean} ({address})" if clean else address
    return shown if verified else shown + SUFFIX


def warning(address: str, reason: str) -> tuple[str, str]:
    """(text, HTML) of the warning above an unverified mail."""
    text = (
        f"⚠️ Unverified sender: this mail says it is from {address}, but that could not be"
        f" confirmed ({reason}). It may be forged; do not trust links or requests in it."
    )
    return text, f"<p><strong>{html.escape(text)}</strong></p>"


def mark(parts: list[MessagePart], address: str, reason: str) -> None:
    """Put the warning at the top of the mail's first event (its text, or a notice of its own
    when the mail is only attachments)."""
    text, rich = warning(address, reason)
    first = parts[0] if parts else None
    if first is None or first.media is not None:
        notice = MessagePart(text=text, html=rich, notice=True)
        if first is not None:  # the warning becomes the message's own event (replies point here)
            notice.extra, first.extra = first.extra, {}
            first.part_id = PartID("unverified-first")
        parts.insert(0, notice)
        return
    body = first.text or ""
    first.text = f"{text}\n\n{body}" if body else text
    if first.html is not None:
        first.html = rich + first.html
    elif body:
        first.html = rich + "<p>" + html.escape(body).replace("\n", "<br>") + "</p>"
