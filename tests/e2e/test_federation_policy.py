"""The federation policy refuses, end to end: real Synapse, Prosody and the bridge process.

The session hub's policy (tests/e2e/conftest.py ``federation_rules``) connects the test Prosody's
own domain with the users of this homeserver, opens its MUC service to every Matrix server, and
connects ``partner.test`` with the Matrix server ``other.example`` only; ``stranger.test`` is in
no rule. The test Synapse has no users on a second server, so "a Matrix user on a server the
policy does not allow" is played by a local user facing ``partner.test``, which the policy
keeps away from this homeserver.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ruamel.yaml import YAML
from slixmpp.exceptions import PresenceError

from tests.e2e.conftest import (
    DOMAIN,
    XMPP_PARTNER_DOMAIN,
    XMPP_ROOMS,
    XMPP_STRANGER_DOMAIN,
    Hub,
)
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixRequestError
from tests.e2e.test_xmpp import _body, ghost_of, jid_of
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e
_names = itertools.count(1)


def _membership(event: dict[str, Any], mxid: str, membership: str) -> bool:
    return bool(
        event.get("type") == "m.room.member"
        and event.get("state_key") == mxid
        and event["content"].get("membership") == membership
    )


def _refuses(text: str, domain: str) -> bool:
    """Whether ``text`` says the policy keeps XMPP users at ``domain`` from this homeserver."""
    return f"does not connect xmpp users at {domain} with Matrix users at {DOMAIN}" in text


@contextlib.asynccontextmanager
async def _account(hub: Hub, name: str, domain: str | None = None) -> AsyncIterator[XmppUser]:
    """A fresh XMPP account at ``domain`` (by default the test server's own), logged in."""
    jid = hub.prosody.register(f"{name}{next(_names)}", domain=domain)
    user = XmppUser(jid, "pw", hub.prosody.c2s_port)
    await user.connect()
    try:
        yield user
    finally:
        await user.close()


@contextlib.asynccontextmanager
async def _policy(hub: Hub, rules: list[dict[str, Any]]) -> AsyncIterator[None]:
    """The bridge restarted with ``rules`` as its federation policy, as an operator would change
    it; the hub's own config (and the bridge running with it) is back afterwards."""
    path = hub.bridge.config_path
    original = path.read_text()
    yaml = YAML()
    config = yaml.load(original)
    config["bridge"]["federation"] = rules
    try:
        with path.open("w") as f:
            yaml.dump(config, f)
        await hub.restart_bridge(kill=False)
        yield
    finally:
        path.write_text(original)
        await hub.restart_bridge(kill=False)


async def test_an_xmpp_user_at_a_domain_no_rule_allows_cannot_write_to_a_matrix_user(
    hub: Hub,
) -> None:
    alice = await hub.user("alice")
    async with _account(hub, "eve", XMPP_STRANGER_DOMAIN) as eve:
        stanza_id = eve.send_chat(jid_of(alice), "Hello from a stranger")
        error = await eve.wait_for_message(lambda m: m["type"] == "error" and m["id"] == stanza_id)
        assert error["from"].bare == jid_of(alice).lower()
        assert error["error"]["condition"] == "forbidden"
        assert error["error"]["type"] in {"cancel", "auth"}
        assert _refuses(error["error"]["text"], XMPP_STRANGER_DOMAIN), error["error"]["text"]
        stranger_ghost = ghost_of(eve.jid)

        # A permitted sender's message right behind it reaches Alice: had the stranger's got
        # anywhere, its invite would be there by then.
        async with _account(hub, "carol") as carol:
            carol.send_chat(jid_of(alice), "Hello from a colleague")
            room_id = await alice.wait_for_invite(timeout=20)
            await alice.join(room_id)
            got = await alice.wait_for(
                lambda e: _body(e) == "Hello from a colleague", room_id=room_id
            )
            assert got["sender"] == ghost_of(carol.jid)

        assert [room for room, _ in alice.invites] == [room_id]
        assert await alice.joined_rooms() == [room_id]
        assert not alice.seen(lambda e: e.get("sender") == stranger_ghost)
        assert not alice.seen(lambda e: "stranger" in _body(e))
        # No ghost was made for the stranger, and the bridge keeps nothing of them.
        with pytest.raises(MatrixRequestError) as missing:
            await alice.get_profile(stranger_ghost)
        assert missing.value.status == 404
        assert (
            hub.bridge.query(
                "SELECT network, remote_id FROM portal WHERE remote_id LIKE ?",
                f"%{XMPP_STRANGER_DOMAIN}%",
            )
            == []
        )


@pytest.mark.parametrize("domain", [XMPP_STRANGER_DOMAIN, XMPP_PARTNER_DOMAIN])
async def test_an_xmpp_user_cannot_pull_the_bot_into_a_matrix_room_the_policy_does_not_allow(
    hub: Hub, domain: str
) -> None:
    alice = await hub.user("alice")
    localpart = f"fedlobby{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    muc = f"{localpart}\\3a{DOMAIN}@{XMPP_ROOMS}"
    async with _account(hub, "mallory", domain) as mallory:
        with pytest.raises(PresenceError) as refused:
            await mallory.join_muc(muc, "Mallory", timeout=10)
        assert refused.value.condition == "forbidden"
        assert _refuses(refused.value.text, domain), refused.value.text
        assert set(await alice.joined_members(room_id)) == {alice.mxid}
        assert hub.bridge.query("SELECT 1 FROM portal WHERE mxid = ?", room_id) == []

        # The room itself can be joined from XMPP: a user of the test server's own domain does.
        async with _account(hub, "xeno") as xeno:
            await xeno.join_muc(muc, "Xeno")
            await alice.wait_for(lambda e: _membership(e, ghost_of(xeno.jid), "join"), room_id=room_id)  # fmt: skip
        members = set(await alice.joined_members(room_id))
        assert hub.bot in members
        assert ghost_of(mallory.jid) not in members
        assert not mallory.seen(lambda m: m["type"] == "groupchat")


async def test_a_matrix_user_cannot_start_a_chat_with_a_domain_kept_from_their_server(
    hub: Hub,
) -> None:
    alice = await hub.user("alice")
    async with _account(hub, "dave", XMPP_PARTNER_DOMAIN) as dave:
        ghost = ghost_of(dave.jid)
        room_id = await alice.create_room(invite=[ghost], is_direct=True)
        left = await alice.wait_for(lambda e: _membership(e, ghost, "leave"), room_id=room_id)
        reason = str(left["content"].get("reason", ""))
        assert "federation policy" in reason and _refuses(reason, XMPP_PARTNER_DOMAIN), reason
        assert not alice.seen(lambda e: _membership(e, ghost, "join"), room_id)
        assert not alice.seen(lambda e: _membership(e, hub.bot, "invite"), room_id)
        assert hub.bridge.query("SELECT 1 FROM portal WHERE mxid = ?", room_id) == []
        assert not dave.messages


async def test_a_message_into_a_portal_the_policy_no_longer_allows_is_not_delivered(
    hub: Hub,
) -> None:
    """The operator closes a domain that had a chat with a local user: what the user writes
    there afterwards is refused with the 'not delivered' reply, and kept as a dead letter."""
    alice = await hub.user("alice")
    async with _account(hub, "dave", XMPP_PARTNER_DOMAIN) as dave:
        ghost = ghost_of(dave.jid)
        opened = {"network": "xmpp", "remote": [XMPP_PARTNER_DOMAIN], "matrix": ["local"]}
        hub_rules = YAML().load(hub.bridge.config_path)["bridge"]["federation"]
        async with _policy(hub, [*hub_rules, opened]):
            room_id = await alice.create_room(invite=[ghost], is_direct=True)
            await alice.wait_for(lambda e: _membership(e, ghost, "join"), room_id=room_id)
            await alice.send_text(room_id, "While we were allowed")
            await dave.wait_for_message(lambda m: m["body"] == "While we were allowed")

        # The hub's policy is back: partner.test reaches other.example only.
        event_id = await alice.send_text(room_id, "After the policy changed")
        notice = await alice.wait_for(
            lambda e: e["sender"] == hub.bot and "not delivered" in _body(e), room_id=room_id
        )
        assert notice["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": event_id}}
        assert "federation policy" in _body(notice)
        assert _refuses(_body(notice), XMPP_PARTNER_DOMAIN), _body(notice)

        def parked() -> list[tuple[Any, ...]]:
            return hub.bridge.query("SELECT 1 FROM dead_letter WHERE event_id = ?", event_id)

        await eventually(lambda: bool(parked()), f"a dead letter for {event_id}")
        assert not dave.seen(lambda m: m["body"] == "After the policy changed")
