"""Moderation between MUCs and Matrix rooms (issue #14, item 4), against a real Prosody and a
real Synapse: XEP-0425 moderation, XEP-0421 occupant-ids, kicks and bans both ways, power
levels as affiliations, the room subject."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from urllib.parse import quote

import pytest
from slixmpp import JID, Message, Presence
from slixmpp.exceptions import PresenceError

from tests.e2e.conftest import Hub
from tests.e2e.matrix_client import MatrixRequestError
from tests.e2e.test_xmpp import ghost_of, muc_alias, muc_occupant, xmpp_account

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
RETRACT = "{urn:xmpp:message-retract:1}retract"
MODERATED = "{urn:xmpp:message-moderate:1}moderated"
MUC_USER = "http://jabber.org/protocol/muc#user"


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def _notice(hub: Hub, text: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.message" and e["sender"] == hub.bot
        and e["content"].get("msgtype") == "m.notice" and text in _body(e)
    )  # fmt: skip


def _statuses(presence: Presence) -> set[str]:
    return {s.get("code", "") for s in presence.xml.iterfind(f".//{{{MUC_USER}}}status")}


def _moderation_from(room: str) -> Any:
    def announced(m: Message) -> bool:
        retract = m.xml.find(RETRACT)
        return (retract is not None and retract.find(MODERATED) is not None
                and m["from"].bare == room and not m["from"].resource)  # fmt: skip

    return announced


async def test_a_matrix_moderators_redaction_is_a_moderation_other_xmpp_clients_see(
    hub: Hub,
) -> None:
    alice = await hub.user("alice")  # creates the room: a moderator (power level 100)
    nick = alice.mxid[1:].split(":")[0].capitalize()
    localpart = f"modlobby{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    muc = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    async with xmpp_account(hub, "xeno") as xeno, xmpp_account(hub, "xara") as xara:
        await xeno.join_muc(muc, "Xeno")
        await xara.join_muc(muc, "Xara")

        # Hostile first: Xeno, no moderator, writes a "moderation" of Xara's message himself.
        xara.send_groupchat(muc, "Xara's own words")
        kept = await alice.wait_for(lambda e: _body(e) == "Xara's own words", room_id=room_id)
        known = await xeno.wait_for_message(lambda m: m["body"] == "Xara's own words")
        forged = xeno.client.make_message(mto=JID(muc), mtype="groupchat", mbody="removed")
        retract = forged.xml.makeelement(RETRACT, {"id": known["stanza_id"]["id"]})
        retract.append(retract.makeelement(MODERATED, {"by": f"{muc}/Xeno"}))
        forged.xml.append(retract)
        forged.send()
        xeno.send_groupchat(muc, "spam spam")
        spam = await alice.wait_for(lambda e: _body(e) == "spam spam", room_id=room_id)
        assert _body(await alice.get_event(room_id, kept["event_id"])) == "Xara's own words"

        # Alice, a Matrix moderator, removes Xeno's message: Xara's client sees the room say so.
        seen = await xara.wait_for_message(lambda m: m["body"] == "spam spam")
        await alice.redact(room_id, spam["event_id"], reason="spam")
        got = await xara.wait_for_message(_moderation_from(muc), timeout=45)
        retract = got.xml.find(RETRACT)
        assert retract is not None and retract.get("id") == seen["stanza_id"]["id"]
        moderated = retract.find(MODERATED)
        assert moderated is not None and moderated.get("by") == f"{muc}/{nick}"
        assert xeno.seen(_moderation_from(muc))  # the author is told too

        # Alice bans Xeno's ghost: Xeno is out of the room as banned (301), Xara sees it, and
        # Xeno cannot come back.
        ghost = spam["sender"]
        assert ghost == ghost_of(xeno.jid)
        await alice._client("POST", f"/rooms/{quote(room_id)}/ban",
                            {"user_id": ghost, "reason": "spamming"})  # fmt: skip
        for user in (xeno, xara):
            banned = await user.wait_for_presence(
                lambda p: p["from"] == JID(f"{muc}/Xeno") and p["type"] == "unavailable"
                and _statuses(p) >= {"301"}, timeout=45,
            )  # fmt: skip
            assert banned.xml.findtext(f".//{{{MUC_USER}}}reason") == "spamming"
        with pytest.raises(PresenceError) as refused:
            await xeno.join_muc(muc, "Xeno", timeout=30)
        assert refused.value.condition == "forbidden"


async def test_a_remote_muc_keeps_ghosts_subject_and_kicks_of_matrix_users(hub: Hub) -> None:
    room = f"modroom{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:  # first in: the room's owner
        alice = await hub.user("alice")
        nick = alice.mxid[1:].split(":")[0].capitalize()
        room_id = await alice.join(muc_alias(room))

        # XEP-0421: Prosody gives every occupant an occupant-id; a nick change keeps the ghost.
        xena.send_groupchat(room, "as Xena")
        first = await alice.wait_for(lambda e: _body(e) == "as Xena", room_id=room_id)
        xena.client.send_presence(pto=JID(f"{room}/Xena Two"))
        await xena.wait_for_presence(lambda p: p["from"].resource == "Xena Two")
        xena.send_groupchat(room, "as Xena Two")
        second = await alice.wait_for(lambda e: _body(e) == "as Xena Two", room_id=room_id)
        assert first["sender"] == second["sender"]
        assert "occupant-id" in first["sender"]

        # Xena owns the room: her ghost is the portal's admin (power level 100).
        for _ in range(40):
            levels = await alice.get_state(room_id, "m.room.power_levels")
            if levels.get("users", {}).get(first["sender"]) == 100:
                break
            await asyncio.sleep(0.5)
        assert levels["users"].get(first["sender"]) == 100, levels

        # The subject becomes the Matrix topic.
        xena.client.plugin["xep_0045"].set_subject(JID(room), "Plans for Friday")
        await alice.wait_for(
            lambda e: e["type"] == "m.room.topic" and e["content"].get("topic") == "Plans for Friday",
            room_id=room_id, timeout=45,
        )  # fmt: skip

        # An XMPP moderator kicks Yves: his ghost is kicked from the Matrix room, by the bot.
        async with muc_occupant(hub, room, "Yves") as yves:
            yves.send_groupchat(room, "Yves here")
            said = await alice.wait_for(lambda e: _body(e) == "Yves here", room_id=room_id)
            await xena.client.plugin["xep_0045"].set_role(JID(room), "Yves", "none",
                                                          reason="rude")  # fmt: skip
            kicked = await alice.wait_for(
                lambda e: e["type"] == "m.room.member" and e["state_key"] == said["sender"]
                and e["content"].get("membership") == "leave", room_id=room_id, timeout=45,
            )  # fmt: skip
            assert kicked["sender"] == hub.bot and kicked["content"].get("reason") == "rude"

        # An XMPP moderator kicks Alice's occupant: Matrix is told, and she stays out until she
        # rejoins in Matrix.
        await alice.send_text(room_id, "hello from Alice")
        await xena.wait_for_message(
            lambda m: m["from"].resource == nick and m["body"] == "hello from Alice"
        )
        await xena.client.plugin["xep_0045"].set_role(JID(room), nick, "none", reason="off topic")
        told = await alice.wait_for(_notice(hub, "kicked"), room_id=room_id, timeout=45)
        assert "off topic" in _body(told) and alice.mxid in _body(told)
        await alice.send_text(room_id, "am I still there?")
        await alice.wait_for(lambda e: "rejoin" in _body(e) and e["sender"] == hub.bot,
                             room_id=room_id, timeout=45)  # fmt: skip
        assert not xena.seen(lambda m: m["body"] == "am I still there?")

        await alice.leave(room_id)
        await alice.join(room_id)
        await alice.send_text(room_id, "back again")
        await xena.wait_for_message(
            lambda m: m["from"].resource == nick and m["body"] == "back again", timeout=45
        )


def _rights(presence: Presence) -> tuple[str, str]:
    item = presence.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    return ("", "") if item is None else (item.get("affiliation", ""), item.get("role", ""))


async def test_a_power_level_change_shows_as_an_affiliation(hub: Hub) -> None:
    alice, bob = await hub.user("alice"), await hub.user("bob")
    localpart = f"powers{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    await bob.join(room_id)
    muc = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    alice_nick, bob_nick = (u.mxid[1:].split(":")[0].capitalize() for u in (alice, bob))

    def shows(nick: str, rights: tuple[str, str]) -> Any:
        return lambda p: p["from"] == JID(f"{muc}/{nick}") and _rights(p) == rights

    async with xmpp_account(hub, "xeno") as xeno:
        await xeno.join_muc(muc, "Xeno")
        await xeno.wait_for_presence(shows(alice_nick, ("owner", "moderator")))  # the creator
        await xeno.wait_for_presence(shows(bob_nick, ("member", "participant")))

        # Hostile first: Bob (power 0) makes himself an admin; the homeserver refuses it.
        levels = await alice.get_state(room_id, "m.room.power_levels")
        with pytest.raises(MatrixRequestError):
            await bob.send_state(room_id, "m.room.power_levels",
                                 {**levels, "users": {**levels["users"], bob.mxid: 100}})  # fmt: skip

        await alice.send_state(room_id, "m.room.power_levels",
                               {**levels, "users": {**levels["users"], bob.mxid: 75}})  # fmt: skip
        await xeno.wait_for_presence(shows(bob_nick, ("admin", "moderator")), timeout=45)
        assert not [p for p in xeno.presences if shows(bob_nick, ("owner", "moderator"))(p)]

        # The topic is the room's subject, from the Matrix member who set it.
        await alice.send_state(room_id, "m.room.topic", {"topic": "New plans"})
        got = await xeno.wait_for_message(lambda m: m["subject"] == "New plans", timeout=45)
        assert got["from"] == JID(f"{muc}/{alice_nick}") and got["type"] == "groupchat"
