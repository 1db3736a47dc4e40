"""Sender verification with real verification in the path: Postfix → LMTP → bridge → Synapse.

First the hub as it is (``verifier: mta``): Postfix itself puts an Authentication-Results header
on every mail (an access-table ``PREPEND``, standing in for a DMARC milter's verdict), and a
sender's forged pass below it is ignored: the mail is refused and bounces to its sender.

Then the bridge is restarted with ``verifier: bridge`` and ``unverified_mail: mark``, its DNS
pointed at a zone served by this test on 127.0.0.1 (:class:`tests.dns_server.DnsServer`), where
the sending domain publishes its DKIM key, SPF and DMARC policy. A mail signed with that key
(dkimpy) reaches the room from the sender's ghost; a forged From, or a forged
Authentication-Results, reaches it only from the sender's "(unverified)" ghost, under a warning.
A mailing list's footer breaks the signature: its mail passes on the list's ARC seal when the
list is in ``arc_forwarders``, and is marked unverified when another list sealed it.
The hub is shared by the session: its Postfix settings and the bridge's config are put back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
import pytest_asyncio
from ruamel.yaml import YAML

from tests.dns_server import DnsServer
from tests.e2e.conftest import DOMAIN, MAIL_AUTHSERV_ID, MAIL_DOMAIN, Hub
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_email import PASSWORD, dm_with, person
from tests.e2e.test_email_durable import _reload_postfix
from tests.email.signing import SendingDomain

pytestmark = pytest.mark.e2e

SIGNED = "signed.test"
"""The sending domain of the in-process tests: DKIM key, ``-all`` SPF and p=reject in the zone."""
LISTS = "lists.test"
"""A mailing list the verifying bridge lists in ``arc_forwarders``."""


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def ghost(remote_id: str) -> str:
    escaped = "".join(
        c if re.fullmatch(r"[a-z0-9._\-/]", c) else f"={ord(c):02x}" for c in remote_id
    )
    return f"@email_{escaped}:{DOMAIN}"


def message(sender: str, to: str, text: str, *, name: str = "", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg["From"] = f"{name} <{sender}>" if name else sender
    msg["To"] = to
    msg["Subject"] = "Tender 7"
    msg["Date"] = "Fri, 04 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = make_msgid(domain=sender.split("@")[1])
    msg.set_content(text)
    return msg


async def send_raw(hub: Hub, raw: bytes, sender: str, to: str) -> None:
    refused = await hub.mail.send(raw, mail_from=sender, rcpt_to=[to])
    assert not refused, refused


async def bridged_room(hub: Hub, alice: MatrixUser, slug: str) -> tuple[str, str]:
    """A room of Alice's bridged to a new mail address: (room id, address)."""
    room_id = await alice.create_room(name=slug)
    await alice.invite(room_id, hub.bot)
    await alice.wait_for(lambda e: e.get("state_key") == hub.bot and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    await alice.send_text(room_id, f"!pontis bridge email {slug}")
    reply = await alice.wait_for(lambda e: "now bridged" in _body(e), room_id=room_id)
    found = re.search(rf"{slug}\.[a-z2-7]{{16}}@" + re.escape(MAIL_DOMAIN), _body(reply))
    assert found, _body(reply)
    return room_id, found.group(0)


# --- verifier: mta, with a header Postfix really adds ----------------------------------------


async def test_a_forged_pass_below_the_mail_server_s_own_header_is_ignored(hub: Hub) -> None:
    frank = person(hub, "frank")
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, frank)
    await alice.send_text(room_id, "Hello Frank")
    portal = (await hub.mail.wait_for_mail(frank, PASSWORD))["From"].addresses[0].addr_spec

    verdict = (
        f"Authentication-Results: {MAIL_AUTHSERV_ID}; dkim=none; dmarc=fail header.from=agency.test"
    )
    hub.mail.postfix_settings["smtpd_client_restrictions"] = (
        f"check_client_access inline:{{ {{ 127.0.0.1 = PREPEND {verdict} }} }}"
    )
    await _reload_postfix(hub)
    try:
        forged = message(frank, portal, "forged pass below the real verdict")
        forged["Authentication-Results"] = (
            f"{MAIL_AUTHSERV_ID}; dkim=pass header.d=agency.test; dmarc=pass header.from=agency.test"
        )
        await send_raw(hub, forged.as_bytes(policy=policy.SMTP), frank, portal)
        bounce = await hub.mail.wait_for_mail(
            frank, PASSWORD, timeout=30, match=lambda m: m.get_content_type() == "multipart/report"
        )
        assert "5.7.1" in bounce.as_string() and "could not be verified" in bounce.as_string()
    finally:
        del hub.mail.postfix_settings["smtpd_client_restrictions"]
        await _reload_postfix(hub)
    assert not [e for e in alice.seen(lambda e: "forged pass" in _body(e), room_id=room_id)]


# --- verifier: bridge ------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def verifying_hub(hub: Hub) -> AsyncIterator[tuple[Hub, DnsServer, SendingDomain]]:
    """The shared hub's bridge restarted to verify senders itself, marking the unverified."""
    zone = DnsServer()
    await zone.start()
    signed = SendingDomain(SIGNED)
    signed.publish(zone, spf="v=spf1 -all", dmarc="v=DMARC1; p=reject")
    path = hub.bridge.config_path
    original = path.read_text()
    yaml = YAML()
    config = yaml.load(original)
    email = config["connectors"]["email"]
    email["verifier"] = "bridge"
    email["unverified_mail"] = "mark"
    email["dns"] = {"nameservers": [zone.nameserver], "timeout": 5}
    email["arc_forwarders"] = [LISTS]
    with path.open("w") as out:
        yaml.dump(config, out)
    try:
        await hub.restart_bridge(kill=False)
        yield hub, zone, signed
    finally:
        path.write_text(original)
        await hub.restart_bridge(kill=False)
        zone.stop()


async def test_a_mail_signed_by_its_domain_reaches_the_room_from_the_sender(
    verifying_hub: tuple[Hub, DnsServer, SendingDomain],
) -> None:
    hub, zone, signed = verifying_hub
    alice = await hub.user("alice")
    room_id, address = await bridged_room(hub, alice, "tenders")
    sender = f"signe@{SIGNED}"
    raw = signed.sign(
        message(sender, address, "Our signed offer.", name="Signe").as_bytes(policy=policy.SMTP)
    )
    await send_raw(hub, raw, sender, address)
    event = await alice.wait_for(lambda e: "Our signed offer." in _body(e), room_id=room_id)
    assert event["sender"] == ghost(sender)
    assert "Unverified" not in _body(event)
    assert (await alice.get_profile(ghost(sender)))["displayname"] == f"Signe ({sender})"
    assert (f"s1._domainkey.{SIGNED}", "TXT") in zone.queries  # the key came from the zone


async def test_a_forged_from_reaches_the_room_only_marked_unverified(
    verifying_hub: tuple[Hub, DnsServer, SendingDomain],
) -> None:
    hub, zone, signed = verifying_hub
    evil = SendingDomain("evil.test")
    evil.publish(zone)
    alice = await hub.user("alice")
    room_id, address = await bridged_room(hub, alice, "forged")
    sender = f"signe@{SIGNED}"
    # Unsigned; then signed, but by another domain's key; then a signed mail altered on the way.
    unsigned = message(sender, address, "Pay invoice 1 now.", name="Signe")
    other_key = evil.sign(
        message(sender, address, "Pay invoice 2 now.", name="Signe").as_bytes(policy=policy.SMTP)
    )
    altered = signed.sign(
        message(sender, address, "Pay invoice 3 to us.", name="Signe").as_bytes(policy=policy.SMTP)
    )
    altered = altered.replace(b"to us.", b"to IBAN XX99.")
    for raw in (unsigned.as_bytes(policy=policy.SMTP), other_key, altered):
        await send_raw(hub, raw, sender, address)
    for text in ("Pay invoice 1 now.", "Pay invoice 2 now.", "Pay invoice 3 to IBAN XX99."):
        event = await alice.wait_for(lambda e, t=text: t in _body(e), room_id=room_id)
        assert event["sender"] == ghost(f"unverified:{sender}")
        assert _body(event).startswith(f"⚠️ Unverified sender: this mail says it is from {sender}")
    profile = await alice.get_profile(ghost(f"unverified:{sender}"))
    assert profile["displayname"] == f"Signe ({sender}) (unverified)"
    assert not alice.seen(lambda e: e["sender"] == ghost(sender), room_id=room_id)


async def test_a_forged_authentication_results_header_is_ignored(
    verifying_hub: tuple[Hub, DnsServer, SendingDomain],
) -> None:
    hub, _zone, _signed = verifying_hub
    alice = await hub.user("alice")
    room_id, address = await bridged_room(hub, alice, "claims")
    sender = f"signe@{SIGNED}"
    claim = message(sender, address, "Trust me, I passed.", name="Signe")
    claim["Authentication-Results"] = (
        f"{MAIL_AUTHSERV_ID}; dkim=pass header.d={SIGNED}; spf=pass smtp.mailfrom={SIGNED};"
        f" dmarc=pass header.from={SIGNED}"
    )
    await send_raw(hub, claim.as_bytes(policy=policy.SMTP), sender, address)
    event = await alice.wait_for(lambda e: "Trust me, I passed." in _body(e), room_id=room_id)
    assert event["sender"] == ghost(f"unverified:{sender}")
    assert "dkim=none" in _body(event) or "dmarc=fail" in _body(event)


async def test_list_mail_passes_on_the_arc_seal_of_a_listed_forwarder(
    verifying_hub: tuple[Hub, DnsServer, SendingDomain],
) -> None:
    hub, zone, signed = verifying_hub
    lists, stranger = SendingDomain(LISTS), SendingDomain("stranger-list.test")
    lists.publish(zone)
    stranger.publish(zone)
    alice = await hub.user("alice")
    room_id, address = await bridged_room(hub, alice, "lists")
    sender = f"signe@{SIGNED}"
    for forwarder, text in ((lists, "Through the listed list."), (stranger, "Through another.")):
        original = message(sender, address, text, name="Signe").as_bytes(policy=policy.SMTP)
        # The list checked the mail, then added its footer (breaking Signe's signature) and
        # sealed what it had found.
        found = (
            f"Authentication-Results: {forwarder.domain}; dkim=pass header.d={SIGNED};"
            f" dmarc=pass header.from={SIGNED}\r\n"
        ).encode()
        footered = (found + signed.sign(original)).replace(
            text.encode(), text.encode() + b"\r\n-- \r\nSent through the list"
        )
        sealed = forwarder.arc_seal(footered, forwarder.domain)
        await send_raw(hub, sealed, f"bounces@{forwarder.domain}", address)
    listed = await alice.wait_for(lambda e: "Through the listed list." in _body(e), room_id=room_id)
    assert listed["sender"] == ghost(sender) and "Unverified" not in _body(listed)
    other = await alice.wait_for(lambda e: "Through another." in _body(e), room_id=room_id)
    assert other["sender"] == ghost(f"unverified:{sender}")
