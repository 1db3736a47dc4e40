"""Matrix content → XMPP message bodies (XEP-0393 styling for formatting)."""

from __future__ import annotations

from bridge.core import MatrixEdit, MatrixMessage
from bridge.xmpp.protocol.styling import html_to_styling

RETRACTION_FALLBACK = (
    "This person attempted to retract a previous message, but it's unsupported by your client."
)


def _text(body: str, html: str | None) -> str:
    return html_to_styling(html) if html else body


def body(msg: MatrixMessage) -> str:
    text = _text(msg.body, msg.html)
    return f"/me {text}" if msg.msgtype == "m.emote" else text


def edit_body(edit: MatrixEdit) -> str:
    return _text(edit.body, edit.html)
