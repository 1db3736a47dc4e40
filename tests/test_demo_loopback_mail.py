"""The demo's stand-in mail server (demo/loopback_mail.py), used where Postfix and Dovecot cannot
run. Hostile cases first: a stranger's address, an oversized mail and a refusal by the bridge
change nothing; mail the bridge cannot take yet is kept and delivered once, when it can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from demo.loopback_mail import LoopbackMail
from tests.e2e.process import free_port

BRIDGE_DOMAIN = "hub-mail.demo.test"
PORTAL = f"room.abc@{BRIDGE_DOMAIN}"
BOB = "bob@agency.test"


class Bridge:
    """What the bridge's SMTP listener would do: take mail (recorded) or answer ``reply``."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []
        self.reply = "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.reply.startswith("250"):
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 OK"


async def listen(bridge: Bridge, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SMTP(bridge), "127.0.0.1", port)


@pytest.fixture
async def mail(tmp_path: Path) -> AsyncIterator[LoopbackMail]:
    server = LoopbackMail(
        tmp_path, bridge_domain=BRIDGE_DOMAIN, bridge_lmtp_port=free_port(), max_message_bytes=4096
    )
    await server.start()
    server.add_user(BOB, "pw")
    yield server
    await server.stop()


def message(to: str, text: str = "Hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = BOB, to, "Test"
    msg.set_content(text)
    return msg


def stored(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")]


async def until(check: Callable[[], object], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_stranger_s_address_is_refused_at_rcpt_and_nothing_is_stored(
    mail: LoopbackMail, tmp_path: Path
) -> None:
    refused = await mail.send(
        message("eve@agency.test"), mail_from=BOB, rcpt_to=["eve@agency.test"]
    )
    assert refused["eve@agency.test"][0] == 550
    refused = await mail.send(message("x@elsewhere.example"), mail_from=BOB,
                              rcpt_to=["x@elsewhere.example"])  # fmt: skip
    assert refused["x@elsewhere.example"][0] == 550
    assert stored(tmp_path) == []


async def test_an_oversized_mail_is_refused_and_nothing_is_relayed(
    mail: LoopbackMail, tmp_path: Path
) -> None:
    bridge = Bridge()
    server = await listen(bridge, mail.bridge_lmtp_port)
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as err:
            await mail.send(message(PORTAL, "x" * 10_000), mail_from=BOB, rcpt_to=[PORTAL, BOB])
        assert err.value.code == 552
        await asyncio.sleep(0.3)
        assert bridge.received == [] and stored(tmp_path) == []
    finally:
        server.close()


async def test_mail_the_bridge_cannot_take_yet_is_kept_and_delivered_once(
    mail: LoopbackMail,
) -> None:
    assert await mail.send(message(PORTAL, "kept for later"), mail_from=BOB, rcpt_to=[PORTAL]) == {}
    await asyncio.sleep(1.5)  # at least one failed attempt: nothing listens yet
    bridge = Bridge()
    server = await listen(bridge, mail.bridge_lmtp_port)
    try:
        await until(lambda: bridge.received)
        await asyncio.sleep(1.5)  # a second delivery would come within a retry interval
        assert len(bridge.received) == 1
        assert bridge.received[0].rcpt_tos == [PORTAL]
        assert b"kept for later" in (bridge.received[0].original_content or b"")
    finally:
        server.close()


async def test_a_mail_the_bridge_refuses_for_good_is_dropped_with_a_reason(
    mail: LoopbackMail,
) -> None:
    bridge = Bridge()
    bridge.reply = "550 5.1.1 no such room"
    server = await listen(bridge, mail.bridge_lmtp_port)
    try:
        await mail.send(message(PORTAL, "refused"), mail_from=BOB, rcpt_to=[PORTAL])
        await until(lambda: mail.bounced)
        assert "550" in mail.bounced[0]
        # The queue is not stuck behind it: the next mail goes through.
        bridge.reply = "250 OK"
        await mail.send(message(PORTAL, "next"), mail_from=BOB, rcpt_to=[PORTAL])
        await until(lambda: bridge.received)
        assert b"next" in (bridge.received[0].original_content or b"")
    finally:
        server.close()


async def test_a_person_s_mail_lands_in_their_maildir_and_is_returned_once(
    mail: LoopbackMail,
) -> None:
    await mail.send(message(BOB, "for Bob"), mail_from=BOB, rcpt_to=[BOB])
    got = await mail.wait_for_mail(BOB, "pw", timeout=5)
    body = got.get_body(preferencelist=("plain",))
    assert body is not None and "for Bob" in str(body.get_content())
    with pytest.raises(AssertionError):
        await mail.wait_for_mail(BOB, "pw", timeout=0.3)
