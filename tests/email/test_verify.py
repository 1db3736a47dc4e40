"""Sender verification against forged, replayed and hostile mail, both verifiers.

``verifier: mta`` reads the mail server's Authentication-Results; ``verifier: bridge`` checks
DKIM, SPF, DMARC and ARC itself, with DNS from a zone served on 127.0.0.1
(:class:`tests.dns_server.DnsServer`) and mail signed by dkimpy with keys published there.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage

import pytest

from bridge.email.config import EmailConfig
from bridge.email.verify import SenderCheck, SenderVerifier, header_fields
from tests.dns_server import DnsServer
from tests.email.signing import SendingDomain

MX = "mx.agency.test"
LOOPBACK = "127.0.0.1"
RECEIVED = (
    b"Received: from mx.origin.example (mx.origin.example [192.0.2.1])\r\n"
    b"\tby mail.agency.test (Postfix) with ESMTP id 4Zx1; Fri, 4 Dec 2026 10:00:00 +0000\r\n"
)


def config(**changes: object) -> EmailConfig:
    base = EmailConfig(
        domain="mail.test", protocol="lmtp", listen_host="127.0.0.1", listen_port=1,
        max_message_bytes=1 << 20, max_recipients=10, relay_host="127.0.0.1", relay_port=1,
        relay_security="none", relay_username="", relay_password="", relay_timeout=2,
        trusted_authserv_id=MX, sender_verification="dmarc", threads=True, strip_quotes=True,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def mail(sender: str = "Bob <bob@origin.example>", body: str = "Hello\n", **headers: str) -> bytes:
    msg = EmailMessage()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg["From"] = sender
    msg["To"] = "room.abcdefghijklmnop@mail.test"
    msg["Subject"] = "Budget"
    msg["Message-ID"] = "<1@origin.example>"
    msg.set_content(body)
    return msg.as_bytes(policy=policy.SMTP)


def ar(value: str) -> bytes:
    return f"Authentication-Results: {value}\r\n".encode()


async def check(
    verifier: SenderVerifier,
    raw: bytes,
    domain: str = "origin.example",
    *,
    peer: str | None = LOOPBACK,
    mail_from: str = "bob@origin.example",
) -> SenderCheck:
    return await verifier.check(raw, domain, mail_from=mail_from, peer=peer)


@pytest.fixture
async def zone() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    await server.start()
    yield server
    server.stop()


@pytest.fixture
def origin(zone: DnsServer) -> SendingDomain:
    """A domain that signs its mail and publishes p=reject; its SPF allows 192.0.2.1 only."""
    domain = SendingDomain("origin.example")
    domain.publish(zone, spf="v=spf1 ip4:192.0.2.1 -all")
    return domain


@pytest.fixture
async def mta() -> AsyncIterator[SenderVerifier]:
    verifier = SenderVerifier(config())
    yield verifier
    verifier.close()


def bridge_verifier(zone: DnsServer, **changes: object) -> SenderVerifier:
    settings: dict[str, object] = {"verifier": "bridge", "dns_nameservers": (zone.nameserver,)}
    return SenderVerifier(config(**(settings | {"dns_timeout": 3.0} | changes)))


@pytest.fixture
async def own(zone: DnsServer) -> AsyncIterator[SenderVerifier]:
    verifier = bridge_verifier(zone)
    yield verifier
    verifier.close()


# --- verifier: mta --------------------------------------------------------------------------

PASS = f"{MX}; dkim=pass header.d=origin.example; dmarc=pass header.from=origin.example"


async def test_the_mta_s_pass_verifies(mta: SenderVerifier) -> None:
    result = await check(mta, ar(PASS) + mail())
    assert result.verified, result


async def test_a_forged_pass_below_the_mta_s_own_header_is_ignored(mta: SenderVerifier) -> None:
    real = ar(f"{MX}; dkim=none; dmarc=fail header.from=origin.example")
    forged = mail(Authentication_Results=PASS)  # written by the sender, below the MTA's
    result = await check(mta, real + forged)
    assert not result.verified and "dmarc=fail" in result.reason
    # Without the MTA's own header the sender's is the topmost: the MTA must strip those
    # (RFC 8601 §5), and the bridge must at least never take one below the MTA's.


@pytest.mark.parametrize("peer", ["192.0.2.7", "10.0.0.5", "::ffff:192.0.2.7", None, "junk"])
async def test_headers_delivered_by_an_untrusted_peer_do_not_count(
    mta: SenderVerifier, peer: str | None
) -> None:
    result = await check(mta, ar(PASS) + mail(), peer=peer)
    assert not result.verified and "not by a trusted mail server" in result.reason


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_loopback_peers_are_trusted(mta: SenderVerifier, peer: str) -> None:
    assert (await check(mta, ar(PASS) + mail(), peer=peer)).verified


async def test_listed_mail_servers_are_trusted() -> None:
    verifier = SenderVerifier(config(trusted_mta_addresses=("192.0.2.0/24", "2001:db8::25")))
    try:
        assert (await check(verifier, ar(PASS) + mail(), peer="192.0.2.7")).verified
        assert (await check(verifier, ar(PASS) + mail(), peer="2001:db8::25")).verified
        assert not (await check(verifier, ar(PASS) + mail(), peer="192.0.3.7")).verified
    finally:
        verifier.close()


@pytest.mark.parametrize(
    "value",
    [
        f"{MX}; dmarc=pass",  # for which domain?
        f"{MX}; dmarc=pass header.from=other.example",
        f"{MX}; dmarc=pass header.from=example",  # the parent's org domain, not this one
        f"{MX}; dmarc=pass header.from=evil.origin.example",
        f"{MX}.evil.example; dmarc=pass header.from=origin.example",
        "evil.example; dmarc=pass header.from=origin.example",
    ],
)
async def test_a_dmarc_pass_counts_only_for_the_from_domain(
    mta: SenderVerifier, value: str
) -> None:
    assert not (await check(mta, ar(value) + mail())).verified


async def test_a_second_from_header_is_never_verified(mta: SenderVerifier) -> None:
    # The verifier may read one From and the room show the other.
    raw = ar(PASS) + b"From: Minister <minister@agency.test>\r\n" + mail()
    result = await check(mta, raw)
    assert not result.verified and "2 From headers" in result.reason


async def test_a_from_the_parser_read_otherwise_is_never_verified(mta: SenderVerifier) -> None:
    # The parser handed over another domain than the raw header holds.
    result = await check(mta, ar(PASS) + mail(), domain="agency.test")
    assert not result.verified and "two different senders" in result.reason


async def test_arc_from_a_listed_forwarder_through_the_mta(zone: DnsServer) -> None:
    lists = SendingDomain("lists.example")
    forwarded = lists.arc_seal(
        ar(
            "lists.example; dkim=pass header.d=origin.example; dmarc=pass header.from=origin.example"
        )
        + mail(),
        "lists.example",
    )
    failing = ar(f"{MX}; dkim=fail header.d=origin.example; dmarc=fail; arc=pass")
    listed = SenderVerifier(config(arc_forwarders=("lists.example",)))
    unlisted = SenderVerifier(config(arc_forwarders=("other.example",)))
    try:
        result = await check(listed, failing + forwarded)
        assert result.verified and "forwarded by lists.example" in result.reason
        assert not (await check(unlisted, failing + forwarded)).verified
        # The MTA found the chain broken: the forwarder's word does not count.
        broken = ar(f"{MX}; dkim=fail header.d=origin.example; dmarc=fail; arc=fail")
        assert not (await check(listed, broken + forwarded)).verified
    finally:
        listed.close()
        unlisted.close()


async def test_arc_results_sealed_by_another_domain_do_not_count() -> None:
    # evil.example seals a set whose results claim to be lists.example's.
    evil = SendingDomain("evil.example")
    forwarded = evil.arc_seal(
        ar("lists.example; dmarc=pass header.from=origin.example") + mail(), "lists.example"
    )
    verifier = SenderVerifier(config(arc_forwarders=("lists.example",)))
    try:
        failing = ar(f"{MX}; dmarc=fail header.from=origin.example; arc=pass")
        assert not (await check(verifier, failing + forwarded)).verified
    finally:
        verifier.close()


def _resealed_by_an_attacker(zone: DnsServer, origin: SendingDomain) -> bytes:
    """A genuine list's forward, its body then changed and re-sealed by evil.example with
    ARC-Authentication-Results that claim the hub's authserv-id."""
    lists, evil = SendingDomain("lists.example"), SendingDomain("evil.example")
    lists.publish(zone)
    evil.publish(zone)
    checked = ar(
        "lists.example; dkim=pass header.d=origin.example; dmarc=pass header.from=origin.example"
    )
    forwarded = lists.arc_seal(checked + origin.sign(mail()), "lists.example")
    tampered = forwarded.replace(b"Hello\r\n", b"Please wire 10k to IBAN XX00 EVIL\r\n")
    return evil.arc_seal(ar(f"{MX}; arc=pass") + tampered, MX)


async def test_an_arc_set_claiming_the_hub_s_authserv_id_is_not_skipped(
    zone: DnsServer, origin: SendingDomain
) -> None:
    resealed = _resealed_by_an_attacker(zone, origin)
    # The MTA validates the chain (the newest set is evil's, intact) and says arc=pass.
    final = (
        ar(
            f"{MX}; dkim=fail header.d=origin.example; dmarc=fail header.from=origin.example; arc=pass"
        )
        + resealed
    )
    mta = SenderVerifier(config(arc_forwarders=("lists.example",)))
    # Even listing evil.example as the hub's own sealer does not help with verifier: bridge.
    own = bridge_verifier(zone, arc_forwarders=("lists.example",))
    try:
        result = await check(mta, final, mail_from="x@evil.example")
        assert not result.verified, result
        result = await check(own, resealed, mail_from="x@evil.example")
        assert not result.verified, result
    finally:
        mta.close()
        own.close()


async def test_the_newest_set_of_a_configured_own_sealer_is_looked_past(zone: DnsServer) -> None:
    lists, hub = SendingDomain("lists.example"), SendingDomain("agency.test")
    checked = ar(
        "lists.example; dkim=pass header.d=origin.example; dmarc=pass header.from=origin.example"
    )
    forwarded = lists.arc_seal(checked + mail(), "lists.example")
    sealed = hub.arc_seal(ar(f"{MX}; arc=pass") + forwarded, MX)
    final = ar(f"{MX}; dkim=fail header.d=origin.example; dmarc=fail; arc=pass") + sealed
    configured = SenderVerifier(
        config(arc_forwarders=("lists.example",), arc_own_sealers=("agency.test",))
    )
    unconfigured = SenderVerifier(config(arc_forwarders=("lists.example",)))
    try:
        result = await check(configured, final)
        assert result.verified and "forwarded by lists.example" in result.reason, result
        assert not (await check(unconfigured, final)).verified
    finally:
        configured.close()
        unconfigured.close()


# --- verifier: bridge -----------------------------------------------------------------------


async def test_a_signed_mail_passes(own: SenderVerifier, origin: SendingDomain) -> None:
    result = await check(own, origin.sign(mail()))
    assert result.verified, result
    assert "dkim=pass (origin.example)" in result.reason


async def test_its_authentication_results_headers_are_not_read(
    own: SenderVerifier, origin: SendingDomain
) -> None:
    assert not (await check(own, ar(PASS) + mail())).verified


async def test_a_modified_body_or_header_fails(own: SenderVerifier, origin: SendingDomain) -> None:
    signed = origin.sign(mail())
    for changed in (
        signed.replace(b"Hello", b"Hallo"),
        signed.replace(b"Hello\r\n", b"Hello\r\nPlease pay to IBAN XX00 0000.\r\n"),
        signed.replace(b"Subject: Budget", b"Subject: Urgent payment"),
    ):
        result = await check(own, changed)
        assert not result.verified and "dkim=fail" in result.reason


async def test_a_signed_mail_replayed_under_another_from_fails(
    own: SenderVerifier, origin: SendingDomain, zone: DnsServer
) -> None:
    # A real signature of evil.example does not vouch for a From at origin.example ...
    evil = SendingDomain("evil.example")
    evil.publish(zone)
    assert not (await check(own, evil.sign(mail()))).verified
    # ... nor does a From header added above a genuinely signed one.
    raw = b"From: Minister <minister@origin.example>\r\n" + origin.sign(mail())
    assert not (await check(own, raw)).verified


async def test_a_signature_over_part_of_the_body_does_not_count(
    own: SenderVerifier, origin: SendingDomain
) -> None:
    signed = origin.sign(mail(), length=True)
    assert not (await check(own, signed + b"Appended by someone else.\r\n")).verified
    assert "dkim=policy" in (await check(own, signed)).reason


async def test_spf_reads_the_client_from_the_mta_s_own_received_header(
    own: SenderVerifier, origin: SendingDomain
) -> None:
    # Unsigned: only SPF can pass. The MTA's Received (topmost) names the permitted client ...
    assert (await check(own, RECEIVED + mail())).verified
    # ... a sender's forged Received below the MTA's is not read.
    forged = RECEIVED.replace(b"192.0.2.1", b"203.0.113.9") + RECEIVED + mail()
    result = await check(own, forged)
    assert not result.verified and "spf=fail" in result.reason


async def test_an_address_in_the_helo_name_is_not_the_spf_client(
    own: SenderVerifier, origin: SendingDomain
) -> None:
    # Postfix writes "from HELO (rdns [addr])": a client at 203.0.113.66 saying
    # "EHLO [192.0.2.1]" must not pass SPF for a domain that allows 192.0.2.1 only.
    spoofed = (
        b"Received: from [192.0.2.1] (unknown [203.0.113.66])\r\n"
        b"\tby mail.agency.test (Postfix) with ESMTP id 4Zx1; Fri, 4 Dec 2026 10:00:00 +0000\r\n"
    )
    result = await check(own, spoofed + mail(body="Please pay invoice 42 to IBAN XX00 EVIL\n"))
    assert not result.verified and "spf=fail" in result.reason, result


async def test_a_peer_that_is_no_trusted_mta_is_the_spf_client(
    own: SenderVerifier, origin: SendingDomain
) -> None:
    assert (await check(own, mail(), peer="192.0.2.1")).verified
    assert not (await check(own, RECEIVED + mail(), peer="192.0.2.2")).verified


async def test_a_domain_without_dmarc_passes_only_when_aligned_is_enough(
    zone: DnsServer,
) -> None:
    plain = SendingDomain("plain.example")
    plain.publish(zone, dmarc=None)
    raw = plain.sign(mail("bob@plain.example"))
    strict, aligned = bridge_verifier(zone), bridge_verifier(zone, sender_verification="aligned")
    try:
        result = await check(strict, raw, "plain.example", mail_from="bob@plain.example")
        assert not result.verified and "dmarc=none" in result.reason
        assert (await check(aligned, raw, "plain.example", mail_from="bob@plain.example")).verified
    finally:
        strict.close()
        aligned.close()


async def test_a_subdomain_is_aligned_with_its_organization_s_policy(zone: DnsServer) -> None:
    # news.org.example has no record of its own; org.example's applies, relaxed alignment.
    org = SendingDomain("org.example")
    org.publish(zone)
    raw = org.sign(mail("news@news.org.example"))
    verifier = bridge_verifier(zone)
    try:
        assert (await check(verifier, raw, "news.org.example")).verified
        zone.remove("_dmarc.org.example")
        zone.add("_dmarc.org.example", "TXT", "v=DMARC1; p=reject; adkim=s")
        assert not (await check(verifier, raw, "news.org.example")).verified
    finally:
        verifier.close()


async def test_a_dns_outage_asks_the_mail_server_to_try_again(
    zone: DnsServer, origin: SendingDomain
) -> None:
    verifier = bridge_verifier(zone, dns_timeout=1.0)
    try:
        zone.failing.add("s1._domainkey.origin.example")
        result = await check(verifier, origin.sign(mail()))
        assert not result.verified and result.temporary, result
        zone.failing.clear()
        zone.silent.add("_dmarc.origin.example")
        result = await check(verifier, origin.sign(mail()))
        assert not result.verified and result.temporary, result
    finally:
        verifier.close()


async def test_forwarded_mail_passes_through_arc_of_a_listed_forwarder(
    zone: DnsServer, origin: SendingDomain
) -> None:
    lists = SendingDomain("lists.example")
    lists.publish(zone)
    checked = ar(
        "lists.example; dkim=pass header.d=origin.example; dmarc=pass header.from=origin.example"
    )
    # The list adds a footer (the origin's signature breaks) and seals what it found.
    footer = (checked + origin.sign(mail())).replace(b"Hello\r\n", b"Hello\r\n-- \r\nThe list\r\n")
    forwarded = lists.arc_seal(footer, "lists.example")
    envelope = "list-bounces@lists.example"
    listed = bridge_verifier(zone, arc_forwarders=("lists.example",))
    unlisted = bridge_verifier(zone)
    try:
        result = await check(listed, forwarded, mail_from=envelope)
        assert result.verified and "forwarded by lists.example" in result.reason, result
        assert not (await check(unlisted, forwarded, mail_from=envelope)).verified
        # A chain changed after the seal fails, and with it the forwarder's word.
        tampered = forwarded.replace(b"The list", b"Pay now")
        assert not (await check(listed, tampered, mail_from=envelope)).verified
    finally:
        listed.close()
        unlisted.close()


async def test_a_forwarder_that_did_not_verify_the_sender_does_not_help(
    zone: DnsServer, origin: SendingDomain
) -> None:
    lists = SendingDomain("lists.example")
    lists.publish(zone)
    found = ar("lists.example; dkim=none; dmarc=fail header.from=origin.example")
    forwarded = lists.arc_seal(found + mail(), "lists.example")
    verifier = bridge_verifier(zone, arc_forwarders=("lists.example",))
    try:
        assert not (await check(verifier, forwarded, mail_from="x@lists.example")).verified
    finally:
        verifier.close()


async def test_verification_runs_off_the_event_loop(
    own: SenderVerifier, origin: SendingDomain, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    original = header_fields

    def spy(raw: bytes) -> list[tuple[bytes, str]]:
        threads.append(threading.get_ident())
        return original(raw)

    monkeypatch.setattr("bridge.email.verify.header_fields", spy)
    big = origin.sign(mail(body="x" * 76 + "\n") * 1)
    assert (await check(own, big)).verified
    assert threads and threading.get_ident() not in threads


def test_header_fields_are_read_in_linear_time_and_unfolded() -> None:
    raw = b"From: a@b.example\r\nReceived: from x\r\n\tby y\r\n" + b" z\r\n" * 200_000 + b"\r\nbody"
    fields = header_fields(raw)
    assert fields[0] == (b"from", "a@b.example")
    assert fields[1][0] == b"received" and fields[1][1].startswith("from x by y z z")


async def test_a_signing_domain_cannot_write_into_the_verdict(
    own: SenderVerifier, origin: SendingDomain
) -> None:
    signed = origin.sign(mail()).replace(b"d=origin.example", b"d=origin.example (verified OK)", 1)
    result = await check(own, signed)
    assert not result.verified and "(verified" not in result.reason and "OK" not in result.reason


async def test_a_flood_of_signatures_costs_a_bounded_number_of_lookups(
    own: SenderVerifier, origin: SendingDomain, zone: DnsServer
) -> None:
    junk = b"".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; d=x{i}.example; s=s{i}; h=from; bh=AA==; b=AA==\r\n".encode()
        for i in range(500)
    )
    before = len(zone.queries)
    result = await check(own, junk + origin.sign(mail()))
    assert not result.verified  # the genuine signature is the 501st: never reached
    assert len(zone.queries) - before <= 12
