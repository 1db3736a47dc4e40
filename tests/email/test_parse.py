from __future__ import annotations

import base64
import time
import unicodedata
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.email.protocol.parse import MalformedMail, ParsedMail, ParseLimits, parse_mail
from tests.email.mails import load, raw, samples, simple

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# --- real-looking client mails ----------------------------------------------------------------


def test_exchange_mail_with_bracketed_message_id() -> None:
    mail = parse_mail(load("outlook-reply.eml"))
    assert mail.message_id == "<[a1b2c3d4e5f6]@[partner.example]>"
    assert mail.from_[0].address == "claire.dupont@partner.example"
    assert mail.from_[0].name == "Dupont, Claire"
    assert [m.address for m in mail.to] == ["room-report.abcdefghijklmnop@bridge.agency.example"]
    assert mail.subject == "RE: Quarterly report"
    assert mail.in_reply_to == ["<k7jwjrfoktwiis2lsg7glpwsxs@bridge.agency.example>"]
    assert mail.references == ["<k7jwjrfoktwiis2lsg7glpwsxs@bridge.agency.example>"]
    assert mail.date_ms == ms("2024-01-02T10:15:00+00:00")
    assert mail.text is not None and "Voilà nos chiffres \u2013 merci." in mail.text  # windows-1252
    assert mail.html is not None and 'id="divRplyFwdMsg"' in mail.html
    assert mail.attachments == []
    assert mail.defects == []
    assert not mail.auto_submitted and not mail.list_mail and mail.bounce is None
    # The folded header comes back as one line.
    assert len(mail.authentication_results) == 1
    assert "\n" not in mail.authentication_results[0]
    assert "header.from=partner.example" in mail.authentication_results[0]


def test_minimal_exchange_message_id() -> None:
    mail = parse_mail(simple("Message-ID: <[abc]@[example]>\nIn-Reply-To: <[def]@[example]>"))
    assert mail.message_id == "<[abc]@[example]>"
    assert mail.in_reply_to == ["<[def]@[example]>"]


def test_gmail_reply() -> None:
    mail = parse_mail(load("gmail-reply.eml"))
    assert mail.message_id == "<CAF1a2b3c4d5e6f7g8h9i0jKLmnOPqrSTuvWXyz=AbCdEf+gh@mail.gmail.com>"
    assert mail.from_[0].name == "Bob Sender"
    assert mail.text is not None
    assert mail.text.startswith(
        "Thanks Alice, the numbers look right. I\u2019ll forward them to the board."
    )
    assert mail.html is not None and mail.html.startswith('<div dir="ltr">Thanks Alice')
    assert [v.split(";")[1].split("=")[0].strip() for v in mail.authentication_results] == [
        "dkim",
        "spf",
        "dmarc",
    ]


def test_thunderbird_flowed_text_is_joined() -> None:
    mail = parse_mail(load("thunderbird-reply.eml"))
    assert mail.from_[0].name == "Jürgen Beispiel"
    assert mail.text is not None
    assert mail.text.startswith(
        "Danke, Alice. Die Zahlen für das vierte Quartal stimmen mit unseren überein; "
        "wir treffen uns am Freitag.\n\n-- \nJürgen Beispiel\n"
    )


def test_apple_mail_inline_image_keeps_its_content_id() -> None:
    mail = parse_mail(load("apple-mail-inline-image.eml"))
    assert mail.html is not None and 'src="cid:7F3C9A2E-6C4B-4F0E-9E49-2B0B8C1D5A10"' in mail.html
    assert mail.text is not None and mail.text.startswith("Here is the chart you asked for.")
    [image] = mail.attachments
    assert image.filename == "chart.png"
    assert image.mimetype == "image/png"
    assert image.content_id == "7F3C9A2E-6C4B-4F0E-9E49-2B0B8C1D5A10"
    assert image.inline is True
    assert image.data == PNG


# --- charsets and encodings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("text/plain; charset=x-unknown", "Grüße".encode(), "Grüße"),
        ("text/plain; charset=x-unknown", b"caf\xe9", "café"),  # not UTF-8: windows-1252
        ("text/plain; charset=us-ascii", "naïve".encode(), "naïve"),  # mislabelled UTF-8
        ("text/plain; charset=iso-8859-1", b"\x80 5", "€ 5"),  # windows-1252 in disguise
        ("text/plain; charset=utf-8", b"\xef\xbb\xbfBOM", "BOM"),
        ("text/plain; charset=gb2312", "电子邮件".encode("gb18030"), "电子邮件"),
        ("text/plain; charset=rot13", b"plain", "plain"),  # a codec, but not a text encoding
        ("text/plain; charset=utf-8", b"a\x00b\r\nc\rd", "ab\nc\nd"),  # NULs, line ends
        ("text/plain", b"\x81\x8d\xff", "\x81\x8d\xff"),  # nothing fits: ISO-8859-1
    ],
)
def test_body_charset_fallbacks(content_type: str, body: bytes, text: str) -> None:
    head = f"From: bob@example.org\r\nContent-Type: {content_type}\r\n\r\n".encode()
    assert parse_mail(head + body).text == text


def test_encoded_and_raw_8bit_headers_are_decoded() -> None:
    mail = parse_mail(
        "From: Jürgen Müller <j@example.de>\r\n"
        "Subject: =?iso-8859-1?q?R=E9union?= =?utf-8?b?4oCT?= budget\r\n\r\nx".encode()
    )
    assert mail.from_[0].name == "Jürgen Müller"
    assert mail.subject == "Réunion\u2013 budget"


def test_subject_is_one_clean_line() -> None:
    mail = parse_mail(
        simple("Subject: =?utf-8?q?Hello=0D=0ABcc:_x?=\n  folded\tand\x07 \u202eevil")
    )
    assert mail.subject == "Hello Bcc: x folded and evil"


def test_format_flowed_with_delsp_and_quotes() -> None:
    body = "one \ntwo\n> quoted \n> line\n>> deeper\n-- \nsig"
    mail = parse_mail(simple("Content-Type: text/plain; format=flowed; delsp=yes", body))
    assert mail.text == "onetwo\n> quotedline\n>> deeper\n-- \nsig\n"


def test_bad_base64_attachment_is_a_defect_not_an_error() -> None:
    mail = parse_mail(
        raw("""
            From: bob@example.org
            Content-Type: multipart/mixed; boundary=b

            --b
            Content-Type: text/plain

            See attachment.
            --b
            Content-Type: image/png
            Content-Transfer-Encoding: base64
            Content-Disposition: attachment; filename=chart.png

            iVBORw0KGgo!!!*
            --b--
            """)
    )
    assert mail.text == "See attachment."
    [attachment] = mail.attachments
    assert attachment.filename == "chart.png"
    assert attachment.data.startswith(b"\x89PNG")
    assert any(d.startswith("InvalidBase64") and "(image/png)" in d for d in mail.defects)


# --- MIME bombs -------------------------------------------------------------------------------


def nested_multiparts(depth: int) -> bytes:
    head = "From: bob@example.org\n"
    for level in range(depth):
        head += f"Content-Type: multipart/mixed; boundary=b{level}\n\n--b{level}\n"
    return raw(head + "Content-Type: text/plain\n\ndeep\n")


def test_ten_levels_of_nesting_are_fine() -> None:
    assert parse_mail(nested_multiparts(10)).text == "deep"


def test_eleven_levels_of_nesting_are_refused() -> None:
    with pytest.raises(MalformedMail, match="MIME nesting deeper than 10 levels"):
        parse_mail(nested_multiparts(11))
    assert parse_mail(nested_multiparts(11), max_depth=11).text == "deep"


@pytest.mark.parametrize(
    ("bomb", "refusal"),
    [
        pytest.param(
            nested_multiparts(20_000), "MIME nesting deeper than 10", id="nested-multiparts"
        ),
        pytest.param(
            raw("From: bob@example.org\n" + "Content-Type: message/rfc822\n\n" * 20_000 + "x\n"),
            "MIME nesting deeper than 10",
            id="nested-messages",
        ),
        pytest.param(
            raw(
                "From: bob@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
                + "--b\nContent-Type: text/plain\n\nx\n" * 10_000
                + "--b--\n"
            ),
            "more than 100 MIME parts",
            id="10k-parts",
        ),
        pytest.param(
            raw(
                "From: bob@example.org\nContent-Type: multipart/mixed; boundary*=''b\n\n"
                + "--b\n\n" * 1_000_000
                + "--b--\n"
            ),
            "more than 100 MIME parts",
            id="rfc2231-boundary-million-parts",
        ),
        pytest.param(
            raw(
                "From: bob@example.org\nContent-Type: multipart/mixed;\n boundary*0*=''%62;"
                " boundary*1=b\n\n" + "--bb\n\n" * 100_000 + "--bb--\n"
            ),
            "more than 100 MIME parts",
            id="rfc2231-continued-boundary",
        ),
        pytest.param(
            raw("From: bob@example.org\n" + "X-Filler: x\n" * 100_000 + "\nbody\n"),
            "more than 5000 header lines",
            id="100k-header-lines",
        ),
        pytest.param(
            raw("From: bob@example.org\nX-Long: " + "x" * 2_000_000 + "\n\nbody\n"),
            "bytes of headers",
            id="2mb-header",
        ),
    ],
)
def test_mime_bombs_are_refused(bomb: bytes, refusal: str) -> None:
    """The parser counts what it builds: whatever the boundary syntax, it stops at the limit."""
    with pytest.raises(MalformedMail, match=refusal):
        parse_mail(bomb)


@pytest.mark.parametrize("end", ["", "--b--\n"])
def test_delimiter_lines_without_parts_between_them_are_no_bomb(end: str) -> None:
    """The stdlib sees no part in 200,000 bare delimiter lines (nothing to count, linear)."""
    head = "From: bob@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
    assert parse_mail(raw(head + "--b\n" * 200_000 + end)).attachments == []


def test_decoded_size_is_limited() -> None:
    body = base64.encodebytes(b"x" * 300_000).decode()
    mail = raw(
        "From: bob@example.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        f"{body}--b--\n"
    )
    assert len(parse_mail(mail).attachments[0].data) == 300_000
    with pytest.raises(MalformedMail, match="bytes once decoded"):
        parse_mail(mail, limits=ParseLimits(max_decoded_bytes=200_000))


def test_part_limit_counts_every_part() -> None:
    parts = "".join(f"--b\nContent-Type: text/plain\n\n{i}\n" for i in range(5))
    mail = raw(
        f"From: bob@example.org\nContent-Type: multipart/mixed; boundary=b\n\n{parts}--b--\n"
    )
    assert len(parse_mail(mail, max_parts=6).attachments) == 4
    with pytest.raises(MalformedMail, match="more than 5 MIME parts"):
        parse_mail(mail, max_parts=5)


# --- senders and spoofing ---------------------------------------------------------------------


def test_two_from_headers_are_refused() -> None:
    with pytest.raises(MalformedMail, match="2 From headers"):
        parse_mail(simple("From: ceo@agency.example"))


def test_from_with_several_mailboxes_needs_a_sender() -> None:
    two = "From: bob@example.org, ceo@agency.example"
    with pytest.raises(MalformedMail, match="several mailboxes and there is no Sender"):
        parse_mail(simple(sender=two))
    mail = parse_mail(simple("Sender: Bob <bob@example.org>", sender=two))
    assert [m.address for m in mail.from_] == ["bob@example.org", "ceo@agency.example"]
    assert mail.sender is not None and mail.sender.address == "bob@example.org"


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("", "no From header"),
        ("From: undisclosed-recipients:;", "names no mailbox"),
        ("From: Bob <bob>", "ambiguous"),
        ("From: bob@example.org.", "invalid address"),
        # Parser-ambiguity spoofing (espoofer): others may read the second address.
        ("From: Mallory <mallory@evil.example> <ceo@agency.example>", "ambiguous"),
        ("From: Mallory <mallory@evil.example>\n <ceo@agency.example>", "ambiguous"),
        ("From: mallory@evil.example <ceo@agency.example>", "ambiguous"),
        ("From: <mallory@evil.example (ceo@agency.example)", "ambiguous"),
        ("From: <bob@exa mple.org>", "ambiguous"),
    ],
)
def test_unusable_from_is_refused(sender: str, reason: str) -> None:
    with pytest.raises(MalformedMail, match=reason):
        parse_mail(simple(sender=sender))


def test_obsolete_but_unambiguous_from_is_accepted() -> None:
    mail = parse_mail(simple(sender="From: Bob A. Smith <bob@example.org>"))
    assert (mail.from_[0].address, mail.from_[0].name) == ("bob@example.org", "Bob A. Smith")


def test_encoded_display_name_cannot_pose_as_an_address() -> None:
    mail = parse_mail(
        simple(sender="From: =?utf-8?b?PGNlb0BhZ2VuY3kuZXhhbXBsZT4=?= <mallory@evil.example>")
    )
    assert mail.from_[0].address == "mallory@evil.example"
    assert mail.from_[0].name == "<ceo@agency.example>"


def test_bad_recipients_are_skipped_as_defects() -> None:
    mail = parse_mail(simple("Cc: Carol <carol@example.org>, broken, ,\nReply-To: x"))
    assert [m.address for m in mail.to] == ["room.abcdefghijklmnop@bridge.example"]
    assert [(m.address, m.name) for m in mail.cc] == [("carol@example.org", "Carol")]
    assert mail.reply_to == []
    assert any("Cc header: skipped" in d for d in mail.defects)
    assert any("Reply-To header: skipped" in d for d in mail.defects)


@pytest.mark.parametrize(
    "recipients",
    [",", '"', "("],
    ids=["commas", "quotes", "nested-comments"],
)
def test_huge_recipient_lists_are_read_in_linear_time(recipients: str) -> None:
    # The stdlib's RFC 5322 parser takes minutes on 100 KB of commas or quotes.
    started = time.monotonic()
    mail = parse_mail(simple(sender="From: bob@example.org", headers="Cc: " + recipients * 20_000))
    assert time.monotonic() - started < 2
    assert mail.from_[0].address == "bob@example.org"
    assert any(d.startswith("Cc header") for d in mail.defects)


def test_an_overlong_from_is_refused() -> None:
    with pytest.raises(MalformedMail, match="longer than 1000 characters"):
        parse_mail(simple(sender="From: " + '"' * 2_000 + " <bob@example.org>"))


def test_second_recipient_headers_are_ignored() -> None:
    mail = parse_mail(simple("To: carol@example.org"))
    assert [m.address for m in mail.to] == ["room.abcdefghijklmnop@bridge.example"]
    assert "2 To headers; the first is used" in mail.defects


# --- auto-replies, lists, loops, dates --------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "sender", "auto"),
    [
        ("", "From: bob@example.org", False),
        ("Auto-Submitted: auto-replied", "From: bob@example.org", True),
        ("Auto-Submitted: auto-generated (vacation)", "From: bob@example.org", True),
        ("Auto-Submitted: no", "From: bob@example.org", False),
        ("Auto-Submitted: No (comment)", "From: bob@example.org", False),
        ("X-Autoreply: yes", "From: bob@example.org", True),
        ("X-Autorespond: I am on holiday", "From: bob@example.org", True),
        ("Precedence: bulk", "From: bob@example.org", True),
        ("Precedence: JUNK", "From: bob@example.org", True),
        ("Precedence: list", "From: bob@example.org", True),
        ("Precedence: auto_reply", "From: bob@example.org", True),
        ("Precedence: first-class", "From: bob@example.org", False),
        ("Return-Path: <>", "From: bob@example.org", True),
        ("", "From: MAILER-DAEMON@mx.example.org", True),
        ("", "From: Postmaster <postmaster@example.org>", True),
    ],
)
def test_auto_submitted(headers: str, sender: str, auto: bool) -> None:
    assert parse_mail(simple(headers, sender=sender)).auto_submitted is auto


@pytest.mark.parametrize(
    ("headers", "is_list"),
    [
        ("", False),
        ("List-Id: Budget <budget.lists.example.org>", True),
        ("List-Unsubscribe: <mailto:leave@lists.example.org>", True),
    ],
)
def test_list_mail(headers: str, is_list: bool) -> None:
    assert parse_mail(simple(headers)).list_mail is is_list


def test_loop_markers_are_listed_in_order() -> None:
    mail = parse_mail(simple("X-Pontis-Loop: hub-a\nX-Pontis-Loop: hub-b"))
    assert mail.loop_markers == ["hub-a", "hub-b"]


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 2 Jan 2024 10:15:00 +0100", ms("2024-01-02T09:15:00+00:00")),
        ("2 Jan 2024 10:15 -0000", ms("2024-01-02T10:15:00+00:00")),  # zone unknown: UTC
        ("Tue, 2 Jan 2024 10:15:00 GMT", ms("2024-01-02T10:15:00+00:00")),
    ],
)
def test_dates(date: str, expected: int) -> None:
    assert parse_mail(simple(f"Date: {date}")).date_ms == expected


@pytest.mark.parametrize("date", ["yesterday", "Tue, 2 Jan 10000 10:15:00 +0000", ""])
def test_unreadable_dates_are_defects(date: str) -> None:
    mail = parse_mail(simple(f"Date: {date}"))
    assert mail.date_ms is None
    assert "the Date header cannot be read" in mail.defects


def test_long_references_keep_the_root_and_the_nearest() -> None:
    ids = [f"<{i}@example.org>" for i in range(150)]
    mail = parse_mail(simple("References: " + "\n ".join(ids)))
    assert mail.references == [ids[0], *ids[-99:]]
    assert "References cut from 150 to 100 ids" in mail.defects


# --- delivery status notifications ----------------------------------------------------------


def test_postfix_bounce() -> None:
    mail = parse_mail(load("postfix-dsn.eml"))
    assert mail.bounce is not None
    assert mail.bounce.original_message_id == "<k7jwjrfoktwiis2lsg7glpwsxs@bridge.agency.example>"
    assert mail.bounce.status == "5.1.1"
    assert mail.bounce.diagnostic == (
        "550 5.1.1 <nobody@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert mail.bounce.recipients == ["nobody@example.org"]
    assert mail.auto_submitted
    assert mail.from_[0].address == "mailer-daemon@mx.agency.example"
    assert mail.text is not None and mail.text.startswith("This is the mail system")


def test_postfix_bounce_with_headers_only() -> None:
    mail = parse_mail(load("postfix-dsn-headers.eml"))
    assert mail.bounce is not None
    assert mail.bounce.original_message_id == "<q3y5d4oqyqc2ckwzqu6m5y2h7m@bridge.agency.example>"
    assert mail.bounce.status == "5.4.7"
    assert mail.bounce.diagnostic.startswith("delivery temporarily suspended")
    assert mail.bounce.recipients == ["slow@slow.example.net", "gone.user@partner.example"]


def test_a_delay_warning_is_not_a_bounce() -> None:
    mail = parse_mail(load("postfix-delay.eml"))
    assert mail.bounce is None
    assert mail.auto_submitted


def test_a_report_without_from_is_accepted() -> None:
    without_from = load("postfix-dsn.eml").replace(
        b"From: MAILER-DAEMON@mx.agency.example (Mail Delivery System)\r\n", b""
    )
    mail = parse_mail(without_from)
    assert mail.from_ == []
    assert mail.bounce is not None and mail.bounce.status == "5.1.1"
    assert mail.auto_submitted


def test_other_reports_still_need_a_from() -> None:
    report = raw("""
        Content-Type: multipart/report; report-type=disposition-notification; boundary=b

        --b
        Content-Type: text/plain

        Your message was displayed.
        --b--
        """)
    with pytest.raises(MalformedMail, match="no From header"):
        parse_mail(report)


# --- whatever the bytes ------------------------------------------------------------------------

SAMPLES = samples()


def parses_or_refuses(data: bytes) -> ParsedMail | None:
    try:
        return parse_mail(data)
    except MalformedMail as exc:
        assert str(exc)
        return None


@settings(max_examples=80)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    parses_or_refuses(data)


@st.composite
def mutated_mails(draw: st.DrawFn) -> bytes:
    mail = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(mail)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if action == "insert":
            snippet = draw(
                st.binary(max_size=20)
                | st.sampled_from(
                    [
                        b"\r\n",
                        b"\r\n\r\n",
                        b"--",
                        b"=?",
                        b"?=",
                        b"<",
                        b">",
                        b"@",
                        b";",
                        b'"',
                        b"\x00",
                        b"\xff",
                        b"Content-Type: multipart/mixed; boundary=x\r\n",
                        b"\r\n--x\r\n",
                        b"From: a@b.c\r\n",
                        b"=?x-unknown?b?////?=",
                        b"(",
                        b")",
                        b"\\",
                        b"\t",
                    ]
                )
            )
            mail[at:at] = snippet
        elif action == "delete":
            del mail[at : at + draw(st.integers(1, 50))]
        elif action == "replace" and at < len(mail):
            mail[at] = draw(st.integers(0, 255))
        else:
            mail[at:at] = mail[at : at + draw(st.integers(1, 200))]
    return bytes(mail)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_mails())
def test_mutated_mails_never_raise_anything_else(data: bytes) -> None:
    parses_or_refuses(data)


header_text = st.lists(
    st.characters(codec="utf-8")
    | st.sampled_from(
        ["\r\n", "\r\n ", "=?", "?=", "=?utf-8?q?", "<", ">", "@", ",", ";", '"', "("]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=60)
@given(name=header_text, subject=header_text, ids=header_text, recipients=header_text)
def test_arbitrary_header_values_never_raise_anything_else(
    name: str, subject: str, ids: str, recipients: str
) -> None:
    mail = (
        f"From: {name} <bob@example.org>\r\nTo: {recipients}\r\nSubject: {subject}\r\n"
        f"Message-ID: {ids}\r\nReferences: {ids}\r\nContent-Type: text/plain; charset={name}\r\n\r\nx"
    ).encode()
    parsed = parses_or_refuses(mail)
    if parsed is not None:
        for text in [parsed.subject, *(m.name for m in parsed.from_ + parsed.to)]:
            assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in text)
            assert not any(
                c in text for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
            )
