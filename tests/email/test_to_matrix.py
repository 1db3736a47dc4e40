"""A received mail as Matrix events: subject, folded quotes, attachments, oversized mail."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from bridge.email import to_matrix
from bridge.email.protocol.parse import parse_mail
from bridge.email.to_matrix import MAX_HTML_CHARS, MAX_TEXT_BYTES, mail_parts


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


def _html_only(html: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "bob@example.org", "Hi"
    msg.set_content(html, subtype="html")
    return msg.as_bytes()


_MIB = 1 << 20


async def test_a_hostile_html_only_mail_gives_its_text_and_the_whole_mail() -> None:
    # 1 MiB of nested divs took 700 s and then failed with RecursionError in parse_html.
    deep = _MIB // 11
    raw = _html_only("<p>Dear all,</p>" + "<div>" * deep + "deep" + "</div>" * deep)
    text, eml = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert text.text == "Dear all,\n\n[The mail is too long for one message: see message.eml]"
    assert text.html is None
    assert eml.media is not None and await eml.media.read() == raw


@pytest.mark.parametrize(
    ("unit", "letters"),
    # Each of the first three reads as one unfinished tag or comment, as in browsers; the last
    # makes html5ever re-open every earlier <b> in each new paragraph.
    [("<a", ""), ("<!--", ""), ("</", ""), ("<p><b id={k}>x", "x")],
)
async def test_hostile_markup_in_an_html_only_mail_gives_sane_text(unit: str, letters: str) -> None:
    raw = _html_only("".join(unit.format(k=k) for k in range(_MIB // len(unit))))
    text, eml = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    content, _ = text.text.rsplit("[The mail is too long", 1)
    assert set("".join(content.replace("*", "").split())) == set(letters)
    assert len(text.text.encode()) < MAX_TEXT_BYTES + 200
    assert eml.media is not None and eml.media.filename == "message.eml"


async def test_a_long_html_only_mail_is_read_far_enough_to_fill_the_event() -> None:
    paragraph = '<p style="margin:0"><span style="font-family:Calibri">Hello world.</span></p>\n'
    raw = _html_only(paragraph * (_MIB // len(paragraph)))
    text, _ = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert text.text.count("Hello world.") > 1_500
    assert len(text.text.encode()) < MAX_TEXT_BYTES + 200 and "message.eml" in text.text


async def test_a_cut_quote_still_says_the_mail_is_attached_whole() -> None:
    history = "<p>earlier words</p>" * (MAX_HTML_CHARS // 20)
    html = f'<p>New answer</p><div class="gmail_quote">On Monday Bob wrote:{history}</div>'
    raw = _raw("New answer", html=html)
    text, eml = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert text.text.startswith("New answer") and "message.eml" in text.text
    assert eml.media is not None and await eml.media.read() == raw


async def test_the_quote_stripper_reads_only_as_much_text_as_can_be_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It runs on the event loop: a 24 MiB text would stall every room for seconds."""
    seen: list[int] = []
    strip = to_matrix.strip_quoted_text

    def measured(text: str) -> tuple[str, str | None]:
        seen.append(len(text))
        return strip(text)

    monkeypatch.setattr(to_matrix, "strip_quoted_text", measured)
    # The new text hides behind a huge quote: cut before stripping, so the mail is marked cut.
    raw = _raw("On Mon, Bob wrote:\n" + "> quoted line here\n" * 60_000 + "New answer\n")
    text, eml = await mail_parts(parse_mail(raw), raw, show_subject=False, strip_quotes=True)
    assert seen and max(seen) <= to_matrix.MAX_PLAIN_CHARS
    assert "message.eml" in text.text
    assert eml.media is not None and await eml.media.read() == raw
