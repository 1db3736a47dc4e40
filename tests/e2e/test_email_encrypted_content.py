"""An inline image in an encrypted room: never an unencrypted upload in the formatted body,
but an encrypted image event after the text (docs/email.md, "What a mail looks like")."""

from __future__ import annotations

import nio
import pytest

from tests.e2e.conftest import Hub
from tests.e2e.test_email import PASSWORD, mail, person, send
from tests.e2e.test_encryption_networks import _containing, _dm_with

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(90))


async def test_an_inline_image_in_an_encrypted_room_arrives_as_an_encrypted_image(
    encrypted_hub: Hub,
) -> None:
    hub = encrypted_hub
    erin = person(hub, "erin")
    alice = await hub.encrypted_user("alice")
    room_id = await _dm_with(hub, alice, erin)
    await alice.send_text(room_id, "Please send the logo")
    sent = await hub.mail.wait_for_mail(erin, PASSWORD, timeout=20)
    portal = sent["From"].addresses[0].addr_spec

    answer = mail(erin, portal, "Re: Please send the logo", "Here it is.", reply_to=sent)
    answer.add_alternative(
        '<p>Here it is:</p><img src="cid:logo@agency.test" alt="logo"><p>Erin</p>', subtype="html"
    )
    answer.get_payload()[1].add_related(
        PNG, "image", "png", cid="<logo@agency.test>", filename="logo.png"
    )
    await send(hub, answer)
    text = await alice.wait_for_message(room_id, _containing("Here it is"), timeout=30)
    assert alice.was_encrypted(text)
    assert "[logo.png]" in text.formatted_body and "<img" not in text.formatted_body
    image = await alice.wait_for_message(
        room_id,
        lambda e: isinstance(e, nio.RoomEncryptedImage) and e.body == "logo.png",
        timeout=30,
    )
    assert await alice.download_decrypted(image) == PNG
