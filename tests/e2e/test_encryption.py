"""End-to-end encryption against a Synapse that encrypts every room, with matrix-nio (vodozemac)
as the Matrix user's client: what crosses the hub is ciphertext on the Matrix side and plain
text on the network side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nio
import pytest
from aiohttp import web

from bridge.core.appservice import AppServiceAPI
from bridge.core.metrics import Metrics
from bridge.portal.models import InboxRow
from bridge.portal.store import Store
from tests.e2e.conftest import DOMAIN, XMPP_COMPONENT, Hub
from tests.e2e.hub import eventually
from tests.e2e.nio_user import EncryptedUser
from tests.e2e.test_xmpp import xmpp_account

pytestmark = pytest.mark.e2e


def jid_of(mxid: str) -> str:
    local, server = mxid[1:].split(":", 1)
    return f"{local}\\3a{server}@{XMPP_COMPONENT}"


def xmpp_ghost(jid: str) -> str:
    return "@xmpp_" + jid.replace("@", "=40") + f":{DOMAIN}"


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


def _body_has(text: str) -> Any:
    return lambda e: text in str(getattr(e, "body", ""))


async def _dm_with_ghost(hub: Hub, alice: EncryptedUser, jid: str) -> str:
    """alice opens an encrypted DM with an XMPP person's ghost, as a client would by default."""
    ghost = xmpp_ghost(jid)
    room_id = await alice.create_dm(ghost)
    await alice.wait_for_member(room_id, ghost, timeout=20)
    await alice.wait_for_member(room_id, hub.bot, timeout=20)  # holds the keys for the ghost
    return room_id


async def test_a_matrix_user_starts_an_encrypted_dm_with_a_ghost(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    alice = await hub.encrypted_user("alice")
    async with xmpp_account(hub, "xdm") as xmpp:
        room_id = await _dm_with_ghost(hub, alice, xmpp.jid)
        await alice.send_text(room_id, "Hi, encrypted from Matrix")
        got = await xmpp.wait_for_message(lambda m: m["body"] == "Hi, encrypted from Matrix")
        assert got["from"].bare == jid_of(alice.mxid).lower()
        assert got["type"] == "chat"

        xmpp.send_chat(jid_of(alice.mxid), "Answer from XMPP")
        answer = await alice.wait_for_message(room_id, _text("Answer from XMPP"), timeout=20)
        assert alice.was_encrypted(answer) and answer.sender == xmpp_ghost(xmpp.jid)
        notice = await alice.wait_for_message(room_id, _body_has("the Pontis hub"))
        assert alice.was_encrypted(notice) and "XMPP" in notice.body


async def test_help_in_an_encrypted_management_room(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    alice = await hub.encrypted_user("manager")
    room_id = await alice.create_dm(hub.bot)
    assert await alice.room_is_encrypted(room_id)
    greeting = await alice.wait_for_message(room_id, _body_has("I am the Pontis bridge bot"), 20)
    assert alice.was_encrypted(greeting)
    mark = alice.mark()
    await alice.send_text(room_id, "help")
    answer = await alice.wait_for_message(
        room_id, lambda e: e.sender == hub.bot and "commands" in getattr(e, "body", ""),
        timeout=20, after=mark,
    )  # fmt: skip
    assert alice.was_encrypted(answer), "the bot answered an encrypted room in plain text"
    assert "`help`" in answer.body and not alice.undecryptable(room_id)


async def test_files_both_ways_are_encrypted_attachments_in_matrix(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    alice = await hub.encrypted_user("alice")
    async with xmpp_account(hub, "xfile") as xmpp:
        room_id = await _dm_with_ghost(hub, alice, xmpp.jid)
        report = b"%PDF-1.4 minutes of the encrypted meeting" * 50
        await alice.send_file(room_id, report, "minutes.pdf", "application/pdf")
        got = await xmpp.wait_for_message(lambda m: bool(m["oob"]["url"]))
        async with aiohttp.ClientSession() as http, http.get(got["oob"]["url"]) as resp:
            assert await resp.read() == report, "XMPP got the ciphertext, not the file"

        picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
        url = await xmpp.upload_file(picture, "holiday.png", "image/png")
        xmpp.send_chat(jid_of(alice.mxid), url, oob_url=url)
        image = await alice.wait_for_message(
            room_id, lambda e: isinstance(e, nio.RoomEncryptedImage), timeout=20
        )
        assert alice.was_encrypted(image)
        assert await alice.download_decrypted(image) == picture


async def test_a_message_whose_key_never_arrives_gets_a_notice(encrypted_hub: Hub) -> None:
    hub = encrypted_hub
    alice = await hub.encrypted_user("alice")
    async with xmpp_account(hub, "xnokey") as xmpp:
        room_id = await _dm_with_ghost(hub, alice, xmpp.jid)
        # alice's client refuses to share keys with the hub's device (as a client set to
        # "verified devices only" would), so the hub can never decrypt what she sends.
        await alice.client.joined_members(room_id)
        if alice.client.should_query_keys:
            await alice.client.keys_query()
        assert list(alice.client.device_store.active_user_devices(hub.bot)), "bot has no device"
        for device in alice.client.device_store.active_user_devices(hub.bot):
            alice.client.blacklist_device(device)
        event_id = await alice.send_text(room_id, "You cannot read this")
        notice = await alice.wait_for_message(
            room_id, lambda e: e.sender == hub.bot and "not delivered" in getattr(e, "body", ""),
            timeout=30,
        )  # fmt: skip
        assert alice.was_encrypted(notice)
        assert "keys" in notice.body
        assert notice.source["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id
        assert not xmpp.seen(lambda m: m["body"] == "You cannot read this")


@contextlib.asynccontextmanager
async def hub_that_dies_after_the_200(hub: Hub) -> AsyncIterator[list[InboxRow]]:
    """The bridge's own appservice code on the bridge's port and database, storing every
    transaction in the inbox and answering 200, with nothing behind it to handle the rows: what
    the homeserver sees of a bridge killed right after it answered."""
    store = await Store.open(f"sqlite:{hub.workdir / 'pontis.db'}")
    stored: list[InboxRow] = []

    async def nobody(_: str) -> bool:
        return False

    api = AppServiceAPI(
        hs_token=hub.hs_token, store=store, metrics=Metrics(), on_stored=stored.extend,
        query_user=nobody, query_alias=nobody, is_echo=lambda _: False,
        log=logging.getLogger("stand-in"),
    )  # fmt: skip
    app = web.Application()
    api.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hub.as_port).start()
    try:
        yield stored
    finally:
        await runner.cleanup()
        await store.close()


async def test_a_room_key_answered_before_a_crash_still_unlocks_its_message(
    encrypted_hub: Hub,
) -> None:
    hub = encrypted_hub
    alice = await hub.encrypted_user("alice")
    async with xmpp_account(hub, "xcrash") as xmpp:
        room_id = await _dm_with_ghost(hub, alice, xmpp.jid)
        hub.bridge.kill()  # SIGKILL
        async with hub_that_dies_after_the_200(hub) as stored:
            # alice's first message in the room: a new Megolm session, whose key goes to the
            # hub's device as a to-device event in the same stream.
            event_id = await alice.send_text(room_id, "Sent while the hub was dying")
            await eventually(
                lambda: {"to_device", "pdu"} <= {row.kind for row in stored}
                and any(row.event_id == event_id for row in stored),
                "the room key and the message answered 200 and stored", timeout=30,
            )  # fmt: skip
        assert not xmpp.seen(lambda m: m["body"] == "Sent while the hub was dying")
        await hub.bridge.start(hub.as_port)
        await xmpp.wait_for_message(lambda m: m["body"] == "Sent while the hub was dying", 30)
        await asyncio.sleep(2)  # a second copy would come right behind the first
        copies = [m for m in xmpp.messages if m["body"] == "Sent while the hub was dying"]
        assert len(copies) == 1, f"bridged {len(copies)} times"
        assert not alice.seen(_body_has("not delivered"), room_id)


async def test_a_member_leaving_rotates_the_session(encrypted_hub: Hub) -> None:
    """What the hub sends after someone left is under a new session, which the leaver never
    got; while the members stay the same, the session does too."""
    hub = encrypted_hub
    alice, bob = await hub.encrypted_user("alice"), await hub.encrypted_user("bob")
    async with xmpp_account(hub, "xrot") as xmpp:
        xmpp.send_chat(jid_of(alice.mxid), "first")
        room_id = await alice.wait_for_invite(timeout=30)
        first = await alice.wait_for_message(room_id, _text("first"), timeout=30)
        await alice.invite(room_id, bob.mxid)
        await bob.wait_for_member(room_id, bob.mxid, timeout=20)
        xmpp.send_chat(jid_of(alice.mxid), "second, bob is here")
        second = await bob.wait_for_message(room_id, _text("second, bob is here"), timeout=20)
        assert bob.was_encrypted(second)
        assert second.session_id != first.session_id  # bob joining rotated it too

        assert isinstance(await bob.client.room_leave(room_id), nio.RoomLeaveResponse)
        await alice.wait_for_message(
            room_id, lambda e: isinstance(e, nio.RoomMemberEvent) and e.state_key == bob.mxid
            and e.membership == "leave", timeout=20,
        )  # fmt: skip
        # The hub learns of the leave from its own transaction stream, which may come a few ms
        # after alice's client saw it: rotation can only start from there.
        await eventually(
            lambda: hub.bridge.query(
                "SELECT membership FROM mx_user_profile WHERE room_id=? AND user_id=?",
                room_id, bob.mxid,
            ) == [("leave",)],
            "the hub saw bob leave",
        )  # fmt: skip
        xmpp.send_chat(jid_of(alice.mxid), "third, bob has left")
        third = await alice.wait_for_message(room_id, _text("third, bob has left"), timeout=20)
        assert alice.was_encrypted(third)
        assert third.session_id != second.session_id, "bob could still read what followed"
        xmpp.send_chat(jid_of(alice.mxid), "fourth")
        fourth = await alice.wait_for_message(room_id, _text("fourth"), timeout=20)
        assert fourth.session_id == third.session_id


async def test_the_hub_s_device_is_cross_signed_and_its_recovery_key_never_logged(
    encrypted_hub: Hub,
) -> None:
    hub = encrypted_hub
    alice = await hub.encrypted_user("alice")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{hub.synapse.base_url}/_matrix/client/v3/keys/query",
            json={"device_keys": {hub.bot: []}},
            headers={"Authorization": f"Bearer {alice.token}"},
        ) as resp,
    ):
        keys = await resp.json()
    (self_signing,) = keys["self_signing_keys"][hub.bot]["keys"].values()
    devices = keys["device_keys"][hub.bot]
    assert len(devices) == 1, "stale bot devices pile up"
    (device,) = devices.values()
    assert f"ed25519:{self_signing}" in device["signatures"][hub.bot], "device not cross-signed"
    assert keys["master_keys"][hub.bot]

    result = hub.bridge.cli("show-recovery-key")
    assert result.returncode == 0, result.stderr
    recovery_key = result.stdout.strip()
    assert len(recovery_key.replace(" ", "")) >= 48
    assert recovery_key not in hub.bridge.log_path.read_text()
    assert recovery_key.replace(" ", "") not in hub.bridge.log_path.read_text()
