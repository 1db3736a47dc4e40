from __future__ import annotations

import email
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.email.protocol.addresses import InvalidAddress, is_own_message_id, message_id_for_event
from bridge.email.protocol.compose import (
    OutgoingAttachment,
    base_subject,
    compose_mail,
    reply_subject,
    subject_from_body,
)
from bridge.email.protocol.parse import ParsedMail, parse_mail

# An Outlook Message-ID: longer than fits on a folded header line.
OUTLOOK_ID = "<DB9PR07MB7897C9A2D3B5E0A1E2F3A4B5C6D7E8F9@DB9PR07MB7897.eurprd07.prod.outlook.com>"
BASE_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "X-Pontis-Loop", "MIME-Version"]


def compose(**overrides: Any) -> EmailMessage:
    """A mail from a portal to bob@example.org; keyword arguments replace the defaults."""
    arguments: dict[str, Any] = {
        "from_name": "Alice Example",
        "from_address": "Room.abcdefghijklmnop@Bridge.Example",
        "to": ["bob@example.org"],
        "subject": "Quarterly report",
        "message_id": message_id_for_event("$event", "bridge.example"),
        "text": "Here is the report.",
        "loop_marker": "pontis-hub",
        "date": datetime(2024, 1, 1, 9, 0, tzinfo=UTC),
    }
    return compose_mail(**{**arguments, **overrides})


def wire(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=policy.SMTP)


def round_trip(msg: EmailMessage) -> ParsedMail:
    return parse_mail(wire(msg))


def header_names(data: bytes) -> list[str]:
    return [name for name, _ in email.message_from_bytes(data, policy=policy.compat32).items()]


# --- subjects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Hello", "Hello"),
        ("Re: Hello", "Hello"),
        ("RE: AW: Fwd: Re: Hello", "Hello"),
        ("Re[2]: Hello", "Hello"),
        ("Re(3): Hello", "Hello"),
        ("WG: TR: Antw: SV: Sv: Fw: VS: Hello", "Hello"),
        ("Re : Réponse", "Réponse"),  # French typography
        ("Re:Hello", "Hello"),
        ("  Re:   spaced \t out  ", "spaced out"),
        ("Re: Re[2]: AW:  ", ""),
        ("Reply needed", "Reply needed"),
        ("Fwd without colon", "Fwd without colon"),
        ("Hello Re: there", "Hello Re: there"),
        ("Trésor: budget", "Trésor: budget"),
    ],
)
def test_base_subject(subject: str, base: str) -> None:
    assert base_subject(subject) == base


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("Hello", "Re: Hello"),
        ("Re: Re: Hello", "Re: Hello"),
        ("AW: Hello", "Re: Hello"),
        ("", "Re:"),  # a reply to an empty subject keeps Gmail's thread: same base subject
        ("Re:", "Re:"),
    ],
)
def test_reply_subject(subject: str, reply: str) -> None:
    assert reply_subject(subject) == reply


@given(st.text(max_size=100))
def test_reply_subject_is_stable(subject: str) -> None:
    reply = reply_subject(subject)
    assert reply_subject(reply) == reply
    assert base_subject(reply) == base_subject(subject)


def test_many_prefixes_are_stripped_quickly() -> None:
    assert base_subject("Re: " * 20_000 + "x") == "x"


@pytest.mark.parametrize(
    ("body", "subject"),
    [
        ("Hello Bob", "Hello Bob"),
        ("\n\n   First   line  \nsecond", "First line"),
        ("", "(no subject)"),
        ("  \n\t\n", "(no subject)"),
        ("tab\tand\x00nul\u2028", "tab and nul"),
        ("word " * 30, ("word " * 15).strip() + "…"),
        ("x" * 100, "x" * 77 + "…"),
    ],
)
def test_subject_from_body(body: str, subject: str) -> None:
    assert subject_from_body(body) == subject


@given(st.text(), st.integers(10, 100))
def test_subject_from_body_fits(body: str, max_len: int) -> None:
    subject = subject_from_body(body, max_len)
    assert 0 < len(subject) <= max(max_len, len("(no subject)"))
    assert "\n" not in subject and "\r" not in subject


# --- composing ---------------------------------------------------------------------------------


def test_plain_text_mail_round_trips() -> None:
    msg = compose()
    data = wire(msg)
    assert header_names(data) == [
        *BASE_HEADERS[:5],
        "X-Pontis-Loop",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    assert b"\r\n" in data and data.count(b"\n") == data.count(b"\r\n")
    mail = round_trip(msg)
    assert [(m.address, m.name) for m in mail.from_] == [
        ("room.abcdefghijklmnop@bridge.example", "Alice Example")
    ]
    assert [m.address for m in mail.to] == ["bob@example.org"]
    assert mail.subject == "Quarterly report"
    assert mail.message_id is not None and is_own_message_id(mail.message_id, "bridge.example")
    assert mail.date_ms == int(datetime(2024, 1, 1, 9, 0, tzinfo=UTC).timestamp() * 1000)
    assert mail.loop_markers == ["pontis-hub"]
    assert mail.text == "Here is the report.\n"
    assert mail.html is None and mail.attachments == [] and mail.defects == []
    assert not mail.auto_submitted


def test_html_makes_an_alternative() -> None:
    msg = compose(html="<p>Here is the <b>report</b>.</p>")
    assert msg.get_content_type() == "multipart/alternative"
    mail = round_trip(msg)
    assert mail.text == "Here is the report.\n"
    assert mail.html == "<p>Here is the <b>report</b>.</p>\n"


def test_attachments_make_a_mixed_mail() -> None:
    attachments = [
        OutgoingAttachment("../../Bericht für das Amt.pdf", "application/pdf", b"%PDF-1.7"),
        OutgoingAttachment("chart.png", "IMAGE/PNG", b"\x89PNG\r\n"),
        OutgoingAttachment("forwarded.eml", "message/rfc822", b"From: a@b.c\r\n\r\nx"),
        OutgoingAttachment("weird", "not a type", b"\x00"),
    ]
    msg = compose(html="<p>report</p>", attachments=attachments)
    assert msg.get_content_type() == "multipart/mixed"
    mail = round_trip(msg)
    assert mail.text == "Here is the report.\n" and mail.html == "<p>report</p>\n"
    assert [(a.filename, a.mimetype, a.data) for a in mail.attachments] == [
        ("Bericht für das Amt.pdf", "application/pdf", b"%PDF-1.7"),
        ("chart.png", "image/png", b"\x89PNG\r\n"),
        ("forwarded.eml", "application/octet-stream", b"From: a@b.c\r\n\r\nx"),
        ("weird", "application/octet-stream", b"\x00"),
    ]


def test_threading_headers() -> None:
    references = [f"<{i}@example.org>" for i in range(30)]
    msg = compose(in_reply_to=OUTLOOK_ID, references=[*references, "<bad id>", "no-brackets"])
    mail = round_trip(msg)
    assert mail.in_reply_to == [OUTLOOK_ID]
    assert mail.references == [references[0], *references[-18:], OUTLOOK_ID]
    # Python 3.11 would fold the long id into RFC 2047 encoded words: threads break.
    data = wire(msg)
    assert f"In-Reply-To: {OUTLOOK_ID}\r\n".encode() in data
    assert f" {OUTLOOK_ID}\r\n".encode() in data.split(b"References:")[1]
    assert b"=?" not in data.split(b"\r\n\r\n")[0]
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_in_reply_to_is_added_to_references_once() -> None:
    mail = round_trip(compose(in_reply_to="<parent@x>", references=["<root@x>", "<parent@x>"]))
    assert mail.references == ["<root@x>", "<parent@x>"]
    assert round_trip(compose(in_reply_to="<parent@x>")).references == ["<parent@x>"]


def test_auto_submitted_mail() -> None:
    msg = compose(auto_submitted="auto-replied")
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert round_trip(msg).auto_submitted


def test_reply_to() -> None:
    mail = round_trip(compose(reply_to="Room.abcdefghijklmnop@bridge.example"))
    assert [m.address for m in mail.reply_to] == ["room.abcdefghijklmnop@bridge.example"]


def test_dates() -> None:
    naive = round_trip(compose(date=datetime(2024, 1, 1, 9, 0)))
    assert naive.date_ms == int(datetime(2024, 1, 1, 9, 0, tzinfo=UTC).timestamp() * 1000)
    zoned = datetime(2024, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert round_trip(compose(date=zoned)).date_ms == naive.date_ms
    now = round_trip(compose(date=None)).date_ms
    assert now is not None and abs(now - datetime.now(UTC).timestamp() * 1000) < 5_000


def test_long_display_names_are_cut() -> None:
    mail = round_trip(compose(from_name="Ä" * 100))
    assert mail.from_[0].name == "Ä" * 64


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_address", "not an address"),
        ("from_address", "alice@example.org\r\nBcc: victim@example.org"),
        ("to", ["bob@example.org", "bob"]),
        ("to", ["bob@example.org, victim@example.org"]),
        ("reply_to", "<room@bridge.example>"),
    ],
)
def test_bad_addresses_are_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidAddress):
        compose(**{field: value})


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("to", [], "at least one recipient"),
        ("message_id", "abc@bridge.example", "not a Message-ID"),
        ("message_id", "<abc@x>\r\nBcc: victim@example.org", "not a Message-ID"),
        ("in_reply_to", "<a b@x>", "not a Message-ID"),
        ("loop_marker", "", "loop_marker"),
        ("loop_marker", "hub\r\nBcc: victim@example.org", "loop_marker"),
        ("auto_submitted", "auto-replied\nBcc: x", "auto_submitted"),
        ("loop_marker", "=?utf-8?q?=0D=0ABcc:_x?=", "loop_marker"),
    ],
)
def test_bad_values_are_refused(field: str, value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        compose(**{field: value})


# --- header injection -----------------------------------------------------------------------

LINE_BREAKS = [
    "\r\n",
    "\r",
    "\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
]


@pytest.mark.parametrize("line_break", LINE_BREAKS)
def test_display_name_and_subject_cannot_add_headers(line_break: str) -> None:
    injected = f"Mallory{line_break}Bcc: victim@example.org{line_break}{line_break}body"
    msg = compose(from_name=injected, subject=injected)
    data = wire(msg)
    assert header_names(data) == [*BASE_HEADERS, "Content-Type", "Content-Transfer-Encoding"]
    mail = parse_mail(data)
    assert mail.from_[0].name == "Mallory Bcc: victim@example.org body"
    assert mail.subject == "Mallory Bcc: victim@example.org body"
    assert mail.text == "Here is the report.\n"


@pytest.mark.parametrize(
    "encoded",
    [
        "=?utf-8?q?=0D=0ABcc:_victim@example.org?=",
        "Mallory =?utf-8?b?DQpCY2M6IHZpY3RpbUBleGFtcGxlLm9yZw==?=",
        "=?=?utf-8?q?=0D=0A?=?=",
    ],
)
def test_encoded_words_cannot_add_headers(encoded: str) -> None:
    # Python 3.11.7 decodes encoded words when a header is assigned and writes the CR LF out.
    data = wire(compose(from_name=encoded, subject=encoded))
    assert header_names(data) == [*BASE_HEADERS, "Content-Type", "Content-Transfer-Encoding"]
    mail = parse_mail(data)
    assert "=" in mail.subject and "\n" not in mail.subject and "Bcc" not in mail.subject[:3]


def visible(text: str) -> str:
    """What survives in a header: no whitespace, controls, line separators or bidi controls."""
    return "".join(
        c
        for c in text
        if not c.isspace()
        and unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp")
        and c not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    )


def header_text(max_size: int) -> st.SearchStrategy[str]:
    """Text with the pieces header injection is made of."""
    pieces = ["=?", "?=", "=?utf-8?q?", "=0D=0A", "=?utf-8?b?DQo=?=", "\r\n", '"', "\\", "<", ","]
    return st.lists(st.characters() | st.sampled_from(pieces), max_size=max_size // 4).map(
        "".join
    ) | st.text(max_size=max_size)


@settings(max_examples=50)
@given(
    name=header_text(80),
    subject=header_text(200),
)
def test_arbitrary_names_and_subjects_never_add_headers(name: str, subject: str) -> None:
    data = wire(compose(from_name=name, subject=subject))
    assert header_names(data) == [*BASE_HEADERS, "Content-Type", "Content-Transfer-Encoding"]
    assert data.isascii() and all(len(line) <= 998 for line in data.split(b"\r\n"))
    mail = parse_mail(data)
    assert mail.from_[0].address == "room.abcdefghijklmnop@bridge.example"
    assert visible(mail.subject) == visible(subject.replace("=?", "= ?"))


@settings(max_examples=30)
@given(st.text(max_size=300))
def test_arbitrary_bodies_round_trip(text: str) -> None:
    mail = round_trip(compose(text=text, html=text))
    expected = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    assert mail.text is not None and mail.text.rstrip("\n") == expected.rstrip("\n")
