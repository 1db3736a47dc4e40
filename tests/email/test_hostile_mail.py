"""Hostile mail (issue #12): every mail gets a clear answer per recipient, within bounds, and is
parsed off the event loop by a worker that a stuck mail cannot keep.

The corpus: RFC 2231 boundaries with a million parts, nesting 5,000 deep, UTF-7 with a lone
surrogate (``+2AA-``), 100,000 header lines; each to two LMTP recipients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.email.client import EmailGateway
from bridge.email.inbound import UNAVAILABLE, smtp_line, start_listener
from bridge.email.parsing import MailParser
from bridge.email.protocol.parse import MalformedMail, ParseLimits, parse_mail
from bridge.portal.store import Store
from tests.e2e.process import free_port
from tests.email.test_gateway import OTHER, ROOM, VERIFIED, Core, _gateway
from tests.email.test_inbound import _config as listener_config

HEAD = f"From: Bob <bob@example.org>\r\nTo: {ROOM}\r\nAuthentication-Results: {VERIFIED}\r\n"


def million_parts() -> bytes:
    return (
        HEAD + "Subject: bomb\r\nContent-Type: multipart/mixed; boundary*=''b\r\n\r\n"
        + "--b\r\n\r\n" * 1_000_000 + "--b--\r\n"
    ).encode()  # fmt: skip


def deep_nesting(depth: int = 5000) -> bytes:
    levels = "".join(
        f"Content-Type: multipart/mixed; boundary*0*=''b{i}\r\n\r\n--b{i}\r\n" for i in range(depth)
    )
    return (HEAD + "Subject: deep\r\n" + levels + "Content-Type: text/plain\r\n\r\nx\r\n").encode()


def many_headers() -> bytes:
    return (HEAD + "Subject: long\r\n" + "X-Filler: x\r\n" * 100_000 + "\r\nbody\r\n").encode()


def utf7_surrogate() -> bytes:
    return (
        HEAD + "Message-ID: <utf7@example.org>\r\n"
        "Subject: =?utf-7?q?+2AA-?= Hello\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-7\r\n\r\nbefore +2AA- after\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename*=utf-7''%2B2AA-x.bin\r\n\r\ndata\r\n"
        "--b--\r\n"
    ).encode()


HOSTILE = {
    "rfc2231-million-parts": (million_parts, "more than 100 MIME parts"),
    "5000-deep": (deep_nesting, "MIME nesting deeper than 10"),
    "100k-header-lines": (many_headers, "more than 5000 header lines"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_the_parser_stops_hostile_mail_at_its_limits(name: str) -> None:
    make, refusal = HOSTILE[name]
    with pytest.raises(MalformedMail, match=refusal):
        parse_mail(make())


def test_utf7_lone_surrogates_become_text_that_can_be_encoded() -> None:
    mail = parse_mail(utf7_surrogate())
    shown = [mail.subject, mail.text or "", *(a.filename for a in mail.attachments)]
    for text in shown:
        text.encode("utf-8")  # raised UnicodeEncodeError far from the parser before
    assert "Hello" in mail.subject and "before" in (mail.text or "")
    assert "\ud800" not in "".join(shown)


@pytest.fixture
async def parser() -> AsyncIterator[MailParser]:
    parser = MailParser(ParseLimits(), workers=1, timeout=30)
    await parser.start()
    yield parser
    await parser.close()


@pytest.mark.parametrize("name", HOSTILE)
async def test_the_worker_refuses_hostile_mail_and_stays_usable(
    parser: MailParser, name: str
) -> None:
    make, refusal = HOSTILE[name]
    with pytest.raises(MalformedMail, match=refusal):
        await parser.parse(make())
    assert (await parser.parse(utf7_surrogate())).message_id == "<utf7@example.org>"


async def test_a_mail_over_the_time_limit_is_refused_and_its_worker_replaced() -> None:
    parser = MailParser(ParseLimits(), workers=1, timeout=0.001)
    await parser.start()
    try:
        with pytest.raises(MalformedMail, match="could not be read within"):
            await parser.parse(million_parts())
    finally:
        await parser.close()
    parser = MailParser(ParseLimits(), workers=1, timeout=30)
    try:  # a fresh pool after a kill works (the fork server survives its children)
        assert (await parser.parse(utf7_surrogate())).subject
    finally:
        await parser.close()


async def test_the_loop_keeps_running_while_a_worker_parses(parser: MailParser) -> None:
    """The loop ticks while the worker is busy: a parse on the loop would not let it."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        big = HEAD + "Subject: big\r\n\r\n" + "a long line of text\r\n" * 400_000
        await parser.parse(big.encode())
    finally:
        ticker.cancel()
    assert ticks > 10


# --- the gateway: one clear answer for each recipient ------------------------------------------


@pytest.fixture
async def gateway(store: Store) -> AsyncIterator[tuple[EmailGateway, Core]]:
    core = Core(store)
    gateway = await _gateway(store, core)
    yield gateway, core
    await gateway.disconnect()


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_mail_gets_a_554_for_each_recipient(
    gateway: tuple[EmailGateway, Core], name: str
) -> None:
    gw, core = gateway
    answers = await gw.receive("bob@example.org", [ROOM, OTHER], HOSTILE[name][0]())
    assert len(answers) == 2 and all(a.startswith("554 5.6.0 Malformed mail") for a in answers)
    assert core.accepted == []


async def test_a_utf7_mail_is_accepted_for_both_recipients(
    gateway: tuple[EmailGateway, Core],
) -> None:
    gw, core = gateway
    answers = await gw.receive("bob@example.org", [ROOM, OTHER], utf7_surrogate())
    assert [a[:3] for a in answers] == ["250", "250"]
    [event] = await gw.convert_remote(core.accepted[0])
    assert "before" in event.parts[0].text
    for part in event.parts:
        (part.text + (part.html or "") + (part.media.filename if part.media else "")).encode()


async def test_a_parser_that_is_away_defers_each_recipient(
    gateway: tuple[EmailGateway, Core],
) -> None:
    gw, core = gateway
    broken = MailParser(ParseLimits(), workers=1, timeout=30)
    await broken.start()
    gw._parser = broken  # a crashed worker, as the gateway would meet it
    for process in list(broken._pool._processes.values()):  # type: ignore[union-attr]
        process.kill()
    await asyncio.sleep(0.2)
    try:
        answers = await gw.receive("bob@example.org", [ROOM, OTHER], utf7_surrogate())
    finally:
        await broken.close()
    assert answers == [UNAVAILABLE, UNAVAILABLE] and core.accepted == []


async def test_the_store_away_for_one_recipient_defers_only_that_one(
    gateway: tuple[EmailGateway, Core],
) -> None:
    gw, core = gateway
    original = core.accept_remote
    calls = 0

    async def second_fails(item: object) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("database went away")
        return await original(item)  # type: ignore[arg-type]

    core.accept_remote = second_fails  # type: ignore[method-assign]
    answers = await gw.receive("bob@example.org", [ROOM, OTHER], utf7_surrogate())
    assert [a[:3] for a in answers] == ["250", "451"]


# --- the listener: well-formed lines whatever it is handed ---------------------------------------


class Answers:
    """A receiver that answers with what a test gives it."""

    def __init__(self, answers: list[str] | None = None, fail: bool = False) -> None:
        self.answers, self.fail = answers, fail

    def sender_refusal(self, mail_from: str) -> str | None:
        return None

    async def is_portal_address(self, address: str) -> bool:
        return True

    async def receive(
        self, mail_from: str, recipients: list[str], raw: bytes, **_: object
    ) -> list[str]:
        if self.fail:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        assert self.answers is not None
        return self.answers


async def _lmtp_two(receiver: Answers) -> tuple[str, str]:
    """One mail to two recipients over LMTP: the two answer lines after DATA."""
    port = free_port()
    server = await start_listener(receiver, listener_config("lmtp", port))  # type: ignore[arg-type]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        for line in (b"LHLO mx.test", b"MAIL FROM:<bob@example.org>",
                     b"RCPT TO:<a.aaaaaaaaaaaaaaaa@mail.test>",
                     b"RCPT TO:<b.bbbbbbbbbbbbbbbb@mail.test>", b"DATA"):  # fmt: skip
            writer.write(line + b"\r\n")
            while (await reader.readline())[3:4] == b"-":
                pass
        writer.write(b"From: bob@example.org\r\n\r\nhi\r\n.\r\n")
        async with asyncio.timeout(10):
            first, second = await reader.readline(), await reader.readline()
        writer.close()
        return first.decode("ascii").rstrip(), second.decode("ascii").rstrip()
    finally:
        server.close()
        await server.wait_closed()


async def test_lmtp_answers_each_recipient_even_when_receive_raises() -> None:
    assert await _lmtp_two(Answers(fail=True)) == (UNAVAILABLE, UNAVAILABLE)


async def test_lmtp_answers_each_recipient_when_receive_miscounts() -> None:
    assert await _lmtp_two(Answers(["250 OK"])) == (UNAVAILABLE, UNAVAILABLE)


async def test_lmtp_answer_lines_are_ascii_whatever_the_text() -> None:
    answers = await _lmtp_two(Answers(["554 5.6.0 Malformed mail: caf\u00e9 \ud800", "250 OK"]))
    assert answers == ("554 5.6.0 Malformed mail: caf? ?", "250 OK")


def test_smtp_line_repairs_or_replaces_answers() -> None:
    assert smtp_line("250 2.0.0 fine\r\nInjected: header") == "250 2.0.0 fine Injected: header"
    assert smtp_line("hello") == UNAVAILABLE
    assert smtp_line("354 go on") == UNAVAILABLE
    assert len(smtp_line("554 " + "x" * 2000)) <= 512
