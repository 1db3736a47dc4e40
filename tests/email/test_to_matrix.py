"""A received mail as Matrix events: subject, folded quotes, attachments, oversized mail."""

from __future__ import annotations

from email.message import EmailMessage

from bridge.email.protocol.parse import parse_mail
from bridge.email.to_matrix import MAX_TEXT_BYTES, mail_parts


def _raw(text: str, *, html: str | None = None, subject: str = "Budget", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob <bob@example.org>"
    msg["To"] = "room.abcdefghijklmnop@mail.test"
    msg["Subject"] = subject
    msg["Message-ID"] = "<1@example.org>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


async def test_a_new_conversation_shows_its_subject_in_bold() -> None:
    raw = _raw("Can we meet?")
    [part] = await mail_parts(parse_mail(raw), raw, show_subject=True, strip_quotes=True)
    assert part.text == "Budget\n\nCan we meet?"
    assert part.html is not None and part.html.startswith("<p><strong>Budget</strong></p>")
    assert not part.notice


async def test_a_reply_hides_the_subject_and_folds_the_quote_away() -> None:
    raw = _raw("Tuesday works.\n\nOn Mon, Alice wrote:\n> Can we meet?\n")
    [part] = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert part.text == "Tuesday works."
    assert part.html is not None
    assert "<details><summary>Quoted text</summary>" in part.html and "Can we meet?" in part.html


async def test_quotes_stay_when_stripping_is_off() -> None:
    raw = _raw("Tuesday works.\n\nOn Mon, Alice wrote:\n> Can we meet?\n")
    [part] = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=False)
    assert "> Can we meet?" in part.text and part.html is None


async def test_an_html_mail_without_a_text_part_gets_a_plain_body_from_its_html() -> None:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "bob@example.org", "Hi"
    msg.set_content("<p>Hello <b>world</b></p>", subtype="html")
    raw = msg.as_bytes()
    [part] = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert "Hello" in part.text and "world" in part.text and "<b>" not in part.text
    assert part.html is not None and "<b>world</b>" in part.html


async def test_attachments_follow_the_text_as_files() -> None:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "bob@example.org", "Offer"
    msg.set_content("See attached.")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="offer.pdf")
    raw = msg.as_bytes()
    text, file = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert text.part_id == "" and text.text == "See attached."
    assert file.part_id != "" and file.media is not None
    assert (file.media.filename, file.media.mimetype) == ("offer.pdf", "application/pdf")
    assert await file.media.read() == b"%PDF-1.4"


async def test_an_automatic_reply_is_a_notice() -> None:
    raw = _raw("I am out of office.", Auto_Submitted="auto-replied")
    [part] = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert part.notice


async def test_a_mail_too_long_for_one_event_is_cut_and_attached_whole() -> None:
    raw = _raw("word " * 20_000)
    text, eml = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert len(text.text.encode()) < MAX_TEXT_BYTES + 200 and "message.eml" in text.text
    assert eml.media is not None and eml.media.filename == "message.eml"
    assert await eml.media.read() == raw
