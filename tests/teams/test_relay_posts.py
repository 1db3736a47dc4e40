"""What the relay account posts in Teams for Matrix users (bridge.teams.client and
from_matrix), against the Graph emulator through the unmodified msgraph-sdk: relayed posts
always carry the "External · via Matrix" line, and pills mention only the chat's members.
Megan Bowen plays the relay account."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import AsyncMock, MagicMock

from bridge.core import MatrixEdit, MatrixMessage, RemoteChatID
from bridge.portal.models import Message, Portal
from bridge.teams.client import TeamsSharedClient
from bridge.teams.from_matrix import EXTERNAL
from bridge.teams.ids import NETWORK
from tests.teams.test_members import _group, _net
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

BOT, EVE = "@pontis:hub.example", "@eve:evil.example"


def _client(emu: Emulator) -> TeamsSharedClient:
    net, _ = _net(emu)
    net.ctx.store.list_logins = AsyncMock(return_value=[])
    net.ctx.parse_ghost_mxid = MagicMock(
        side_effect=lambda m: m[7:].split(":")[0] if m.startswith("@teams_") else None
    )
    return TeamsSharedClient(net)


def _posted(emu: Emulator, method: str = "POST") -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in emu.requests("/v1.0/chats/*/messages*", method)]


async def test_the_cores_relay_mode_posts_carry_the_marker_line(emulator: Emulator) -> None:  # noqa: F811
    """A relay-level Matrix user named "IT Security": the relay account posts, and edits,
    under the marker line with their Matrix ID, never as "<b>IT Security</b>: …"."""
    client = _client(emulator)
    chat = await _group(emulator, "adele", "megan")
    portal = Portal(NETWORK, RemoteChatID(chat), mxid="!room:hub.example")
    common: dict[str, Any] = {
        "portal": portal, "sender": BOT, "sender_name": "Pontis", "timestamp": 0,
        "relayed": True, "relayed_sender": EVE, "relayed_sender_name": "IT Security\u202e\n",
    }  # fmt: skip
    sent = await client.handle_matrix_message(
        MatrixMessage(event_id="$1", body="reset your password", **common)
    )
    target = Message(network=NETWORK, portal_id=RemoteChatID(chat), remote_id=sent,
                     mxid="$1", room_id="!room:hub.example", sender_id=BOT)  # fmt: skip
    await client.handle_matrix_edit(
        MatrixEdit(event_id="$2", target=target, body="never mind", **common)
    )
    header = f"<p><b>{EXTERNAL}</b> · <b>{EVE}</b> · “IT Security”</p>"
    [post] = _posted(emulator)
    [patch] = _posted(emulator, "PATCH")
    assert post["body"]["content"] == header + "reset your password"
    assert patch["body"]["content"] == header + "never mind"


async def test_a_pill_mentions_only_a_member_of_the_chat_under_their_name(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: a pill of a Teams account outside the chat stays a link; a member's pill
    shows their Teams name, whatever the pill said; a raw ``<at>`` mentions no one."""
    client = _client(emulator)
    chat = await _group(emulator, "adele", "megan")
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    portal = Portal(NETWORK, RemoteChatID(chat), mxid="!room:hub.example")
    html = (
        f'<a href="https://matrix.to/#/@teams_{alex}:hub.example">Alex</a>, '
        f'<a href="https://matrix.to/#/@teams_{adele}:hub.example">Everyone</a> '
        '<at id="5">CEO</at>'
    )
    await client.handle_matrix_message(
        MatrixMessage(
            portal=portal,
            event_id="$1",
            sender="@anna:hub.example",
            sender_name="Anna",
            timestamp=0,
            body="x",
            html=html,
        )
    )
    [post] = _posted(emulator)
    content = post["body"]["content"]
    assert f"@teams_{alex}" in content and "<at" not in content.replace('<at id="0">', "")
    assert '<at id="0">Adele Vance</at>' in content and "CEO" in content
    assert [
        (m["id"], m["mentionText"], m["mentioned"]["user"]["id"]) for m in post["mentions"]
    ] == [(0, "Adele Vance", adele)]
