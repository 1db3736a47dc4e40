"""XMPP ↔ Matrix through the component, against a real Synapse and a real XMPP server: every
test runs twice, against Prosody and against ejabberd (``hub`` below)."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from slixmpp.exceptions import PresenceError

from tests.e2e.conftest import DOMAIN, XMPP_COMPONENT, XMPP_SERVERS, Hub, hub_for
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.xmpp_client import XmppUser
from tests.e2e.xmpp_ghosts import muc_ghost

pytestmark = pytest.mark.e2e
_names = itertools.count(1)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def jid_of(user: MatrixUser) -> str:
    local, server = user.mxid[1:].split(":", 1)
    return f"{local}\\3a{server}@{XMPP_COMPONENT}"


def ghost_of(jid: str) -> str:
    return "@xmpp_" + jid.replace("@", "=40") + f":{DOMAIN}"


@pytest.fixture(params=XMPP_SERVERS)
def hub(request: pytest.FixtureRequest) -> Hub:
    """The hub with Prosody, then the hub with ejabberd."""
    return hub_for(request)


@pytest_asyncio.fixture
async def xmpp_user(hub: Hub) -> AsyncIterator[XmppUser]:
    async with xmpp_account(hub, "xuser") as user:
        yield user


@contextlib.asynccontextmanager
async def xmpp_account(hub: Hub, name: str) -> AsyncIterator[XmppUser]:
    """A fresh XMPP account on the test server, logged in."""
    user = XmppUser(
        hub.prosody.register(f"{name.lower()}{next(_names)}"), "pw", hub.prosody.c2s_port
    )
    await user.connect()
    try:
        yield user
    finally:
        await user.close()


@contextlib.asynccontextmanager
async def muc_occupant(hub: Hub, room: str, nick: str) -> AsyncIterator[XmppUser]:
    """A fresh XMPP account sitting in ``room`` as ``nick``."""
    async with xmpp_account(hub, nick) as user:
        await user.join_muc(room, nick)
        yield user


def muc_alias(room: str) -> str:
    return f"#xmpp_{room.replace('@', '=40')}:{DOMAIN}"


async def _dm(hub: Hub, xmpp_user: XmppUser) -> tuple[MatrixUser, str, str, str]:
    """An XMPP user writes to a Matrix user; returns (matrix user, room, stanza id, event id)."""
    alice = await hub.user("alice")
    stanza_id = xmpp_user.send_chat(jid_of(alice), "Hello from XMPP")
    room_id = await alice.wait_for_invite(timeout=20)
    await alice.join(room_id)
    event = await alice.wait_for(lambda e: _body(e) == "Hello from XMPP", room_id=room_id)
    assert event["sender"] == ghost_of(xmpp_user.jid)
    return alice, room_id, stanza_id, event["event_id"]


def _from(user: MatrixUser) -> Any:
    return lambda m: m["from"].bare == jid_of(user).lower()


async def test_dm_from_xmpp_with_reply_edit_reaction_retraction(
    hub: Hub, xmpp_user: XmppUser
) -> None:
    alice, room_id, stanza_id, event_id = await _dm(hub, xmpp_user)
    ghost = ghost_of(xmpp_user.jid)

    reply = await alice.send_text(room_id, "Reply from Matrix", reply_to=event_id)
    got = await xmpp_user.wait_for_message(
        lambda m: _from(alice)(m) and "Reply from Matrix" in m["body"]
    )
    assert got["reply"]["id"] == stanza_id
    assert got["reply"].strip_fallback_content() == "Reply from Matrix"
    assert "Hello from XMPP" in got["body"]  # XEP-0428 fallback quotes the original

    await alice.edit(room_id, reply, "Corrected reply")
    corrected = await xmpp_user.wait_for_message(lambda m: m["replace"]["id"] == got["id"])
    assert corrected["body"] == "Corrected reply"

    reaction = await alice.react(room_id, event_id, "👍")
    reacted = await xmpp_user.wait_for_message(lambda m: m["reactions"]["id"] == stanza_id)
    assert reacted["reactions"].get_values() == {"👍"}
    await alice.redact(room_id, reaction)
    await xmpp_user.wait_for_message(
        lambda m: m["reactions"]["id"] == stanza_id and not m["reactions"].get_values()
    )

    await alice.redact(room_id, reply)
    retracted = await xmpp_user.wait_for_message(lambda m: m["retract"]["id"] == got["id"])
    assert _from(alice)(retracted)

    xmpp_user.correct(jid_of(alice), stanza_id, "Hello, corrected on XMPP")
    edit = await alice.wait_for(
        lambda e: (
            e["sender"] == ghost
            and e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
        ),
        room_id=room_id,
    )
    assert edit["content"]["m.relates_to"]["event_id"] == event_id
    assert edit["content"]["m.new_content"]["body"] == "Hello, corrected on XMPP"

    xmpp_user.react(jid_of(alice), stanza_id, {"🎉"})
    matrix_reaction = await alice.wait_for(
        lambda e: e["type"] == "m.reaction" and e["sender"] == ghost, room_id=room_id
    )
    assert matrix_reaction["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": event_id,
        "key": "🎉",
    }
    xmpp_user.react(jid_of(alice), stanza_id, set())
    await alice.wait_for(lambda e: e["type"] == "m.room.redaction" and matrix_reaction["event_id"] in
                         (e.get("redacts"), e["content"].get("redacts")), room_id=room_id)  # fmt: skip

    xmpp_user.retract(jid_of(alice), stanza_id)
    await alice.wait_for(lambda e: e["type"] == "m.room.redaction" and event_id in
                         (e.get("redacts"), e["content"].get("redacts")), room_id=room_id)  # fmt: skip


async def test_dm_typing_markers_and_formatting(hub: Hub, xmpp_user: XmppUser) -> None:
    alice, room_id, stanza_id, event_id = await _dm(hub, xmpp_user)
    ghost = ghost_of(xmpp_user.jid)

    xmpp_user.chat_state(jid_of(alice), "composing")
    await alice.wait_for_ephemeral(
        lambda e: e["type"] == "m.typing" and ghost in e["content"]["user_ids"], room_id=room_id
    )
    await alice.typing(room_id, True)
    await xmpp_user.wait_for_message(lambda m: _from(alice)(m) and m["chat_state"] == "composing")

    mine = await alice.send_text(room_id, "bold move", html="<strong>bold</strong> move")
    got = await xmpp_user.wait_for_message(lambda m: _from(alice)(m) and "move" in m["body"])
    assert got["body"] == "*bold* move"
    xmpp_user.displayed_marker(jid_of(alice), got["id"])
    await alice.wait_for_ephemeral(lambda e: e["type"] == "m.receipt" and ghost in e["content"].get(mine, {}).get("m.read", {}),
                                   room_id=room_id)  # fmt: skip
    await alice.read_receipt(room_id, event_id)
    await xmpp_user.wait_for_message(lambda m: m["displayed"]["id"] == stanza_id)

    xmpp_user.send_chat(jid_of(alice), "this is *strong* and _emphasised_")
    styled = await alice.wait_for(lambda e: "strong" in _body(e), room_id=room_id)
    assert "<strong>strong</strong>" in styled["content"]["formatted_body"]
    assert "<em>emphasised</em>" in styled["content"]["formatted_body"]


async def test_files_both_ways(hub: Hub, xmpp_user: XmppUser) -> None:
    alice, room_id, _, _ = await _dm(hub, xmpp_user)
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    url = await xmpp_user.upload_file(picture, "holiday.png", "image/png")
    xmpp_user.send_chat(jid_of(alice), url, oob_url=url)
    event = await alice.wait_for(
        lambda e: e["content"].get("msgtype") == "m.image", room_id=room_id
    )
    assert event["content"]["body"] == "holiday.png"
    assert await alice.download(event["content"]["url"]) == picture

    report = b"%PDF-1.4 minutes of the meeting" * 50
    mxc = await alice.upload(report, "application/pdf", "minutes.pdf")
    await alice.send_event(room_id, "m.room.message", {"msgtype": "m.file", "body": "minutes.pdf", "url": mxc,
                                                        "info": {"mimetype": "application/pdf"}})  # fmt: skip
    got = await xmpp_user.wait_for_message(lambda m: _from(alice)(m) and bool(m["oob"]["url"]))
    async with aiohttp.ClientSession() as http, http.get(got["oob"]["url"]) as resp:
        assert await resp.read() == report


async def test_dm_started_from_matrix_by_inviting_the_ghost(hub: Hub, xmpp_user: XmppUser) -> None:
    alice = await hub.user("alice")
    ghost = ghost_of(xmpp_user.jid)
    room_id = await alice.create_room(invite=[ghost], is_direct=True)
    await alice.wait_for(lambda e: e["type"] == "m.room.member" and e["state_key"] == ghost
                         and e["content"]["membership"] == "join", room_id=room_id)  # fmt: skip
    await alice.send_text(room_id, "Hi, starting from Matrix")
    got = await xmpp_user.wait_for_message(lambda m: m["body"] == "Hi, starting from Matrix")
    assert _from(alice)(got) and got["type"] == "chat"
    xmpp_user.send_chat(jid_of(alice), "Answer from XMPP")
    answer = await alice.wait_for(lambda e: _body(e) == "Answer from XMPP", room_id=room_id)
    assert answer["sender"] == ghost


async def test_message_to_unknown_matrix_address_bounces(hub: Hub, xmpp_user: XmppUser) -> None:
    xmpp_user.send_chat(f"not-a-matrix-id@{XMPP_COMPONENT}", "anyone there?")
    bounce = await xmpp_user.wait_for_message(lambda m: m["type"] == "error")
    assert bounce["error"]["condition"] == "item-not-found"


async def test_muc_bridged_into_matrix_room(hub: Hub) -> None:
    room = f"team{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena, muc_occupant(hub, room, "Xavier") as xavier:
        alice, bob = await hub.user("alice"), await hub.user("bob")
        room_id = await alice.create_room(invite=[hub.bot, bob.mxid])
        await bob.join(room_id)
        await alice.wait_for(lambda e: e["type"] == "m.room.member" and e["state_key"] == hub.bot
                             and e["content"]["membership"] == "join", room_id=room_id)  # fmt: skip
        await alice.send_text(room_id, f"!pontis bridge xmpp {room}")
        await alice.wait_for(lambda e: "now bridged" in _body(e), room_id=room_id)

        xena.send_groupchat(room, "Hello from Xena")
        xavier.send_groupchat(room, "Hello from Xavier")
        from_xena = await bob.wait_for(lambda e: _body(e) == "Hello from Xena", room_id=room_id)
        from_xavier = await bob.wait_for(lambda e: _body(e) == "Hello from Xavier", room_id=room_id)
        assert from_xena["sender"] != from_xavier["sender"]
        assert (await bob.get_profile(from_xena["sender"]))["displayname"] == "Xena"

        await alice.send_text(room_id, "Hello from Alice")
        await bob.send_text(room_id, "Hello from Bob")

        def said(nick: str, text: str) -> Any:
            return lambda m: (
                m["type"] == "groupchat" and m["from"].resource == nick and m["body"] == text
            )

        alice_nick, bob_nick = (
            u.mxid[1:].split(":")[0].capitalize() for u in (alice, bob)
        )  # display names
        await xena.wait_for_message(said(alice_nick, "Hello from Alice"))
        await xena.wait_for_message(said(bob_nick, "Hello from Bob"))
        await xavier.wait_for_message(said(alice_nick, "Hello from Alice"))
        # The MUC reflects Alice's message to her own occupant: it must not come back as a ghost.
        await eventually(lambda: len(alice.seen(lambda e: _body(e) == "Hello from Alice", room_id=room_id)) == 1,
                         "exactly one copy of Alice's message")  # fmt: skip
        assert len(bob.seen(lambda e: _body(e) == "Hello from Xena", room_id=room_id)) == 1


async def test_xmpp_server_restart_loses_nothing(hub: Hub, xmpp_user: XmppUser) -> None:
    alice, room_id, _, _ = await _dm(hub, xmpp_user)
    await hub.prosody.stop()
    sent = await alice.send_text(room_id, "sent while XMPP was down")
    await hub.prosody.start()
    restarted = time.monotonic()
    reconnected = XmppUser(xmpp_user.jid, "pw", hub.prosody.c2s_port, resource="again")
    await reconnected.connect()
    try:
        got = await reconnected.wait_for_message(
            lambda m: m["body"] == "sent while XMPP was down", timeout=40
        )
        assert _from(alice)(got)
        assert time.monotonic() - restarted < 15, "the bridge should be back within seconds"
        await alice.send_text(room_id, "after the restart")
        await reconnected.wait_for_message(lambda m: m["body"] == "after the restart", timeout=20)
        copies = [m for m in reconnected.messages if m["body"] == "sent while XMPP was down"]
        assert len(copies) == 1, sent
    finally:
        await reconnected.close()


async def test_muc_joined_from_matrix_through_its_alias(hub: Hub) -> None:
    room = f"club{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:
        alice = await hub.user("alice")
        room_id = await alice.join(muc_alias(room))
        xena.send_groupchat(room, "Anyone from Matrix?")
        event = await alice.wait_for(lambda e: _body(e) == "Anyone from Matrix?", room_id=room_id)
        assert event["sender"] == muc_ghost(xena, room, "Xena")  # by occupant-id, if any
        await alice.send_text(room_id, "Yes, me")
        nick = alice.mxid[1:].split(":")[0].capitalize()
        await xena.wait_for_message(lambda m: m["type"] == "groupchat" and m["from"].resource == nick
                                    and m["body"] == "Yes, me")  # fmt: skip


async def test_matrix_room_joined_from_xmpp_as_a_muc(hub: Hub) -> None:
    alice = await hub.user("alice")
    nick = alice.mxid[1:].split(":")[0].capitalize()
    localpart = f"lobby{next(_names)}"
    room_id = await alice.create_room(
        preset="public_chat", room_alias_name=localpart, topic="Matrix lobby"
    )
    await alice.send_text(room_id, "Said before Xeno came")
    muc = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    async with xmpp_account(hub, "xeno") as xeno:
        await xeno.join_muc(muc, "Xeno")
        assert xeno.seen(lambda m: m["type"] == "groupchat" and m["subject"] == "Matrix lobby")
        history = [m for m in xeno.messages if m["body"] == "Said before Xeno came"]
        assert len(history) == 1 and history[0]["from"].resource == nick
        assert history[0].xml.find("{urn:xmpp:delay}delay") is not None
        # The Matrix member is an occupant.
        await xeno.wait_for_presence(lambda p: p["from"].resource == nick)

        xeno.send_groupchat(muc, "Hello Matrix room")
        event = await alice.wait_for(
            lambda e: _body(e) == "Hello Matrix room", room_id=room_id, timeout=20
        )
        assert event["sender"] == ghost_of(xeno.jid)
        await xeno.wait_for_message(
            lambda m: m["body"] == "Hello Matrix room" and m["from"].resource == "Xeno"
        )

        await alice.send_text(room_id, "Welcome, Xeno")
        got = await xeno.wait_for_message(lambda m: m["body"] == "Welcome, Xeno")
        assert (
            got["from"].bare == muc and got["from"].resource == nick and got["type"] == "groupchat"
        )

        async with xmpp_account(hub, "rival") as rival:
            with pytest.raises(PresenceError) as refused:
                await rival.join_muc(muc, nick, timeout=5)  # Alice's display name is taken
            assert refused.value.condition == "conflict"


async def test_bounced_message_becomes_a_notice(hub: Hub) -> None:
    alice = await hub.user("alice")
    ghost = ghost_of(f"nobody{next(_names)}@xmpp.test")  # no such account on the XMPP server
    room_id = await alice.create_room(invite=[ghost], is_direct=True)
    await alice.wait_for(lambda e: e["type"] == "m.room.member" and e["state_key"] == ghost
                         and e["content"]["membership"] == "join", room_id=room_id)  # fmt: skip
    sent = await alice.send_text(room_id, "Is anybody there?")
    notice = await alice.wait_for(
        lambda e: e["sender"] == hub.bot and "not delivered" in _body(e), room_id=room_id
    )
    assert notice["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": sent}}
    assert "XMPP server did not deliver it" in _body(notice)


async def test_oversized_message_is_refused_with_an_error(hub: Hub, xmpp_user: XmppUser) -> None:
    alice, room_id, _, _ = await _dm(hub, xmpp_user)
    xmpp_user.send_chat(jid_of(alice), "x" * 70_000)
    error = await xmpp_user.wait_for_message(lambda m: m["type"] == "error")
    assert error["error"]["condition"] == "not-acceptable"
    xmpp_user.send_chat(jid_of(alice), "a normal one")
    await alice.wait_for(lambda e: _body(e) == "a normal one", room_id=room_id)
    assert not alice.seen(lambda e: _body(e).startswith("xxxx"), room_id=room_id)


async def test_bridged_muc_catches_up_after_a_bridge_restart(hub: Hub) -> None:
    room = f"ops{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:
        alice = await hub.user("alice")
        room_id = await alice.join(muc_alias(room))
        xena.send_groupchat(room, "before the restart")
        await alice.wait_for(lambda e: _body(e) == "before the restart", room_id=room_id)
        hub.bridge.stop()
        xena.send_groupchat(room, "while the bridge was away 1")
        xena.send_groupchat(room, "while the bridge was away 2")
        await hub.bridge.start(hub.as_port)
        await alice.wait_for(
            lambda e: _body(e) == "while the bridge was away 2", room_id=room_id, timeout=30
        )
        xena.send_groupchat(room, "after the restart")
        await alice.wait_for(lambda e: _body(e) == "after the restart", room_id=room_id, timeout=30)
        for text in (
            "before the restart",
            "while the bridge was away 1",
            "while the bridge was away 2",
        ):
            assert len(alice.seen(lambda e, t=text: _body(e) == t, room_id=room_id)) == 1, text


async def test_writing_to_an_xmpp_ghost_address_is_refused(hub: Hub, xmpp_user: XmppUser) -> None:
    looped = f"xmpp_someone=40xmpp.test\\3a{DOMAIN}@{XMPP_COMPONENT}"
    xmpp_user.send_chat(looped, "hello myself")
    bounce = await xmpp_user.wait_for_message(lambda m: m["type"] == "error")
    assert bounce["error"]["condition"] == "item-not-found"


async def test_ghost_takes_name_and_avatar_from_the_vcard(hub: Hub) -> None:
    async with xmpp_account(hub, "xander") as user:
        avatar = b"\x89PNG\r\n\x1a\n" + b"avatar-pixels" * 50
        vcard = user.client.plugin["xep_0054"].make_vcard()
        vcard["NICKNAME"] = "Xander the Great"
        vcard["PHOTO"]["TYPE"] = "image/png"
        vcard["PHOTO"]["BINVAL"] = avatar
        await user.client.plugin["xep_0054"].publish_vcard(vcard)
        alice = await hub.user("alice")
        user.send_chat(jid_of(alice), "Do you like my picture?")
        room_id = await alice.wait_for_invite(timeout=20)
        await alice.join(room_id)
        await alice.wait_for(lambda e: _body(e) == "Do you like my picture?", room_id=room_id)
        profile = await alice.get_profile(ghost_of(user.jid))
        assert profile["displayname"] == "Xander the Great"
        assert await alice.download(profile["avatar_url"]) == avatar


async def test_delivery_receipt_only_after_the_message_is_on_matrix(
    hub: Hub, xmpp_user: XmppUser
) -> None:
    alice, room_id, _, _ = await _dm(hub, xmpp_user)
    stanza_id = xmpp_user.send_chat(jid_of(alice), "please confirm", receipt=True)
    receipt = await xmpp_user.wait_for_message(lambda m: m["receipt"] == stanza_id)
    assert _from(alice)(receipt)
    # The receipt is sent after the homeserver accepted the event, so it is there to be read.
    await alice.wait_for(lambda e: _body(e) == "please confirm", room_id=room_id)


async def test_matrix_members_coming_and_going_are_shown_to_xmpp(hub: Hub) -> None:
    alice, bob = await hub.user("alice"), await hub.user("bob")
    bob_nick = bob.mxid[1:].split(":")[0].capitalize()
    localpart = f"hall{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    hosted = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    async with xmpp_account(hub, "xeno") as xeno:
        await xeno.join_muc(hosted, "Xeno")
        await bob.join(room_id)
        await xeno.wait_for_presence(
            lambda p: p["from"].resource == bob_nick and p["type"] != "unavailable"
        )
        await bob.leave(room_id)
        await xeno.wait_for_presence(
            lambda p: p["from"].resource == bob_nick and p["type"] == "unavailable"
        )

    muc = f"desk{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, muc, "Xena") as xena:
        carol = await hub.user("carol")
        carol_nick = carol.mxid[1:].split(":")[0].capitalize()
        bridged = await carol.join(muc_alias(muc))
        await carol.send_text(bridged, "hello, then goodbye")
        await xena.wait_for_message(
            lambda m: m["body"] == "hello, then goodbye" and m["from"].resource == carol_nick
        )
        await carol.leave(bridged)
        await xena.wait_for_presence(
            lambda p: p["from"].resource == carol_nick and p["type"] == "unavailable"
        )
