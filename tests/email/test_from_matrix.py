"""A Matrix message as a mail from the portal's address."""

from __future__ import annotations

import email
import email.policy
from typing import Any

from bridge.core import MatrixMessage, Media, RemoteChatID
from bridge.email.from_matrix import Parent, compose_from_matrix
from bridge.email.ids import NETWORK
from bridge.email.recipients import Delivery
from bridge.portal.models import Portal

PORTAL = "room.abcdefghijklmnop@mail.test"


def _msg(body: str, **kwargs: Any) -> MatrixMessage:
    portal = Portal(network=NETWORK, remote_id=RemoteChatID(PORTAL), mxid="!room:hub.test")
    fields: dict[str, Any] = {"sender_name": "Alice"} | kwargs
    return MatrixMessage(
        portal=portal, event_id="$event", sender="@alice:hub.test", timestamp=0, body=body, **fields
    )


async def _compose(msg: MatrixMessage, parent: Parent | None = None) -> email.message.EmailMessage:
    out = await compose_from_matrix(
        msg, from_address=PORTAL, deliveries=[Delivery(to=["bob@example.org"])],
        message_id="<x@mail.test>", parent=parent, loop_marker="mail.test",
    )  # fmt: skip
    parsed = email.message_from_bytes(out.mails[0].as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


async def test_a_new_message_starts_a_conversation_named_after_its_first_line() -> None:
    mail = await _compose(_msg("Budget meeting\nTuesday?"))
    assert mail["Subject"] == "Budget meeting"
    assert mail["From"].addresses[0].display_name == "Alice"
    assert mail["From"].addresses[0].addr_spec == PORTAL
    assert mail["In-Reply-To"] is None and mail["X-Pontis-Loop"] == "mail.test"


async def test_a_reply_answers_the_mail_it_points_at() -> None:
    parent = Parent(message_id="<p@example.org>", subject="Re: Budget", references=["<r@x>"])
    mail = await _compose(_msg("Yes", reply_to_text="Tuesday?"), parent)
    assert mail["Subject"] == "Re: Budget"
    assert mail["In-Reply-To"] == "<p@example.org>"
    assert mail["References"].split() == ["<r@x>", "<p@example.org>"]
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None and "> Tuesday?" in body.get_content()


async def test_a_display_name_cannot_add_headers() -> None:
    mail = await _compose(_msg("Hi", sender_name="Mallory\r\nBcc: victim@example.org"))
    assert mail["Bcc"] is None
    assert "victim@example.org" not in [a.addr_spec for a in mail["To"].addresses]


async def test_notices_are_marked_automatic_and_emotes_name_the_sender() -> None:
    notice = await _compose(_msg("Build failed", msgtype="m.notice"))
    assert notice["Auto-Submitted"] == "auto-generated"
    emote = await _compose(_msg("waves", msgtype="m.emote"))
    body = emote.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "* Alice waves"


async def test_hostile_html_from_matrix_is_cleaned_for_mail_readers() -> None:
    mail = await _compose(_msg("hi", html='<b onclick="x()">hi</b><script>alert(1)</script>'))
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    content = html.get_content()
    assert "<b>hi</b>" in content and "script" not in content and "onclick" not in content


async def test_a_file_becomes_an_attachment() -> None:
    media = Media(mimetype="image/png", filename="chart.png", data=b"\x89PNG")
    mail = await _compose(_msg("chart.png", msgtype="m.image", media=media))
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "chart.png" and attachment.get_content() == b"\x89PNG"
    assert mail["Subject"] == "Alice sent chart.png"
