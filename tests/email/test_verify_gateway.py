"""What the gateway does with the verification's decision: refuse, defer, or mark.

``unverified_mail: mark`` delivers the mail from a ghost of its own whose name says
"(unverified)", with a warning above the text, also after a restart (the reason is stored with
the mail); a DNS outage during in-process verification answers 451 so the mail server retries.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from ruamel.yaml import YAML

from bridge.core import RemoteMessage
from bridge.email import unverified
from bridge.email.client import EmailGateway
from bridge.email.config import EXAMPLE_CONFIG, EmailConfig
from bridge.email.outbound import Relay
from bridge.portal.store import Store
from tests.dns_server import DnsServer
from tests.email.signing import SendingDomain
from tests.email.test_gateway import ROOM, VERIFIED, Core, context_and_store

FAILED = "mx.test; dkim=none; dmarc=fail header.from=example.org"


async def gateway_with(store: Store, core: Core, **changes: object) -> EmailGateway:
    ctx, email_store = await context_and_store(store, core)
    section = YAML(typ="safe").load(EXAMPLE_CONFIG)
    section.update(domain="mail.test", trusted_authserv_id="mx.test")
    section["inbound"]["max_message_mib"] = 1
    cfg = dataclasses.replace(EmailConfig.from_section(section), **changes)  # type: ignore[arg-type]
    return EmailGateway(ctx, cfg, email_store, Relay(cfg))


def mail(
    text: str,
    *,
    results: str = FAILED,
    sender: str = "Bob <bob@example.org>",
    message_id: str = "<1@example.org>",
    attachment: bool = False,
) -> bytes:
    msg = EmailMessage()
    msg["Authentication-Results"] = results
    msg["From"] = sender
    msg["To"] = ROOM
    msg["Subject"] = "Invoice"
    msg["Message-ID"] = message_id
    if text:
        msg.set_content(text)
    if attachment:
        msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes()


@pytest.fixture
async def core(store: Store) -> Core:
    return Core(store)


@pytest.fixture
async def marking(store: Store, core: Core) -> AsyncIterator[EmailGateway]:
    gateway = await gateway_with(store, core, unverified_mail="mark")
    yield gateway
    await gateway.disconnect()


async def test_refusing_is_the_default(store: Store, core: Core) -> None:
    gateway = await gateway_with(store, core)
    answer = await gateway.receive("bob@example.org", [ROOM], mail("Pay now"))
    assert answer[0].startswith("550 5.7.1") and core.accepted == []


async def test_an_unverified_mail_comes_from_a_marked_ghost_of_its_own(
    marking: EmailGateway, core: Core, store: Store
) -> None:
    assert (await marking.receive("bob@example.org", [ROOM], mail("Pay now")))[0][:3] == "250"
    assert (
        await marking.receive(
            "bob@example.org",
            [ROOM],
            mail("Real", results=VERIFIED, message_id="<2@example.org>"),
        )
    )[0][:3] == "250"
    doubted, real = core.accepted
    assert "dmarc=fail" in doubted.payload[unverified.PAYLOAD_KEY]
    assert unverified.PAYLOAD_KEY not in real.payload

    # Converted after a restart: the reason comes from the stored mail.
    restarted = await gateway_with(store, Core(store), unverified_mail="mark")
    [event] = await restarted.convert_remote(doubted)
    assert isinstance(event, RemoteMessage)
    assert event.sender == "unverified:bob@example.org"
    assert event.sender_info is not None
    assert event.sender_info.name == "Bob (bob@example.org) (unverified)"
    first = event.parts[0]
    assert first.text.startswith("⚠️ Unverified sender: this mail says it is from bob@example.org")
    assert "dmarc=fail" in first.text and first.text.endswith("Pay now")
    assert first.html is not None and first.html.startswith("<p><strong>⚠️ Unverified")

    [event] = await restarted.convert_remote(real)
    assert isinstance(event, RemoteMessage) and event.sender == "bob@example.org"
    assert event.sender_info is not None and event.sender_info.name == "Bob (bob@example.org)"
    assert "Unverified" not in event.parts[0].text


async def test_the_name_cannot_hide_the_mark(marking: EmailGateway, core: Core) -> None:
    # A right-to-left override would show the suffix reversed, as if it were part of the name.
    name = base64.b64encode("Bob\u202e )deifirevnu( \u2066\tSmith".encode()).decode()
    sender = f"=?utf-8?b?{name}?= <bob@example.org>"
    raw = mail("Hi").replace(b"From: Bob <bob@example.org>", f"From: {sender}".encode())
    assert (await marking.receive("bob@example.org", [ROOM], raw))[0][:3] == "250"
    [event] = await marking.convert_remote(core.accepted[0])
    assert isinstance(event, RemoteMessage) and event.sender_info is not None
    name = event.sender_info.name or ""
    assert name.endswith(" (bob@example.org) (unverified)")
    assert "\u202e" not in name and "\u2066" not in name and "\t" not in name


async def test_a_mail_of_attachments_only_gets_the_warning_first(
    marking: EmailGateway, core: Core
) -> None:
    await marking.receive("bob@example.org", [ROOM], mail("", attachment=True))
    [event] = await marking.convert_remote(core.accepted[0])
    assert isinstance(event, RemoteMessage)
    warning, *files = event.parts
    assert warning.part_id == "" and warning.text.startswith("⚠️")
    assert files and all(p.media is not None for p in files)
    assert len({p.part_id for p in event.parts}) == len(event.parts)


async def test_a_dns_outage_while_verifying_answers_451(store: Store, core: Core) -> None:
    zone = DnsServer()
    await zone.start()
    try:
        SendingDomain("example.org").publish(zone)
        zone.failing.add("_dmarc.example.org")
        gateway = await gateway_with(
            store, core, verifier="bridge", dns_nameservers=(zone.nameserver,), dns_timeout=2.0
        )
        answer = await gateway.receive("bob@example.org", [ROOM], mail("Hi", results=VERIFIED))
        assert answer[0].startswith("451 4.4.3") and core.accepted == []
        await gateway.disconnect()
    finally:
        zone.stop()
