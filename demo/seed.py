"""A conversation on each network that reaches the demo user, seeded the way people would start
them: an XMPP contact writes, the demo user mails a person and gets an answer, and a Teams
colleague posts in a chat of the demo user's (who has logged in to Teams through the bridge bot).

Every step waits for what a user would see (the decrypted message in the right room), so a seed
that returns has proved each network's path into Matrix once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import nio

from demo.stack import DOMAIN, MAIL_DOMAIN, Stack
from tests.e2e.hub import XMPP_COMPONENT
from tests.e2e.mail import AGENCY_DOMAIN
from tests.e2e.nio_user import EncryptedUser
from tests.e2e.xmpp_client import XmppUser

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"
XMPP_NAME, XMPP_PASSWORD = "anna", "anna-pw"
MAIL_PERSON, MAIL_PASSWORD = f"bob@{AGENCY_DOMAIN}", "bob-pw"
TEAMS_LOGIN, TEAMS_COLLEAGUE = "adele", "alex"
"""The demo user logs in to Teams as Adele Vance; Alex Wilber writes to her."""
TIMEOUT = 60.0
ENDS_AT_HUB = "the Pontis hub"


def containing(text: str) -> Callable[[nio.Event], bool]:
    return lambda event: text in str(getattr(event, "body", None) or "")


def xmpp_jid_of(mxid: str) -> str:
    """The JID under which a Matrix user is reachable from XMPP (XEP-0106 escaping)."""
    local, server = mxid[1:].split(":", 1)
    return f"{local}\\3a{server}@{XMPP_COMPONENT}"


def ghost_of(network: str, remote: str) -> str:
    return f"@{network}_{remote.replace('@', '=40')}:{DOMAIN}"


def mail_from(
    sender: str, to: str, subject: str, text: str, *, reply_to: EmailMessage | None = None
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Bob Martin <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=AGENCY_DOMAIN)
    if reply_to is not None:
        msg["In-Reply-To"] = reply_to["Message-ID"]
        msg["References"] = reply_to["Message-ID"]
    msg.set_content(text)
    return msg


@dataclass
class Conversations:
    """The seeded rooms and the people at the other end (kept logged in for the tour)."""

    demo: EncryptedUser
    anna: XmppUser
    xmpp_room: str
    mail_room: str
    mail_portal: str
    """The address that reaches the demo user's DM with Bob (Reply-To of the demo's mails)."""
    last_mail: EmailMessage
    teams_room: str
    teams_chat: str

    async def close(self) -> None:
        await self.anna.close()
        await self.demo.close()


async def seed(stack: Stack, progress: Callable[[str], Any] = print) -> Conversations:
    assert stack.synapse and stack.prosody and stack.mail and stack.graph
    mxid, token = await stack.synapse.register_user(
        DEMO_USER, DEMO_PASSWORD, displayname="Demo User"
    )
    demo = EncryptedUser(
        mxid, token, stack.synapse.base_url, store_dir=stack.workdir / "nio-store", auto_join=True
    )
    await demo.start()
    anna_jid = stack.prosody.register(XMPP_NAME, XMPP_PASSWORD)
    anna = XmppUser(anna_jid, XMPP_PASSWORD, stack.prosody.c2s_port, resource="demo")
    await anna.connect()
    try:
        began = time.monotonic()
        xmpp_room = await _seed_xmpp(demo, anna)
        progress(
            f"seeded: XMPP message from {anna_jid} reached Matrix ({time.monotonic() - began:.1f} s)"
        )
        began = time.monotonic()
        mail_room, portal, last = await _seed_mail(stack, demo)
        progress(
            f"seeded: mail from {MAIL_PERSON} reached Matrix ({time.monotonic() - began:.1f} s)"
        )
        began = time.monotonic()
        teams_room, chat = await _seed_teams(stack, demo)
        progress(
            f"seeded: Teams message from Alex Wilber reached Matrix ({time.monotonic() - began:.1f} s)"
        )
    except BaseException:
        await anna.close()
        await demo.close()
        raise
    return Conversations(demo, anna, xmpp_room, mail_room, portal, last, teams_room, chat)


async def _seed_xmpp(demo: EncryptedUser, anna: XmppUser) -> str:
    anna.send_chat(
        xmpp_jid_of(demo.mxid), "Hi! Anna here, writing from XMPP. Can you read me in Matrix?"
    )
    room = await demo.wait_for_invite(TIMEOUT)
    await demo.wait_for_message(room, containing("writing from XMPP"), TIMEOUT)
    return room


async def _seed_mail(stack: Stack, demo: EncryptedUser) -> tuple[str, str, EmailMessage]:
    """The demo user writes to Bob, whose answer comes back into the same DM."""
    assert stack.mail is not None
    bob = stack.mail.add_user(MAIL_PERSON, MAIL_PASSWORD)
    ghost = ghost_of("email", bob)
    room = await demo.create_dm(ghost)
    await demo.wait_for_member(room, ghost, TIMEOUT)
    await demo.wait_for_message(room, containing(ENDS_AT_HUB), TIMEOUT)
    await demo.send_text(room, "Quarterly report\nHi Bob, could you send me the figures?")
    sent = await stack.mail.wait_for_mail(bob, MAIL_PASSWORD, timeout=TIMEOUT)
    portal = sent["From"].addresses[0].addr_spec
    if not portal.endswith(f"@{MAIL_DOMAIN}"):
        raise RuntimeError(f"the demo user's mail came from {portal}, not from the bridge")
    answer = mail_from(
        bob, portal, "Re: Quarterly report", "Hi, the figures follow on Monday. Bob", reply_to=sent
    )
    refused = await stack.mail.send(answer, mail_from=bob, rcpt_to=[portal])
    if refused:
        raise RuntimeError(f"Postfix refused the seeded mail: {refused}")
    await demo.wait_for_message(room, containing("the figures follow on Monday"), TIMEOUT)
    return room, portal, answer


async def _seed_teams(stack: Stack, demo: EncryptedUser) -> tuple[str, str]:
    """``login teams`` with the bridge bot (the device code approved in the emulator, as Adele
    would in her browser), then Alex posts in a chat with Adele."""
    graph = stack.graph
    assert graph is not None
    bot = f"@pontis:{DOMAIN}"
    management = await demo.create_dm(bot)
    await demo.wait_for_message(management, containing("Pontis bridge bot"), TIMEOUT)
    mark = demo.mark()
    await demo.send_text(management, "login teams")
    prompt = await demo.wait_for_message(
        management, containing("enter the code"), TIMEOUT, after=mark
    )
    code = re.search(r"\*\*(\S+)\*\*", prompt.body)
    if code is None:
        raise RuntimeError(f"no device code in the bot's answer: {prompt.body}")
    await graph.control(
        "POST",
        "/devicecodes/approve",
        {"userCode": code.group(1), "user": graph.user(TEAMS_LOGIN)["id"]},
    )
    mark = demo.mark()
    await demo.send_text(management, "done")
    await demo.wait_for_message(
        management, containing("Logged in to Teams as"), TIMEOUT, after=mark
    )
    chat = await graph.new_chat("Project Aurora", TEAMS_LOGIN, TEAMS_COLLEAGUE)
    await graph.post_as(TEAMS_COLLEAGUE, chat, "<p>Welcome to <b>Project Aurora</b>, Adele!</p>")
    room = await demo.wait_for_invite(TIMEOUT)
    await demo.wait_for_message(room, containing("Welcome to Project Aurora"), TIMEOUT)
    return room, chat
