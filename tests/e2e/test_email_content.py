"""What a reader sees of a mail, through real Postfix, the bridge and Synapse: an inline image
in its place in the text, every one of three attachments, an S/MIME signature's status."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import pytest

from bridge.core import escape_localpart
from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.test_email import bridged_room, ghost_of, mail, person, send
from tests.email.smime import signed_mail

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(120))


def _content(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event.get("content", {}))


async def test_an_inline_image_arrives_in_its_place_in_the_text(hub: Hub) -> None:
    carol = person(hub, "carol")
    alice = await hub.user("alice")
    room_id = await bridged_room(hub, alice, "design")
    address = await _address(alice, room_id)
    msg = mail(carol, address, "Logo draft", "Logo draft attached inline.")
    msg.add_alternative(
        '<p>Before the logo.</p><p><img src="cid:logo@agency.test" alt="logo"></p>'
        "<p>After the logo.</p>",
        subtype="html",
    )
    msg.get_payload()[1].add_related(
        PNG, "image", "png", cid="<logo@agency.test>", filename="logo.png"
    )
    await send(hub, msg)
    event = await alice.wait_for(
        lambda e: "Before the logo" in _content(e).get("formatted_body", ""), room_id=room_id
    )
    html = _content(event)["formatted_body"]
    found = re.search(r'<img[^>]*src="(mxc://[^"]+)"', html)
    assert found, html
    assert html.index("Before the logo") < found.start() < html.index("After the logo")
    assert await alice.download(found.group(1)) == PNG
    assert event["sender"] == ghost_of(carol)


async def test_a_mail_with_three_attachments_arrives_with_all_three(hub: Hub) -> None:
    dan = person(hub, "dan")
    alice = await hub.user("alice")
    room_id = await bridged_room(hub, alice, "files")
    address = await _address(alice, room_id)
    msg = mail(dan, address, "Three files", "The three documents.")
    files = {"minutes.pdf": b"%PDF-1.4 minutes", "budget.csv": b"a,b\r\n1,2\r\n", "photo.png": PNG}
    msg.add_attachment(
        files["minutes.pdf"], maintype="application", subtype="pdf", filename="minutes.pdf"
    )
    msg.add_attachment(
        files["budget.csv"], maintype="application", subtype="octet-stream", filename="budget.csv"
    )
    msg.add_attachment(files["photo.png"], maintype="image", subtype="png", filename="photo.png")
    await send(hub, msg)
    await alice.wait_for(
        lambda e: "The three documents." in _content(e).get("body", ""), room_id=room_id
    )
    got: dict[str, bytes] = {}
    for _ in files:
        event = await alice.wait_for(
            lambda e: (
                _content(e).get("msgtype") in ("m.file", "m.image")
                and _content(e).get("body") in files
                and _content(e).get("body") not in got
            ),
            room_id=room_id,
        )
        got[_content(event)["body"]] = await alice.download(_content(event)["url"])
    assert got == files


async def test_an_smime_signed_mail_shows_its_signature_status(hub: Hub) -> None:
    alice = await hub.user("alice")
    room_id = await bridged_room(hub, alice, "contracts")
    address = await _address(alice, room_id)
    sender = "sam@agency.test"  # the address in the test CA's certificate for Sam Signer
    verification = _verification_headers(mail(sender, address, "x", "x"))
    signed = signed_mail("The signed contract text.", sender=sender, to=address,
                         subject="Signed contract", headers=verification)  # fmt: skip
    refused = await hub.mail.send(signed, mail_from=sender, rcpt_to=[address])
    assert not refused, refused
    event = await alice.wait_for(
        lambda e: "The signed contract text." in _content(e).get("body", ""), room_id=room_id
    )
    body = _content(event)["body"]
    assert "S/MIME signature valid; signed by Sam Signer, Agency Test <sam@agency.test>" in body
    assert "S/MIME signature valid" in _content(event)["formatted_body"]

    tampered = signed_mail("Pay 100 EUR.", sender=sender, to=address, subject="Invoice",
                           headers=verification).replace(b"Pay 100 EUR.", b"Pay 900 EUR.")  # fmt: skip
    assert not await hub.mail.send(tampered, mail_from=sender, rcpt_to=[address])
    event = await alice.wait_for(
        lambda e: "Pay 900 EUR." in _content(e).get("body", ""), room_id=room_id
    )
    assert "S/MIME signature INVALID" in _content(event)["body"]


def _verification_headers(template: EmailMessage) -> str:
    """The headers the test's "MX" adds to a verified mail (see test_email.mail)."""
    return "".join(
        f"{name}: {value}\n"
        for name, value in template.items()
        if name.lower() in ("authentication-results", "arc-authentication-results")
    )


async def _address(alice: Any, room_id: str) -> str:
    event = await alice.wait_for(
        lambda e: "now bridged" in _content(e).get("body", ""), room_id=room_id
    )
    found = re.search(r"[a-z0-9-]+\.[a-z2-7]{16}@[a-z0-9.-]+", _content(event)["body"])
    assert found, event
    return found.group(0)


async def test_a_sender_with_an_international_address_reaches_the_room(hub: Hub) -> None:
    """SMTPUTF8 end to end inbound: Postfix takes it, relays it over LMTP with SMTPUTF8."""
    alice = await hub.user("alice")
    room_id = await bridged_room(hub, alice, "international")
    address = await _address(alice, room_id)
    sender = "jürgen.müller@agency.test"
    msg = mail(sender, address, "Grüße", "Grüße aus München.", name="Jürgen Müller")
    refused = await hub.mail.send(msg, mail_from=sender, rcpt_to=[address])
    assert not refused, refused
    event = await alice.wait_for(
        lambda e: "Grüße aus München." in _content(e).get("body", ""), room_id=room_id
    )
    ghost = f"@email_{escape_localpart(sender)}:{DOMAIN}"  # the UTF-8 bytes escaped, =c3=bc
    assert event["sender"] == ghost
    assert (await alice.get_profile(ghost))["displayname"] == f"Jürgen Müller ({sender})"
