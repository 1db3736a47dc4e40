"""End-to-end encryption against a Synapse that encrypts every room, with matrix-nio (vodozemac)
as the Matrix user's client: what crosses the hub is ciphertext on the Matrix side and plain
text on the network side."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import nio
import pytest

from tests.e2e.conftest import DOMAIN, XMPP_COMPONENT, Hub
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e
_names = itertools.count(1)


def jid_of(mxid: str) -> str:
    local, server = mxid[1:].split(":", 1)
    return f"{local}\\3a{server}@{XMPP_COMPONENT}"


def xmpp_ghost(jid: str) -> str:
    return "@xmpp_" + jid.replace("@", "=40") + f":{DOMAIN}"


@contextlib.asynccontextmanager
async def xmpp_account(hub: Hub, name: str) -> AsyncIterator[XmppUser]:
    user = XmppUser(
        hub.prosody.register(f"{name.lower()}{next(_names)}"), "pw", hub.prosody.c2s_port
    )
    await user.connect()
    try:
        yield user
    finally:
        await user.close()


def _text(body: str) -> Any:
    return lambda e: isinstance(e, nio.RoomMessageText) and e.body == body


async def test_xmpp_dm_is_encrypted_both_ways(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    alice = await hub.encrypted_user("alice")
    async with xmpp_account(hub, "xenc") as xmpp:
        xmpp.send_chat(jid_of(alice.mxid), "Secret hello from XMPP")
        room_id, _ = await alice.wait_for_invite(timeout=30), None
        got = await alice.wait_for_message(room_id, _text("Secret hello from XMPP"), timeout=30)
        assert alice.was_encrypted(got), "the ghost's message arrived in plain text"
        assert got.sender == xmpp_ghost(xmpp.jid)
        assert await alice.room_is_encrypted(room_id)
        notice = await alice.wait_for_message(
            room_id, lambda e: "encrypted between your devices and the Pontis hub" in
            getattr(e, "body", ""),
        )  # fmt: skip
        assert alice.was_encrypted(notice) and notice.sender == hub.bot

        await alice.send_text(room_id, "Secret reply from Matrix")
        reply = await xmpp.wait_for_message(lambda m: m["body"] == "Secret reply from Matrix")
        assert reply["from"].bare == jid_of(alice.mxid).lower()
