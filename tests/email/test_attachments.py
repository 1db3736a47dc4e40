from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.email.protocol.filenames import sanitize_filename
from bridge.email.protocol.parse import parse_mail
from tests.email.mails import raw, simple

# --- file names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mimetype", "safe"),
    [
        ("report.pdf", "application/pdf", "report.pdf"),
        ("../../etc/passwd", "text/plain", "passwd"),
        ("C:\\Windows\\System32\\evil.bat", "application/octet-stream", "evil.bat"),
        ("invoice\u202efdp.exe", "application/pdf", "invoicefdp.exe"),
        ("zero\u200bwidth\x00\x1f.txt", "text/plain", "zerowidth.txt"),
        ("tab\there\nnewline.txt", "text/plain", "tab here newline.txt"),
        ('what?<is>:"this"|*.txt', "text/plain", "what__is___this___.txt"),
        ("  ..hidden.  ", "text/plain", "hidden"),
        ("=?utf-8?b?UsOpc3Vtw6kucGRm?=", "application/pdf", "Résumé.pdf"),
        ("e\u0301te\u0301.txt", "text/plain", "été.txt"),  # NFC
        ("..", "image/png", "attachment.png"),
        ("", "text/plain", "attachment.txt"),
        (None, "image/jpeg", "attachment.jpg"),
        (None, "message/rfc822", "attachment.eml"),
        (None, "application/x-unknown", "attachment"),
    ],
)
def test_sanitize_filename(name: str | None, mimetype: str, safe: str) -> None:
    assert sanitize_filename(name, mimetype) == safe


def test_long_filenames_keep_their_extension() -> None:
    safe = sanitize_filename("é" * 300 + ".pdf", "application/pdf")
    assert safe.endswith("é.pdf")
    assert len(safe.encode()) <= 255
    assert len(sanitize_filename("x" * 300, "text/plain").encode()) == 255


@settings(max_examples=80)
@given(st.text(max_size=300), st.sampled_from(["text/plain", "image/png", "application/x-foo"]))
def test_sanitized_filenames_are_always_safe(name: str, mimetype: str) -> None:
    safe = sanitize_filename(name, mimetype)
    assert safe and len(safe.encode()) <= 255
    assert "/" not in safe and "\\" not in safe and safe not in (".", "..")
    assert safe.isprintable() and not safe.startswith((".", " ")) and not safe.endswith(" ")
    assert not any(c in safe for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# --- attachments and the body ---------------------------------------------------------------


def test_attachment_filenames_from_headers() -> None:
    mail = parse_mail(
        raw("""
            From: bob@example.org
            Content-Type: multipart/mixed; boundary=b

            --b
            Content-Type: text/plain

            Files.
            --b
            Content-Type: application/octet-stream; name="../../etc/passwd"

            a
            --b
            Content-Type: application/pdf
            Content-Disposition: attachment; filename*=utf-8''%E2%80%AEfdp.exe

            b
            --b
            Content-Type: application/pdf
            Content-Disposition: attachment;
             filename*0*=utf-8''Bericht%20f%C3%BCr;
             filename*1*=%20das%20Amt.pdf

            c
            --b
            Content-Type: text/plain
            Content-Disposition: attachment; filename="Größe.txt"

            d
            --b--
            """)
    )
    assert mail.text == "Files."
    assert [a.filename for a in mail.attachments] == [
        "passwd",
        "fdp.exe",
        "Bericht für das Amt.pdf",
        "Größe.txt",  # raw UTF-8 in the header
    ]


def test_body_choice_skips_attachments_and_follows_related_start() -> None:
    mail = parse_mail(
        raw("""
            From: bob@example.org
            Content-Type: multipart/mixed; boundary=m

            --m
            Content-Type: text/plain
            Content-Disposition: attachment; filename=notes.txt

            not the body
            --m
            Content-Type: multipart/alternative; boundary=a

            --a
            Content-Type: text/plain

            plain body
            --a
            Content-Type: multipart/related; boundary=r; start="<root@x>"

            --r
            Content-Type: image/gif
            Content-ID: <logo@x>

            GIF
            --r
            Content-Type: text/html
            Content-ID: <root@x>

            <p>html body <img src="cid:logo@x"></p>
            --r--
            --a--
            --m
            Content-Type: message/rfc822

            From: carol@example.org
            Subject: forwarded

            inner
            --m--
            """)
    )
    assert mail.text == "plain body"
    assert mail.html == '<p>html body <img src="cid:logo@x"></p>'
    notes, logo, forwarded = mail.attachments
    assert (notes.filename, notes.data, notes.inline) == ("notes.txt", b"not the body", False)
    assert (logo.content_id, logo.inline, logo.mimetype) == ("logo@x", True, "image/gif")
    assert forwarded.filename == "attachment.eml"
    assert parse_mail(forwarded.data).subject == "forwarded"


def test_a_mail_that_is_only_an_attachment_has_no_body() -> None:
    mail = parse_mail(
        simple("Content-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf")
    )
    assert mail.text is None and mail.html is None
    assert [a.filename for a in mail.attachments] == ["a.pdf"]
