"""Email ↔ Matrix through the gateway, against a real Postfix, Dovecot and Synapse.

People at ``agency.test`` have Dovecot mailboxes and send through Postfix; Postfix hands mail
for the bridge's domain to the bridge over LMTP and relays the bridge's mail. The test's
"internet" is Postfix's SMTP port, and the header a DMARC milter would add on the agency's MX
is added by the sender here (``verified``), under the authserv-id the bridge trusts.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN, MAIL_AUTHSERV_ID, MAIL_DOMAIN, Hub
from tests.e2e.matrix_client import MatrixUser

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
PASSWORD = "mail-password"


def ghost_of(address: str) -> str:
    return "@email_" + address.replace("@", "=40") + f":{DOMAIN}"


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def person(hub: Hub, name: str) -> str:
    address = f"{name}{next(_names)}@agency.test"
    hub.mail.add_user(address, PASSWORD)
    return address


def mail(
    sender: str,
    to: str,
    subject: str,
    text: str,
    *,
    name: str = "",
    verified: bool = True,
    reply_to: EmailMessage | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>" if name else sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="agency.test")
    if reply_to is not None:
        msg["In-Reply-To"] = reply_to["Message-ID"]
        msg["References"] = " ".join(
            [*str(reply_to.get("References", "")).split(), reply_to["Message-ID"]]
        )
    if verified:
        domain = sender.split("@")[1]
        msg["Authentication-Results"] = (
            f"{MAIL_AUTHSERV_ID}; dkim=pass header.d={domain}; dmarc=pass header.from={domain}"
        )
    msg.set_content(text)
    return msg


async def send(hub: Hub, msg: EmailMessage) -> None:
    refused = await hub.mail.send(msg, mail_from=str(msg["From"].addresses[0].addr_spec),
                                  rcpt_to=[a.addr_spec for a in msg["To"].addresses])  # fmt: skip
    assert not refused, refused


async def dm_with(hub: Hub, alice: MatrixUser, address: str) -> str:
    """Alice opens a DM with ``address`` the way Element does: a room inviting its ghost."""
    room_id = await alice.create_room(invite=[ghost_of(address)], is_direct=True)
    await alice.wait_for(
        lambda e: (
            e["type"] == "m.room.member"
            and e.get("state_key") == ghost_of(address)
            and e["content"].get("membership") == "join"
        ),
        room_id=room_id,
    )
    return room_id


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None, msg
    return str(part.get_content())


async def test_a_dm_goes_out_as_mail_and_the_reply_comes_back_in_its_thread(hub: Hub) -> None:
    bob = person(hub, "bob")
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, bob)

    first = await alice.send_text(room_id, "Budget meeting\nCan we meet on Tuesday?")
    sent = await hub.mail.wait_for_mail(bob, PASSWORD)
    portal = sent["From"].addresses[0].addr_spec
    assert re.fullmatch(rf"alice\d*\.[a-z2-7]{{16}}@{re.escape(MAIL_DOMAIN)}", portal), portal
    assert sent["From"].addresses[0].display_name == alice.localpart.capitalize()
    assert sent["Subject"] == "Budget meeting"
    assert "Can we meet on Tuesday?" in text_of(sent)
    assert sent["Message-ID"] and alice.mxid not in str(sent)

    answer = mail(bob, portal, "Re: Budget meeting", "Tuesday works.\n\nOn Mon, 23 Nov 2026, Alice wrote:\n> Can we meet on Tuesday?\n",
                  name="Bob Martin", reply_to=sent)  # fmt: skip
    answer.replace_header("Content-Type", "text/plain; charset=utf-8")
    await send(hub, answer)
    event = await alice.wait_for(lambda e: "Tuesday works." in _body(e), room_id=room_id)
    assert event["sender"] == ghost_of(bob)
    relation = event["content"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread" and relation["event_id"] == first
    assert "> Can we meet" not in _body(event)  # the quote is folded away, not lost:
    assert "Can we meet on Tuesday?" in event["content"]["formatted_body"]
    assert (await alice.get_profile(ghost_of(bob)))["displayname"] == f"Bob Martin ({bob})"

    await alice.send_text(room_id, "See you then", thread_root=first, reply_to=event["event_id"])
    followup = await hub.mail.wait_for_mail(bob, PASSWORD)
    assert followup["Subject"] == "Re: Budget meeting"
    assert followup["In-Reply-To"] == answer["Message-ID"]
    assert str(sent["Message-ID"]) in str(followup["References"]).split()
    assert "See you then" in text_of(followup)


async def test_a_room_address_receives_mail_and_files_from_anyone_who_has_it(hub: Hub) -> None:
    carol = person(hub, "carol")
    alice = await hub.user("alice")
    room_id = await alice.create_room(name="Procurement")
    await alice.invite(room_id, hub.bot)
    await alice.wait_for(lambda e: e.get("state_key") == hub.bot and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    await alice.send_text(room_id, "!pontis bridge email procurement")
    reply = await alice.wait_for(lambda e: "now bridged" in _body(e), room_id=room_id)
    found = re.search(r"procurement\.[a-z2-7]{16}@" + re.escape(MAIL_DOMAIN), _body(reply))
    assert found, _body(reply)
    address = found.group(0)

    offer = mail(carol, address, "Tender 42", "Our offer is attached.", name="Carol Dupont")
    pdf = b"%PDF-1.4 offer " + bytes(range(256))
    offer.add_attachment(pdf, maintype="application", subtype="pdf", filename="offer.pdf")
    await send(hub, offer)
    text = await alice.wait_for(lambda e: "Our offer is attached." in _body(e), room_id=room_id)
    assert text["sender"] == ghost_of(carol)
    assert "<strong>Tender 42</strong>" in text["content"]["formatted_body"]
    file = await alice.wait_for(lambda e: e["content"].get("msgtype") == "m.file", room_id=room_id)
    assert file["content"]["body"] == "offer.pdf"
    assert await alice.download(file["content"]["url"]) == pdf

    await alice.send_text(room_id, "Thank you, received.", reply_to=text["event_id"])
    answer = await hub.mail.wait_for_mail(carol, PASSWORD)
    assert answer["To"].addresses[0].addr_spec == carol
    assert answer["Subject"] == "Re: Tender 42"
    assert answer["In-Reply-To"] == offer["Message-ID"]


async def test_inviting_a_person_s_ghost_into_a_bridged_room_adds_them_as_a_recipient(
    hub: Hub,
) -> None:
    ivan, judy = person(hub, "ivan"), person(hub, "judy")
    alice = await hub.user("alice")
    room_id = await bridged_room(hub, alice, "board")
    await alice.invite(room_id, ghost_of(ivan))
    await alice.wait_for(lambda e: e.get("state_key") == ghost_of(ivan) and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    await alice.invite(room_id, f"@email_no-domain:{DOMAIN}")
    refusal = await alice.wait_for(lambda e: e.get("state_key") == f"@email_no-domain:{DOMAIN}" and e["content"].get("membership") == "leave", room_id=room_id)  # fmt: skip
    assert "not a mail address" in refusal["content"]["reason"]
    await alice.send_text(room_id, "Agenda for Thursday")
    received = await hub.mail.wait_for_mail(ivan, PASSWORD)
    assert received["Subject"] == "Agenda for Thursday"
    assert [a.addr_spec for a in received["To"].addresses] == [ivan]
    assert not await hub.mail.all_mail(judy, PASSWORD)


async def bridged_room(hub: Hub, alice: MatrixUser, name: str) -> str:
    """A room of Alice's bridged to email with ``!pontis bridge email <name>``."""
    room_id = await alice.create_room(name=name.capitalize())
    await alice.invite(room_id, hub.bot)
    await alice.wait_for(lambda e: e.get("state_key") == hub.bot and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    await alice.send_text(room_id, f"!pontis bridge email {name}")
    await alice.wait_for(lambda e: "now bridged" in _body(e), room_id=room_id)
    return room_id


async def test_a_file_from_matrix_arrives_as_an_attachment(hub: Hub) -> None:
    dave = person(hub, "dave")
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, dave)
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    mxc = await alice.upload(data, "image/png", "chart.png")
    await alice.send_event(room_id, "m.room.message", {"msgtype": "m.image", "body": "chart.png", "url": mxc,
                                                       "info": {"mimetype": "image/png", "size": len(data)}})  # fmt: skip
    sent = await hub.mail.wait_for_mail(dave, PASSWORD)
    attachments = list(sent.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["chart.png"]
    assert attachments[0].get_content() == data


async def test_hostile_html_is_cleaned_before_it_reaches_the_room(hub: Hub) -> None:
    erin = person(hub, "erin")
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, erin)
    await alice.send_text(room_id, "Hello Erin")
    sent = await hub.mail.wait_for_mail(erin, PASSWORD)
    evil = mail(
        erin, sent["From"].addresses[0].addr_spec, "Re: Hello Erin", "plain part", reply_to=sent
    )
    evil.add_alternative(
        '<p onclick="steal()">Hi <b>there</b><script>alert(1)</script>'
        '<img src="https://tracker.example/p.gif"><a href="javascript:x()">link</a></p>',
        subtype="html",
    )
    await send(hub, evil)
    event = await alice.wait_for(lambda e: "plain part" in _body(e), room_id=room_id)
    html = event["content"]["formatted_body"]
    assert "<b>there</b>" in html
    for bad in ("script", "onclick", "tracker.example", "javascript:"):
        assert bad not in html, html


async def test_mail_to_an_address_that_is_not_a_room_is_refused_at_rcpt(hub: Hub) -> None:
    guess = f"procurement.aaaaaaaaaaaaaaaa@{MAIL_DOMAIN}"
    answer = await lmtp_answer(hub, mail("x@agency.test", guess, "Hi", "guessing"))
    assert answer.startswith("550 5.1.1"), answer


async def test_an_unverified_or_forged_sender_never_reaches_the_room(hub: Hub) -> None:
    frank = person(hub, "frank")
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, frank)
    await alice.send_text(room_id, "Hello Frank")
    portal = (await hub.mail.wait_for_mail(frank, PASSWORD))["From"].addresses[0].addr_spec
    mark = alice.mark()

    unverified = mail(frank, portal, "Hi", "no verdict at all", verified=False)
    forged = mail(frank, portal, "Hi", "forged verdict", verified=False)
    forged["Authentication-Results"] = "evil.example; dmarc=pass header.from=agency.test"
    for msg in (unverified, forged):
        answer = await lmtp_answer(hub, msg)
        assert answer.startswith("550 5.7.1"), answer
    await send(hub, mail(frank, portal, "Hi", "a verified one"))
    await alice.wait_for(lambda e: "a verified one" in _body(e), room_id=room_id, after=mark)
    assert not alice.seen(lambda e: "verdict" in _body(e), room_id=room_id)


async def test_a_bounce_becomes_a_notice_for_the_sender(hub: Hub) -> None:
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, "nobody@agency.test")
    event_id = await alice.send_text(room_id, "Is anybody there?")
    notice = await alice.wait_for(
        lambda e: e["content"].get("msgtype") == "m.notice" and "could not be delivered" in _body(e),
        room_id=room_id, timeout=30,
    )  # fmt: skip
    assert "nobody@agency.test" in _body(notice)
    assert event_id


async def test_the_bridge_s_own_mail_coming_back_is_dropped(hub: Hub) -> None:
    gina = person(hub, "gina")
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, gina)
    await alice.send_text(room_id, "Original")
    sent = await hub.mail.wait_for_mail(gina, PASSWORD)
    portal = sent["From"].addresses[0].addr_spec
    mark = alice.mark()
    looped = mail(gina, portal, "Fwd", "looped text")
    looped["X-Pontis-Loop"] = MAIL_DOMAIN
    assert (await lmtp_answer(hub, looped)).startswith("250")
    await send(hub, mail(gina, portal, "Next", "after the loop"))
    await alice.wait_for(lambda e: "after the loop" in _body(e), room_id=room_id, after=mark)
    assert not alice.seen(lambda e: "looped text" in _body(e), room_id=room_id)


async def test_mail_arriving_while_the_bridge_is_down_is_delivered_once_it_is_back(
    hub: Hub,
) -> None:
    hana = person(hub, "hana")
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, hana)
    await alice.send_text(room_id, "Ping")
    portal = (await hub.mail.wait_for_mail(hana, PASSWORD))["From"].addresses[0].addr_spec
    hub.bridge.kill()
    try:
        await send(hub, mail(hana, portal, "Re: Ping", "sent during the outage"))
        await asyncio.sleep(1)
        assert hub.mail.queue(), "Postfix should hold the mail while the bridge is down"
    finally:
        await hub.bridge.start(hub.as_port)
    hub.mail.flush()
    await alice.wait_for(
        lambda e: "sent during the outage" in _body(e), room_id=room_id, timeout=30
    )
    await asyncio.sleep(1)
    assert len(alice.seen(lambda e: "sent during the outage" in _body(e), room_id=room_id)) == 1


async def lmtp_answer(hub: Hub, msg: EmailMessage) -> str:
    """The bridge's own LMTP answer for ``msg``: to ``RCPT`` if it refuses the recipient, else
    to ``DATA`` (what Postfix would log, and bounce with)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.mail.bridge_lmtp_port)

    async def command(line: bytes) -> str:
        if line:
            writer.write(line + b"\r\n")
        while True:
            answer = (await reader.readline()).decode().rstrip()
            if answer[3:4] != "-":
                return answer

    try:
        await command(b"")  # greeting
        await command(b"LHLO test.agency")
        await command(b"MAIL FROM:<%s>" % str(msg["From"].addresses[0].addr_spec).encode())
        answer = await command(b"RCPT TO:<%s>" % msg["To"].addresses[0].addr_spec.encode())
        if not answer.startswith("250"):
            return answer
        await command(b"DATA")
        data = re.sub(rb"(?m)^\.", b"..", msg.as_bytes().replace(b"\n", b"\r\n"))
        return await command(data + b"\r\n.")
    finally:
        writer.close()
