"""The gateway with the core's remote inbox: a mail is stored before its 250 and converted in
the portal's queue, the same way before and after a restart; the relay being away only defers.

The core is played by a small fake whose ``accept_remote`` writes to the real remote inbox
table (both engines), so payloads go through the same JSON round trip as in the bridge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any, cast

import pytest
from aiosmtpd.smtp import SMTP

from bridge.core import (
    BridgeError,
    ConnectorContext,
    MatrixMessage,
    PermanentError,
    RemoteMessage,
    TransientError,
)
from bridge.core.federation import FederationPolicy
from bridge.core.metrics import Metrics
from bridge.email.client import EmailGateway
from bridge.email.config import EmailConfig
from bridge.email.ids import NETWORK, portal_key
from bridge.email.outbound import Relay
from bridge.email.received import KIND_BOUNCE, KIND_MAIL
from bridge.email.store import EmailStore
from bridge.email.verp import split_bounce_address
from bridge.portal.models import Message, Portal, RemoteInput
from bridge.portal.store import NetworkStore, Store
from tests.e2e.process import free_port
from tests.email.test_relay import FakeRelay

ROOM = "room.abcdefghijklmnop@mail.test"
OTHER = "other.abcdefghijklmnop@mail.test"
VERIFIED = "mx.test; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
LOG = logging.getLogger("test.email.gateway")


class Core:
    """What the gateway asks of the core: the remote inbox, failure notices, client state."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.unreachable = False
        self.accepted: list[RemoteInput] = []
        self.failures: list[tuple[str, str]] = []
        self.states: list[tuple[bool, str]] = []

    async def accept_remote(self, item: RemoteInput) -> bool:
        if self.unreachable:
            raise OSError("database is away")
        if await self.store.remote_inbox.add(item) is None:
            return False
        self.accepted.append(item)
        return True

    async def delivery_failed(self, network: str, event_id: str, err: BridgeError) -> None:
        self.failures.append((event_id, err.user_message))

    def set_client_state(
        self, network: str, login_id: str, *, connected: bool, message: str
    ) -> None:
        self.states.append((connected, message))


def _config(relay_port: int = 1) -> EmailConfig:
    return EmailConfig.from_section(
        {
            "domain": "mail.test",
            "inbound": {"protocol": "lmtp", "host": "127.0.0.1", "port": 1,
                        "max_message_mib": 1, "max_recipients": 10},
            "outbound": {"host": "127.0.0.1", "port": relay_port, "security": "none",
                         "username": "", "password": "", "timeout": 2},
            "trusted_authserv_id": "mx.test",
            "sender_verification": "dmarc",
            "threads": True,
            "strip_quotes": True,
        }
    )  # fmt: skip


async def context_and_store(store: Store, core: Core) -> tuple[ConnectorContext, EmailStore]:
    """What a gateway is built from: the connector's context on ``core`` and its own tables."""
    ctx = ConnectorContext(
        network=NETWORK, config={}, domain="hub.test", log=LOG,
        store=NetworkStore(store, NETWORK), http=cast(Any, None), metrics=Metrics(),
        core=cast(Any, core),
    )  # fmt: skip
    email_store = EmailStore(store.database)
    await email_store.upgrade()
    return ctx, email_store


async def _gateway(store: Store, core: Core, relay_port: int = 1) -> EmailGateway:
    ctx, email_store = await context_and_store(store, core)
    cfg = _config(relay_port)
    return EmailGateway(ctx, cfg, email_store, Relay(cfg))


@pytest.fixture
async def core(store: Store) -> Core:
    return Core(store)


@pytest.fixture
async def gateway(store: Store, core: Core) -> AsyncIterator[EmailGateway]:
    yield await _gateway(store, core)


def _mail(text: str, *, message_id: str | None = "<1@example.org>", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob <bob@example.org>"
    msg["To"] = ROOM
    msg["Subject"] = headers.pop("subject", "Budget")
    if message_id is not None:
        msg["Message-ID"] = message_id
    msg["Authentication-Results"] = VERIFIED
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg.as_bytes()


async def _stored(store: Store) -> list[RemoteInput]:
    """The inputs as a restarted bridge reads them back."""
    return [row.input for row in await store.remote_inbox.pending()]


def _summary(event: Any) -> tuple[Any, ...]:
    assert isinstance(event, RemoteMessage)
    return (event.portal, event.sender, event.id, event.reply_to, event.thread_root,
            [(p.part_id, p.text, p.html) for p in event.parts])  # fmt: skip


async def test_a_mail_is_stored_per_recipient_before_its_250(
    gateway: EmailGateway, core: Core, store: Store
) -> None:
    answers = await gateway.receive("bob@example.org", [ROOM, OTHER], _mail("Can we meet?"))
    assert [a[:3] for a in answers] == ["250", "250"]
    assert [(i.portal, i.kind, i.dedupe_id) for i in core.accepted] == [
        (portal_key(ROOM), KIND_MAIL, "<1@example.org>"),
        (portal_key(OTHER), KIND_MAIL, "<1@example.org>"),
    ]
    [event] = await gateway.convert_remote(core.accepted[0])
    assert isinstance(event, RemoteMessage) and event.sender == "bob@example.org"
    assert event.parts[0].text == "Budget\n\nCan we meet?"
    # The mail server offering it again while it is pending changes nothing.
    assert (await gateway.receive("bob@example.org", [ROOM], _mail("Can we meet?")))[0][:3] == "250"
    assert len(core.accepted) == 2 and len(await _stored(store)) == 2


async def test_after_a_restart_the_stored_mail_gives_the_same_events(
    gateway: EmailGateway, core: Core, store: Store
) -> None:
    raw = _mail("Tuesday works.\n\nOn Mon, Alice wrote:\n> Can we meet?\n", message_id=None)
    await gateway.receive("bob@example.org", [ROOM], raw)
    [item] = core.accepted
    assert item.dedupe_id is not None and item.dedupe_id.endswith("@pontis.invalid>")
    first = await gateway.convert_remote(item)  # the parse made at acceptance
    [reread] = await _stored(store)
    restarted = await _gateway(store, Core(store))
    again = await restarted.convert_remote(reread)  # parsed again from the stored bytes
    assert [_summary(e) for e in again] == [_summary(e) for e in first]
    assert _summary(first[0])[2] == item.dedupe_id  # the id a redelivery is recognised by


async def test_a_reply_is_threaded_when_its_turn_comes(
    gateway: EmailGateway, core: Core, store: Store
) -> None:
    await gateway.receive("bob@example.org", [ROOM], _mail("First"))
    await gateway.receive("bob@example.org", [ROOM], _mail(
        "Second", message_id="<2@example.org>", subject="Re: Budget",
        In_Reply_To="<1@example.org>", References="<1@example.org>",
    ))  # fmt: skip
    first, second = core.accepted
    await gateway.convert_remote(first)
    # The core puts the first on Matrix before the second is converted.
    await store.add_message(Message(
        network=NETWORK, portal_id=portal_key(ROOM).remote_id,
        remote_id=first.dedupe_id, mxid="$first", room_id="!room:hub.test",  # type: ignore[arg-type]
        sender_id="bob@example.org",
    ))  # fmt: skip
    [event] = await gateway.convert_remote(second)
    assert isinstance(event, RemoteMessage)
    assert event.reply_to == "<1@example.org>" and event.thread_root == "<1@example.org>"
    assert event.parts[0].text == "Second"  # the subject did not change: not shown again


async def test_a_bounce_is_kept_and_becomes_a_notice_in_its_turn(
    gateway: EmailGateway, core: Core, store: Store
) -> None:
    await store.add_message(Message(
        network=NETWORK, portal_id=portal_key(ROOM).remote_id,
        remote_id="<sent@mail.test>", mxid="$sent", room_id="!room:hub.test",  # type: ignore[arg-type]
        sender_id="@alice:hub.test",
    ))  # fmt: skip
    await gateway._store.remember_mail(
        ROOM, "<sent@mail.test>", "Hello", [], sent_to=["nobody@example.org"]
    )
    dsn = _dsn("<sent@mail.test>", "nobody@example.org")
    bounce_address = (await gateway._bounces()).sender(
        ROOM, "<sent@mail.test>", "nobody@example.org"
    )
    assert not await gateway.is_portal_address(bounce_address)  # no such room yet
    await store.save_portal(
        Portal(network=NETWORK, remote_id=portal_key(ROOM).remote_id, mxid="!room:hub.test")
    )
    assert await gateway.is_portal_address(bounce_address)
    assert not await gateway.is_portal_address(OTHER.replace("@", "+b-aaaaaaaaaaaa@"))
    assert (await gateway.receive("", [bounce_address], dsn))[0][:3] == "250"
    [item] = core.accepted
    assert item.kind == KIND_BOUNCE and item.portal == portal_key(ROOM) and not core.failures
    assert await gateway.convert_remote(item) == []
    [(event_id, message)] = core.failures
    assert event_id == "$sent" and "nobody@example.org" in message and "5.1.1" in message
    assert "no such user" not in message  # the DSN's own words are never shown


async def test_a_bounce_to_the_portal_s_own_address_marks_and_tells_nobody(
    gateway: EmailGateway, core: Core, store: Store
) -> None:
    """Anyone can send a DSN from <>, naming any recipient of a mail they received."""
    await store.add_message(Message(
        network=NETWORK, portal_id=portal_key(ROOM).remote_id,
        remote_id="<sent@mail.test>", mxid="$sent", room_id="!room:hub.test",  # type: ignore[arg-type]
        sender_id="@alice:hub.test",
    ))  # fmt: skip
    await gateway._store.remember_mail(
        ROOM, "<sent@mail.test>", "Hello", [], sent_to=["nobody@example.org"]
    )
    dsn = _dsn("<sent@mail.test>", "nobody@example.org")
    assert (await gateway.receive("", [ROOM], dsn))[0][:3] == "250"
    guessed = ROOM.replace("@", "+b-aaaaaaaaaaaa@")
    assert (await gateway.receive("", [guessed], dsn.replace(b"<dsn@", b"<dsn2@")))[0][:3] == "250"
    for item in core.accepted:
        assert await gateway.convert_remote(item) == []
    assert len(core.accepted) == 2 and not core.failures
    assert await gateway._store.bounced(ROOM) == set()


def _dsn(original: str, recipient: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: " + ROOM + "\r\nSubject: Undelivered\r\n"
        "Message-ID: <dsn@mx.example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original}\r\n\r\n--b--\r\n"
    ).encode()


async def test_refusals_and_loops_are_decided_up_front_and_nothing_is_stored(
    gateway: EmailGateway, core: Core
) -> None:
    unverified = _mail("hi").replace(VERIFIED.encode(), b"mx.test; dmarc=fail")
    assert (await gateway.receive("bob@example.org", [ROOM], unverified))[0][:9] == "550 5.7.1"
    two_froms = b"From: a@example.org\r\nFrom: b@example.org\r\n\r\nhi\r\n"
    assert (await gateway.receive("a@example.org", [ROOM], two_froms))[0][:9] == "554 5.6.0"
    looped = _mail("hi", X_Pontis_Loop="mail.test")
    assert (await gateway.receive("bob@example.org", [ROOM], looped))[0][:3] == "250"
    assert core.accepted == []


async def test_a_store_that_is_away_answers_451_so_the_mail_server_retries(
    gateway: EmailGateway, core: Core
) -> None:
    core.unreachable = True
    assert (await gateway.receive("bob@example.org", [ROOM], _mail("hi")))[0][:9] == "451 4.3.0"
    core.unreachable = False
    assert (await gateway.receive("bob@example.org", [ROOM], _mail("hi")))[0][:3] == "250"
    assert len(core.accepted) == 1


async def test_a_stored_input_that_cannot_be_read_is_permanent(gateway: EmailGateway) -> None:
    broken = RemoteInput(portal=portal_key(ROOM), kind=KIND_MAIL, payload={"raw": "not base64!"})
    with pytest.raises(PermanentError):
        await gateway.convert_remote(broken)
    with pytest.raises(PermanentError):
        await gateway.convert_remote(RemoteInput(portal=portal_key(ROOM), kind="fax", payload={}))


async def test_mail_from_matrix_waits_for_a_relay_that_is_away(store: Store, core: Core) -> None:
    port = free_port()
    gateway = await _gateway(store, core, relay_port=port)
    relay = gateway._relay
    await EmailStore(store.database).add_contact(ROOM, "bob@example.org")
    portal = Portal(network=NETWORK, remote_id=portal_key(ROOM).remote_id, mxid="!room:hub.test")
    msg = MatrixMessage(portal=portal, event_id="$e", sender="@alice:hub.test", timestamp=0,
                        body="Hello", sender_name="Alice")  # fmt: skip
    with pytest.raises(TransientError):  # nothing listens: the core keeps it and tries again
        await gateway.handle_matrix_message(msg)
    assert core.states == [(False, core.states[0][1])] and "not usable" in core.states[0][1]
    fake = FakeRelay()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(fake, hostname="relay.test", loop=loop), "127.0.0.1", port
    )
    try:
        assert await gateway.handle_matrix_message(msg)
    finally:
        await relay.close()
        server.close()
        await server.wait_closed()
    [(sender, recipients)] = fake.mails
    assert split_bounce_address(sender) == (ROOM, sender.split("+b-")[1].split("@")[0])
    assert recipients == ["bob@example.org"]
    assert core.states[-1] == (True, "relay reachable")


async def test_the_federation_policy_decides_on_the_sender_domain(store: Store, core: Core) -> None:
    gateway = await _gateway(store, core)
    gateway._ctx.federation = FederationPolicy(
        [{"network": "email", "remote": ["*.gouv.example"], "matrix": ["local"]}], "hub.test"
    )
    assert gateway.sender_refusal("agent@finances.gouv.example") is None
    assert gateway.sender_refusal("") is None and gateway.sender_refusal("<>") is None  # bounces
    refusal = gateway.sender_refusal("someone@Gmail.example")
    assert refusal is not None and refusal.startswith("550 5.7.1 ")
    assert "gmail.example" in refusal and "federation policy" in refusal


async def test_the_federation_policy_decides_on_the_from_domain_too(
    store: Store, core: Core
) -> None:
    """A refused domain DKIM-signs its mail (From: bob@example.org, verified) and sends it
    with an envelope sender of an allowed domain: the room must not get it."""
    gateway = await _gateway(store, core)
    gateway._ctx.federation = FederationPolicy(
        [{"network": "email", "remote": ["*.gouv.example"], "matrix": ["local"]}], "hub.test"
    )
    [answer] = await gateway.receive("agent@finances.gouv.example", [ROOM], _mail("hi"))
    assert answer.startswith("550 5.7.1 ") and "federation policy" in answer
    assert "example.org" in answer and core.accepted == []
