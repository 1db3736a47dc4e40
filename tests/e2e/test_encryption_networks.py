"""End-to-end encryption with email and Teams on the other side: a Synapse that encrypts every
room, a bridge with encryption on, and matrix-nio as the Matrix user's client. What a user can
check: messages reach them decrypted, and what they send encrypted reaches mail and Teams as
readable text and intact files."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from typing import Any

import nio
import pytest

from tests.e2e.conftest import MAIL_DOMAIN, Hub
from tests.e2e.nio_user import EncryptedUser
from tests.e2e.test_email import PASSWORD, ghost_of, mail, person, send, text_of
from tests.e2e.test_teams import ghost

pytestmark = pytest.mark.e2e
_chats = itertools.count(1)
ENDS_AT_HUB = "encrypted between your devices and the Pontis hub"


def _containing(text: str) -> Callable[[nio.Event], bool]:
    return lambda e: text in (getattr(e, "body", None) or "")


async def _dm_with(hub: Hub, user: EncryptedUser, address: str) -> str:
    """An encrypted DM with ``address``'s ghost, opened as Element would; ready once the hub's
    notice of where encryption ends is in the room (the bot has joined and can decrypt)."""
    room_id = await user.create_dm(ghost_of(address))
    await user.wait_for_member(room_id, ghost_of(address))
    notice = await user.wait_for_message(room_id, _containing(ENDS_AT_HUB), timeout=30)
    assert user.was_encrypted(notice) and notice.sender == hub.bot
    return room_id


async def test_mail_both_ways_in_an_encrypted_dm(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    bob = person(hub, "bob")
    alice = await hub.encrypted_user("alice")
    room_id = await _dm_with(hub, alice, bob)
    assert await alice.room_is_encrypted(room_id)

    await alice.send_text(room_id, "Budget meeting\nCan we meet on Tuesday?")
    sent = await hub.mail.wait_for_mail(bob, PASSWORD, timeout=20)
    portal = sent["From"].addresses[0].addr_spec
    assert portal.endswith(f"@{MAIL_DOMAIN}"), portal
    assert sent["Subject"] == "Budget meeting"
    assert "Can we meet on Tuesday?" in text_of(sent)
    assert "m.megolm" not in sent.as_string() and "ciphertext" not in sent.as_string()

    answer = mail(bob, portal, "Re: Budget meeting", "Tuesday works.", name="Bob Martin",
                  reply_to=sent)  # fmt: skip
    await send(hub, answer)
    got = await alice.wait_for_message(room_id, _containing("Tuesday works."), timeout=30)
    assert alice.was_encrypted(got), "the ghost's message arrived in plain text"
    assert got.sender == ghost_of(bob)
    assert not alice.undecryptable(room_id)


async def test_an_encrypted_file_reaches_the_mail_recipient_intact(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    dave = person(hub, "dave")
    alice = await hub.encrypted_user("alice")
    room_id = await _dm_with(hub, alice, dave)
    data = b"%PDF-1.4 confidential " + bytes(range(256)) * 4
    await alice.send_file(room_id, data, "report.pdf", "application/pdf")
    sent = await hub.mail.wait_for_mail(dave, PASSWORD, timeout=20)
    attachments = list(sent.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["report.pdf"], sent
    assert attachments[0].get_content() == data


# --- Teams ---------------------------------------------------------------------------------


async def _teams_login(hub: Hub, user: EncryptedUser, first_name: str) -> str:
    """``login teams`` in an (encrypted) management room; the device code is approved in the
    emulator as a person would in their browser."""
    room = await user.create_dm(hub.bot)
    welcome = await user.wait_for_message(room, _containing("Pontis bridge bot"), timeout=30)
    assert user.was_encrypted(welcome), "the bot answered in plain text in an encrypted room"
    mark = user.mark()
    await user.send_text(room, "login teams")
    prompt = await user.wait_for_message(room, _containing("enter the code"), 30, after=mark)
    code = re.search(r"\*\*(\S+)\*\*", prompt.body)
    assert code is not None, prompt.body
    await hub.graph.control(
        "POST",
        "/devicecodes/approve",
        {"userCode": code.group(1), "user": hub.graph.user(first_name)["id"]},
    )
    mark = user.mark()
    await user.send_text(room, "done")
    done = await user.wait_for_message(room, _containing("Logged in to Teams as"), 30, after=mark)
    assert user.was_encrypted(done)
    return room


async def _teams_message(hub: Hub, chat: str, predicate: Any, what: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        found = [m for m in await hub.graph.messages(chat) if predicate(m)]
        if found:
            return found[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"Teams never showed {what}: {await hub.graph.messages(chat)}")
        await asyncio.sleep(0.2)


async def test_teams_both_ways_in_an_encrypted_portal(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    adele = await hub.encrypted_user("adele")
    management = await _teams_login(hub, adele, "adele")
    assert await adele.room_is_encrypted(management)

    chat = await hub.graph.new_chat(f"Secret launch {next(_chats)}", "adele", "alex")
    await hub.graph.post_as("alex", chat, "<p>Hello <b>Matrix</b>, secretly</p>")
    room_id = await adele.wait_for_invite(timeout=30)
    got = await adele.wait_for_message(room_id, "Hello Matrix, secretly", timeout=30)
    assert adele.was_encrypted(got), "the ghost's message arrived in plain text"
    assert got.sender == ghost(hub, "alex")
    assert await adele.room_is_encrypted(room_id)

    await adele.send_text(room_id, "Hi Alex, encrypted from Matrix")
    sent = await _teams_message(
        hub, chat, lambda m: "Hi Alex, encrypted from Matrix" in m["body"]["content"], "the reply"
    )
    assert sent["from"]["user"]["id"] == hub.graph.user("adele")["id"]
