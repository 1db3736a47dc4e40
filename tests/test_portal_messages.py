"""A remote message of several parts (a mail with attachments) reaches Matrix whole, once."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from bridge.core.errors import TransientError
from bridge.core.events import MessagePart, RemoteMessage
from bridge.core.ids import NetworkID, PartID, PortalKey, RemoteChatID, RemoteMessageID
from bridge.core.portals import PortalManager
from bridge.portal.models import Portal
from bridge.portal.store import Store

NET = NetworkID("mail")
KEY = PortalKey(NET, RemoteChatID("room"))


class Homeserver:
    """Stands in for MatrixAPI.send: records what reached the room, fails when told to."""

    bot_mxid = "@bot:hub.test"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail_on: set[str] = set()

    async def send(self, sender: str, room_id: str, content: dict[str, Any], **_: Any) -> str:
        body = content["body"]
        if body in self.fail_on:
            self.fail_on.discard(body)
            raise TransientError("homeserver busy")
        self.sent.append(body)
        return f"${len(self.sent)}"


@pytest.fixture
async def manager(store: Store) -> tuple[PortalManager, Homeserver]:
    await store.save_portal(Portal(NET, KEY.remote_id, mxid="!room:hub.test"))
    homeserver = Homeserver()
    matrix = MagicMock()
    matrix.bot_mxid = homeserver.bot_mxid
    matrix.send = AsyncMock(side_effect=homeserver.send)
    matrix.room_encrypted = AsyncMock(return_value=False)
    portals = PortalManager(
        store=store, matrix=matrix, domain="hub.test", bridge_id="pontis", networks={},
        log=logging.getLogger("test"),
    )  # fmt: skip
    return portals, homeserver


def _mail() -> RemoteMessage:
    return RemoteMessage(
        portal=KEY,
        id=RemoteMessageID("<m1@agency.test>"),
        parts=[
            MessagePart(text="the text"),
            MessagePart(part_id=PartID("1"), text="report.pdf"),
            MessagePart(part_id=PartID("2"), text="photo.jpg"),
        ],
    )


async def test_a_retry_after_a_failed_part_sends_only_the_rest(
    manager: tuple[PortalManager, Homeserver],
) -> None:
    portals, homeserver = manager
    homeserver.fail_on = {"report.pdf"}
    with pytest.raises(TransientError):
        await portals.handle(_mail(), MagicMock())
    assert homeserver.sent == ["the text"]
    await portals.handle(_mail(), MagicMock())  # the core's retry
    assert homeserver.sent == ["the text", "report.pdf", "photo.jpg"]
    await portals.handle(_mail(), MagicMock())  # delivered again by the network: a duplicate
    assert homeserver.sent == ["the text", "report.pdf", "photo.jpg"]


async def test_a_one_part_message_is_sent_once(manager: tuple[PortalManager, Homeserver]) -> None:
    portals, homeserver = manager
    message = RemoteMessage(portal=KEY, id=RemoteMessageID("x"), parts=[MessagePart(text="hi")])
    await portals.handle(message, MagicMock())
    await portals.handle(message, MagicMock())
    assert homeserver.sent == ["hi"]


async def test_a_part_s_extra_keys_reach_the_event_but_never_replace_the_core_s(
    manager: tuple[PortalManager, Homeserver],
) -> None:
    portals, _ = manager
    extra = {"fi.pontis.email.sha256": "ab" * 32, "body": "forged", "msgtype": "m.notice"}
    message = RemoteMessage(portal=KEY, id=RemoteMessageID("y"),
                            parts=[MessagePart(text="real", extra=extra)])  # fmt: skip
    await portals.handle(message, MagicMock())
    content = portals._matrix.send.call_args.args[2]  # type: ignore[attr-defined]
    assert content["fi.pontis.email.sha256"] == "ab" * 32
    assert (content["body"], content["msgtype"]) == ("real", "m.text")
