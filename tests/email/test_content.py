"""What a reader expects to see of a mail: images in place, every attachment, signatures and
encryption said plainly, and attachments withheld by policy named with the reason."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from bridge.core import INLINE_URL, MessagePart
from bridge.email.protocol.parse import parse_mail
from bridge.email.to_matrix import SECURITY_KEY, AttachmentPolicy, mail_parts
from tests.email.mails import load
from tests.email.smime import CA, signed_mail

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


async def _parts(
    raw: bytes, policy: AttachmentPolicy | None = None, **parse: str
) -> list[MessagePart]:
    return await mail_parts(
        parse_mail(raw, **parse), raw, show_subject=False, strip_quotes=True, policy=policy
    )


def _inline_mail(images: int = 1, extra_files: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "Bob <bob@example.org>", "Chart"
    msg.set_content("Here is the chart.")
    html = "<p>Here is the chart:</p>" + "".join(
        f'<p><img src="cid:chart{i}@example.org" alt="chart {i}"></p>' for i in range(images)
    ) + "<p>Best, Bob</p>"  # fmt: skip
    msg.add_alternative(html, subtype="html")
    html_part = msg.get_payload()[1]
    for i in range(images):
        html_part.add_related(
            PNG, "image", "png", cid=f"<chart{i}@example.org>", filename=f"chart{i}.png"
        )
    for i in range(extra_files):
        msg.add_attachment(
            f"file {i}".encode(), maintype="application", subtype="pdf", filename=f"doc{i}.pdf"
        )
    return msg.as_bytes()


async def test_an_inline_image_stays_where_the_html_shows_it() -> None:
    [text] = await _parts(_inline_mail())
    assert text.html is not None
    placeholder = f"{INLINE_URL}image1"
    assert f'src="{placeholder}"' in text.html
    assert (
        text.html.index("Here is the chart")
        < text.html.index(placeholder)
        < text.html.index("Best, Bob")
    )
    [(key, image)] = text.inline.items()
    assert key == "image1" and image.mimetype == "image/png" and await image.read() == PNG


async def test_an_apple_mail_inline_image_is_placed_not_sent_as_a_file() -> None:
    raw = load("apple-mail-inline-image.eml")
    parts = await _parts(raw)
    assert parts[0].html is not None and INLINE_URL in parts[0].html
    assert "cid:" not in parts[0].html
    assert [p for p in parts if p.media is not None and p.media.mimetype.startswith("image/")] == []


async def test_a_mail_with_three_attachments_arrives_with_all_three() -> None:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "bob@example.org", "Files"
    msg.set_content("Three files.")
    files = {"a.pdf": b"%PDF a", "b.txt": b"text b\n", "c.png": PNG}
    for name, data in files.items():
        main, sub = {
            "pdf": ("application", "pdf"),
            "txt": ("text", "plain"),
            "png": ("image", "png"),
        }[name[-3:]]
        if main == "text":
            msg.add_attachment(data.decode(), subtype=sub, filename=name)
        else:
            msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    text, *rest = await _parts(msg.as_bytes())
    assert text.text == "Three files."
    got = {p.media.filename: await p.media.read() for p in rest if p.media is not None}
    assert got == files and len({p.part_id for p in rest}) == 3


async def test_files_outside_the_policy_are_withheld_with_a_notice_naming_them() -> None:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "bob@example.org", "Files"
    msg.set_content("See files.")
    msg.add_attachment(
        b"MZ" * 10, maintype="application", subtype="x-msdownload", filename="run.exe"
    )
    msg.add_attachment(
        b"%PDF" + b"x" * 3000, maintype="application", subtype="pdf", filename="big.pdf"
    )
    msg.add_attachment(b"%PDF small", maintype="application", subtype="pdf", filename="small.pdf")
    policy = AttachmentPolicy(allowed_types=("application/pdf", "image/*"), max_bytes=2048)
    parts = await _parts(msg.as_bytes(), policy)
    assert [p.media.filename for p in parts if p.media is not None] == ["small.pdf"]
    [notice] = [p for p in parts if p.part_id == "withheld"]
    assert notice.notice and "2 files were not passed on" in notice.text
    assert "run.exe: application/x-msdownload files are not allowed here" in notice.text
    assert "big.pdf: 2 KiB, larger than the 2 KiB allowed per file" in notice.text


async def test_an_inline_image_outside_the_policy_is_not_shown_and_is_named() -> None:
    parts = await _parts(_inline_mail(), AttachmentPolicy(allowed_types=("application/pdf",)))
    assert parts[0].inline == {} and INLINE_URL not in (parts[0].html or "")
    assert "chart0.png: image/png files are not allowed here" in parts[-1].text


def _with_program(text: str, content_type: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@one.example", "r@mail.test", "Invoice"
    msg.set_content(text)
    msg.add_attachment(
        b"MZ\x90\x00" + b"\x00" * 2000, maintype="application", subtype="x-msdownload",
        filename="invoice.exe",
    )  # fmt: skip
    raw = msg.as_bytes()
    if content_type is not None:  # what the mail claims to be
        raw = raw.replace(b"Content-Type: multipart/mixed;", content_type, 1)
    return raw


PDF_AND_IMAGES = AttachmentPolicy(allowed_types=("image/*", "application/pdf"), max_bytes=1 << 20)


@pytest.mark.parametrize(
    "raw",
    [
        _with_program("x" * 30_000),  # too long for one event: the original would be attached
        _with_program(
            "hi", b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
        ),
    ],
    ids=["long", "claims-encrypted"],
)
async def test_a_withheld_file_does_not_come_in_through_the_attached_original(raw: bytes) -> None:
    parts = await _parts(raw, PDF_AND_IMAGES)
    assert [p.media for p in parts if p.media is not None] == []
    [notice] = [p for p in parts if p.part_id == "withheld"]
    assert "message.eml" in notice.text


async def test_the_attached_original_is_a_file_under_the_policy_too() -> None:
    raw = _with_program("x" * 30_000)
    allowed = AttachmentPolicy(allowed_types=("*/*",), max_bytes=1 << 20)
    assert [p.media.filename for p in await _parts(raw, allowed) if p.media is not None] == [
        "invoice.exe", "message.eml"
    ]  # fmt: skip
    small = AttachmentPolicy(allowed_types=("*/*",), max_bytes=len(raw) - 1)
    parts = await _parts(raw, small)
    assert [p.media.filename for p in parts if p.media is not None] == ["invoice.exe"]
    assert "message.eml" in parts[-1].text and "not passed on" in parts[0].text


# --- signed and encrypted mail -------------------------------------------------------------------


async def test_a_valid_smime_signature_is_shown_with_its_signer() -> None:
    raw = signed_mail("Contract attached, signed.")
    [text] = await _parts(raw, trust_anchors=str(CA))
    first = text.text.splitlines()[0]
    assert "S/MIME signature valid; signed by Sam Signer, Agency Test <sam@agency.test>" in first
    assert "Contract attached, signed." in text.text
    assert text.html is not None and "S/MIME signature valid" in text.html  # no smime.p7s file
    assert text.extra[SECURITY_KEY] == {
        "kind": "smime", "signed": True, "encrypted": False, "status": "valid",
        "signer": "Sam Signer, Agency Test",
    }  # fmt: skip


async def test_an_smime_signer_outside_the_trust_anchors_is_not_trusted() -> None:
    [text] = await _parts(
        signed_mail("Hello"), trust_anchors=str(CA).replace("ca.pem", "stranger.pem")
    )
    assert "S/MIME signature intact, but the signer is not trusted" in text.text


async def test_a_self_signed_smime_signer_is_not_trusted() -> None:
    raw = signed_mail("Hello", signer="stranger", sender="stranger@agency.test")
    [text] = await _parts(raw, trust_anchors=str(CA))
    assert "signer is not trusted" in text.text and "Self Signed Stranger" in text.text


async def test_a_changed_smime_mail_shows_an_invalid_signature() -> None:
    raw = signed_mail("Pay 100 EUR").replace(b"Pay 100 EUR", b"Pay 900 EUR")
    [text] = await _parts(raw, trust_anchors=str(CA))
    assert text.text.startswith("\u26a0\ufe0f S/MIME signature INVALID")
    assert "Pay 900 EUR" in text.text  # shown, but never as if it were signed


async def test_a_signature_for_another_address_says_so() -> None:
    raw = signed_mail("Hello", sender="mallory@agency.test")
    [text] = await _parts(raw, trust_anchors=str(CA))
    assert "the certificate is not for mallory@agency.test" in text.text


def _pgp(content_type: str, parts: str) -> bytes:
    return (
        "From: bob@example.org\r\nSubject: Secret\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}; boundary=b\r\n\r\n{parts}--b--\r\n"
    ).encode()


async def test_openpgp_encrypted_mail_says_so_and_attaches_the_original() -> None:
    raw = _pgp(
        'multipart/encrypted; protocol="application/pgp-encrypted"',
        "--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        "--b\r\nContent-Type: application/octet-stream; name=encrypted.asc\r\n\r\n"
        "-----BEGIN PGP MESSAGE-----\r\nhQEMA...\r\n-----END PGP MESSAGE-----\r\n",
    )
    text, eml = await _parts(raw)
    assert "OpenPGP encrypted mail" in text.text and "open" in text.text.lower()
    assert text.extra[SECURITY_KEY]["encrypted"] is True
    assert eml.media is not None and eml.media.filename == "message.eml"
    assert await eml.media.read() == raw


async def test_smime_encrypted_mail_says_so() -> None:
    raw = (
        b"From: bob@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type:"
        b" application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n"
    )
    text, eml = await _parts(raw)
    assert "S/MIME encrypted mail" in text.text and eml.media is not None


@pytest.mark.parametrize("inline", [False, True])
async def test_openpgp_signed_mail_is_shown_as_signed_unchecked(inline: bool) -> None:
    if inline:
        raw = (
            b"From: bob@example.org\r\nSubject: s\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n"
            b"Hash: SHA256\r\n\r\nHello\r\n-----BEGIN PGP SIGNATURE-----\r\nxyz\r\n"
            b"-----END PGP SIGNATURE-----\r\n"
        )
    else:
        raw = _pgp(
            'multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256',
            "--b\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
            "--b\r\nContent-Type: application/pgp-signature; name=signature.asc\r\n\r\n"
            "-----BEGIN PGP SIGNATURE-----\r\nxyz\r\n-----END PGP SIGNATURE-----\r\n",
        )
    parts = await _parts(raw)
    assert "OpenPGP signed (the bridge does not check OpenPGP signatures)" in parts[0].text
    assert "Hello" in parts[0].text
    assert [p for p in parts if p.media is not None] == []  # no signature.asc file


async def test_two_identical_attachments_are_two_files() -> None:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "bob@example.org", "Twice"
    msg.set_content("Same file twice.")
    for _ in range(2):
        msg.add_attachment(b"%PDF same", maintype="application", subtype="pdf", filename="a.pdf")
    _, *files = await _parts(msg.as_bytes())
    assert [p.media.filename for p in files if p.media] == ["a.pdf", "a.pdf"]
    assert len({p.part_id for p in files}) == 2


async def test_an_inline_image_of_a_mail_too_long_for_one_event_becomes_a_file() -> None:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "bob@example.org", "Long"
    msg.set_content("word " * 20_000)
    msg.add_alternative('<p>x</p><img src="cid:pic@x">' + "<p>word</p>" * 20_000, subtype="html")
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<pic@x>", filename="pic.png")
    text, *rest = await _parts(msg.as_bytes())
    assert text.html is None and text.inline == {}
    assert [p.media.filename for p in rest if p.media] == ["pic.png", "message.eml"]
