"""Images a remote message shows in place (``MessagePart.inline``): uploaded and put in the
formatted body, or, in an encrypted room, sent as encrypted files after the text."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import AsyncMock, MagicMock

from bridge.core.connector import NetworkInfo
from bridge.core.events import INLINE_URL, Media, MessagePart, RemoteMessage
from bridge.core.ids import NetworkID, PortalKey, RemoteChatID, RemoteMessageID
from bridge.core.portals import PortalManager
from bridge.portal.models import Portal
from bridge.portal.store import Store

NET = NetworkID("mail")
KEY = PortalKey(NET, RemoteChatID("room"))
PNG = b"\x89PNG\r\n\x1a\n0000"


class Homeserver:
    bot_mxid = "@bot:hub.test"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.uploads: list[tuple[bytes, str]] = []

    async def send(self, sender: str, room_id: str, content: dict[str, Any], **_: Any) -> str:
        self.sent.append(content)
        return f"${len(self.sent)}"

    async def upload(self, sender: str, data: bytes, mimetype: str, filename: str) -> str:
        self.uploads.append((data, filename))
        return f"mxc://hub.test/upload{len(self.uploads)}"

    async def upload_for_room(self, sender: str, room_id: str, data: bytes, mimetype: str,
                              filename: str) -> dict[str, Any]:  # fmt: skip
        return {"file": {"url": await self.upload(sender, b"encrypted", mimetype, filename)}}


async def _manager(store: Store, encrypted: bool) -> tuple[PortalManager, Homeserver]:
    await store.save_portal(Portal(NET, KEY.remote_id, mxid="!room:hub.test"))
    homeserver = Homeserver()
    matrix = MagicMock()
    matrix.bot_mxid = homeserver.bot_mxid
    matrix.send = AsyncMock(side_effect=homeserver.send)
    matrix.upload = AsyncMock(side_effect=homeserver.upload)
    matrix.upload_for_room = AsyncMock(side_effect=homeserver.upload_for_room)
    matrix.room_encrypted = AsyncMock(return_value=encrypted)
    portals = PortalManager(
        store=store, matrix=matrix, domain="hub.test", bridge_id="pontis",
        networks={NET: NetworkInfo(id=NET, display_name="Mail")},
        log=logging.getLogger("test"),
    )  # fmt: skip
    return portals, homeserver


def _message() -> RemoteMessage:
    html = f'<p>Chart:</p><img src="{INLINE_URL}image1" alt="chart"><p>Bye</p>'
    image = Media(mimetype="image/png", filename="chart.png", data=PNG)
    part = MessagePart(text="Chart: Bye", html=html, inline={"image1": image})
    return RemoteMessage(portal=KEY, id=RemoteMessageID("<m@x>"), parts=[part])


async def test_an_inline_image_is_uploaded_and_placed_in_the_formatted_body(store: Store) -> None:
    portals, homeserver = await _manager(store, encrypted=False)
    await portals.handle(_message(), MagicMock())
    [content] = homeserver.sent
    assert homeserver.uploads == [(PNG, "chart.png")]
    assert '<img src="mxc://hub.test/upload1" alt="chart">' in content["formatted_body"]
    assert INLINE_URL not in content["formatted_body"]


async def test_in_an_encrypted_room_an_inline_image_follows_as_an_encrypted_file(
    store: Store,
) -> None:
    portals, homeserver = await _manager(store, encrypted=True)
    await portals.handle(_message(), MagicMock())
    text, image = [c for c in homeserver.sent if c["body"] in ("Chart: Bye", "chart.png")]
    assert "<img" not in text["formatted_body"] and "[chart.png]" in text["formatted_body"]
    assert image["msgtype"] == "m.image" and "file" in image and "url" not in image
    assert homeserver.uploads == [(b"encrypted", "chart.png")]  # never the plain image
    await portals.handle(_message(), MagicMock())  # delivered again: nothing new
    assert len([c for c in homeserver.sent if c["body"] == "chart.png"]) == 1


async def test_a_placeholder_the_html_does_not_use_uploads_nothing(store: Store) -> None:
    portals, homeserver = await _manager(store, encrypted=False)
    message = _message()
    message.parts[0].html = "<p>no image</p>"
    await portals.handle(message, MagicMock())
    assert homeserver.uploads == []


def _ten_images() -> RemoteMessage:
    """image1 … image10: the first key is a prefix of the last."""
    html = "".join(f'<img src="{INLINE_URL}image{n}" alt="{n}">' for n in range(1, 11))
    inline = {
        f"image{n}": Media(mimetype="image/png", filename=f"{n}.png", data=PNG + bytes([n]))
        for n in range(1, 11)
    }
    part = MessagePart(text="ten", html=html, inline=inline)
    return RemoteMessage(portal=KEY, id=RemoteMessageID("<ten@x>"), parts=[part])


async def test_a_placeholder_that_is_a_prefix_of_another_gets_its_own_image(store: Store) -> None:
    portals, homeserver = await _manager(store, encrypted=False)
    await portals.handle(_ten_images(), MagicMock())
    [content] = homeserver.sent
    urls = {filename: f"mxc://hub.test/upload{n}" for n, (_, filename) in
            enumerate(homeserver.uploads, start=1)}  # fmt: skip
    for n in range(1, 11):
        assert f'<img src="{urls[f"{n}.png"]}" alt="{n}">' in content["formatted_body"]
    assert INLINE_URL not in content["formatted_body"]


async def test_in_an_encrypted_room_a_prefix_placeholder_names_its_own_file(store: Store) -> None:
    portals, homeserver = await _manager(store, encrypted=True)
    await portals.handle(_ten_images(), MagicMock())
    text = next(c for c in homeserver.sent if c["body"] == "ten")
    body = text["formatted_body"]
    assert "<img" not in body and all(f"[{n}.png]" in body for n in range(1, 11))
