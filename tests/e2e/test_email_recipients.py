"""Who receives a room's mail, against a real Postfix, Dovecot and Synapse: an answer reaches
only the people of its thread, a new conversation each contact alone, nobody sees another
citizen's address, and removed, automatic and bounced addresses get nothing.

What each person received is read from their Dovecot mailbox over IMAP; contacts are managed
with the bot command a room member would send.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_email import PASSWORD, _body, bridged_room, mail, person, send

pytestmark = pytest.mark.e2e
SETTLE = 3.0
"""Seconds to let Postfix deliver anything else before checking that a mailbox got nothing
more (each check follows a mail that went out in the same or a later transaction)."""


async def room_address(hub: Hub, alice: MatrixUser, name: str) -> tuple[str, str]:
    room_id = await bridged_room(hub, alice, name)
    reply = await alice.wait_for(lambda e: "now bridged" in _body(e), room_id=room_id)
    found = re.search(rf"{name}\.[a-z2-7]{{16}}@[a-z0-9.-]+", _body(reply))
    assert found, _body(reply)
    return room_id, found.group(0)


async def command_room(hub: Hub, alice: MatrixUser) -> str:
    """A room of Alice's with the bot, not a portal: where bot commands go."""
    room_id = await alice.create_room(name="Commands")
    await alice.invite(room_id, hub.bot)
    await alice.wait_for(lambda e: e.get("state_key") == hub.bot and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    await alice.wait_for(says("To bridge this room"), room_id=room_id)  # the bot's greeting
    return room_id


async def bot_says(alice: MatrixUser, room_id: str, command: str) -> str:
    mark = alice.mark()
    await alice.send_text(room_id, f"!pontis {command}")
    reply = await alice.wait_for(
        lambda e: e["content"].get("msgtype") == "m.notice", room_id=room_id, after=mark
    )
    return _body(reply)


def says(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: text in _body(event)


def shown(msg: EmailMessage) -> set[str]:
    """Every address a reader sees in the headers."""
    return {a.addr_spec for name in ("To", "Cc") if msg[name] for a in msg[name].addresses}


async def test_three_outsiders_an_answer_reaches_only_its_thread_and_nobody_sees_another(
    hub: Hub,
) -> None:
    anna, ben, cleo = person(hub, "anna"), person(hub, "ben"), person(hub, "cleo")
    alice = await hub.user("alice")
    room_id, address = await room_address(hub, alice, "desk")
    events = {}
    for who in (anna, ben, cleo):
        await send(hub, mail(who, address, f"Question from {who}", f"I am {who}"))
        events[who] = await alice.wait_for(says(f"I am {who}"), room_id=room_id)
    record = events[anna]["content"].get("fi.pontis.email.sha256", "")
    assert re.fullmatch(r"[0-9a-f]{64}", record), events[anna]["content"]

    # A Matrix reply to Ben's mail goes to Ben, and to Ben only.
    await alice.send_text(room_id, "Answer for Ben", reply_to=events[ben]["event_id"])
    answer = await hub.mail.wait_for_mail(ben, PASSWORD)
    assert shown(answer) == {ben} and answer["Subject"] == f"Re: Question from {ben}"

    # Writing made nobody a contact: a new conversation needs contacts, which members add.
    commands = await command_room(hub, alice)
    assert "no contacts" in await bot_says(alice, commands, f"email contacts {room_id} list")
    for who in (anna, cleo):
        assert "now receives" in await bot_says(alice, commands, f"email contacts {room_id} add {who}")  # fmt: skip
    await alice.send_text(room_id, "Opening hours change on Monday")
    for who in (anna, cleo):
        news = await hub.mail.wait_for_mail(who, PASSWORD)
        assert news["Subject"] == "Opening hours change on Monday"
        assert shown(news) == {who}  # each contact sees only themselves
    await asyncio.sleep(SETTLE)
    mailboxes = {who: await hub.mail.all_mail(who, PASSWORD) for who in (anna, ben, cleo)}
    assert [m["Subject"] for m in mailboxes[anna]] == ["Opening hours change on Monday"]
    assert [m["Subject"] for m in mailboxes[ben]] == [f"Re: Question from {ben}"]
    assert [m["Subject"] for m in mailboxes[cleo]] == ["Opening hours change on Monday"]
    for who, received in mailboxes.items():
        for msg in received:
            others = {anna, ben, cleo} - {who}
            assert not any(other in msg.as_string() for other in others), (who, msg.as_string())

    # contacts remove: Cleo gets nothing more.
    assert "no longer receives" in await bot_says(alice, commands, f"email contacts {room_id} remove {cleo}")  # fmt: skip
    await alice.send_text(room_id, "Second announcement")
    assert shown(await hub.mail.wait_for_mail(anna, PASSWORD)) == {anna}
    await asyncio.sleep(SETTLE)
    assert len(await hub.mail.all_mail(cleo, PASSWORD)) == 1


async def test_an_auto_reply_does_not_become_a_contact_or_a_recipient(hub: Hub) -> None:
    dora = person(hub, "dora")
    alice = await hub.user("alice")
    room_id, address = await room_address(hub, alice, "helpdesk")
    away = mail(dora, address, "Automatic reply: out of office", "I am away until Monday")
    away["Auto-Submitted"] = "auto-replied"
    await send(hub, away)
    event = await alice.wait_for(lambda e: "I am away" in _body(e), room_id=room_id)
    assert event["content"]["msgtype"] == "m.notice"
    commands = await command_room(hub, alice)
    assert "no contacts" in await bot_says(alice, commands, f"email contacts {room_id} list")
    mark = alice.mark()
    await alice.send_text(room_id, "Welcome back", reply_to=event["event_id"])
    refusal = await alice.wait_for(
        lambda e: e["content"].get("msgtype") == "m.notice" and "automatic" in _body(e),
        room_id=room_id, after=mark,
    )  # fmt: skip
    assert "Nobody receives this" in _body(refusal)
    await asyncio.sleep(SETTLE)
    assert await hub.mail.all_mail(dora, PASSWORD) == []


def _forged_dsn(room: str, original: str, recipient: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@forger.example\r\nTo: {room}\r\nSubject: Undelivered\r\n"
        "Message-ID: <forged-dsn@forger.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 moved, write to erik@evil.example from now on\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original}\r\n\r\n"
        "--b--\r\n"
    ).encode()


async def test_a_bounced_contact_stops_receiving_until_added_again(hub: Hub) -> None:
    erik = person(hub, "erik")
    gone = "gone-for-good@agency.test"  # no such mailbox: Postfix bounces to the room
    alice = await hub.user("alice")
    room_id, address = await room_address(hub, alice, "notices")
    commands = await command_room(hub, alice)
    for who in (erik, gone):
        await bot_says(alice, commands, f"email contacts {room_id} add {who}")
    mark = alice.mark()
    await alice.send_text(room_id, "First notice")
    first = await hub.mail.wait_for_mail(erik, PASSWORD)
    assert first["Subject"] == "First notice"
    # Each copy has its own bounce address (VERP), which only its recipient's server sees.
    assert f"{address.split('@')[0]}+b-" in str(first["Return-Path"])
    bounced = await alice.wait_for(
        lambda e: e["content"].get("msgtype") == "m.notice" and "no longer receives" in _body(e),
        room_id=room_id, after=mark, timeout=30,
    )  # fmt: skip
    assert gone in _body(bounced) and "status 5." in _body(bounced)
    # Erik knows the mail's Message-ID and that it went to him: a DSN he forges from <> to the
    # room's address, naming himself with words of his choosing, marks nobody and shows nothing.
    forged = _forged_dsn(address, str(first["Message-ID"]), erik)
    assert await hub.mail.send(forged, mail_from="", rcpt_to=[address]) == {}
    await asyncio.sleep(SETTLE)
    assert not [e for e in alice.events[mark:] if "evil.example" in _body(e)]
    listed = await bot_says(alice, commands, f"email contacts {room_id} list")
    assert f"`{gone}` — stopped:" in listed and f"`{erik}`" in listed
    assert f"`{erik}` — stopped" not in listed

    mark = alice.mark()
    await alice.send_text(room_id, "Second notice")
    assert (await hub.mail.wait_for_mail(erik, PASSWORD))["Subject"] == "Second notice"
    await asyncio.sleep(SETTLE)  # a second mail to the bounced address would bounce again
    assert not [
        e
        for e in alice.events[mark:]
        if e["room_id"] == room_id and "could not be delivered" in _body(e)
    ]
    await bot_says(alice, commands, f"email contacts {room_id} add {gone}")
    assert "stopped" not in await bot_says(alice, commands, f"email contacts {room_id} list")
