"""A Matrix user's own Teams account follows their joins and leaves of group chat portal rooms
(bridge.teams.matrix_members), against the Graph emulator through the unmodified msgraph-sdk.
Anna's Teams login is Adele's account, Bert's is Alex's; Carol has none (the relay speaks for
her)."""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest

from bridge.core import LoginID, MatrixMembership, NotSupported
from bridge.portal.models import Login, Portal
from bridge.teams.client import TeamsSharedClient
from bridge.teams.group_chats import relay_owner_key
from bridge.teams.ids import NETWORK, portal_key
from bridge.teams.matrix_members import membership_changed
from bridge.teams.network import TeamsNetwork
from tests.teams.test_group_members import _kv
from tests.teams.test_members import _group, _net
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

ANNA, BERT, CAROL = "@anna:hub.example", "@bert:hub.example", "@carol:hub.example"
BOT = "@pontis:hub.example"


def _logged_in(emu: Emulator) -> TeamsNetwork:
    net, _ = _net(emu)
    _kv(net)
    logins = [(ANNA, "adele"), (BERT, "alex")]
    net.ctx.store.list_logins = AsyncMock(
        return_value=[
            Login(NETWORK, LoginID(emu.user(n)["id"]), mxid, metadata={"tenant_id": emu.tenant_id})
            for mxid, n in logins
        ]
    )
    for _, name in logins:
        net.login_graphs[emu.user(name)["id"]] = emu.user_client(name)
    net.ctx.bot_mxid = BOT
    net.ctx.matrix_has_devices = AsyncMock(return_value=True)
    net.ctx.parse_ghost_mxid = lambda mxid: (
        mxid[7:].split(":")[0] if mxid[:7] == "@teams_" else None
    )
    return net


def _change(chat: str, sender: str, membership: str, inviter: str = "") -> MatrixMembership:
    portal = Portal(network=NETWORK, remote_id=portal_key(chat).remote_id, mxid="!room:hub")
    return MatrixMembership(portal=portal, event_id="$m", sender=sender, sender_name=sender,
                            timestamp=0, membership=membership, inviter=inviter)  # fmt: skip


def _members(emu: Emulator, chat: str) -> set[str]:
    return set(emu.services.state.chats[chat].members)


def _changes(emu: Emulator) -> list[dict[str, object]]:
    return emu.requests("/v1.0/chats/*/members*", "DELETE") + emu.requests(
        "/v1.0/chats/*/members", "POST"
    )


# --- hostile first -------------------------------------------------------------------------


async def test_a_relay_user_leaving_or_joining_changes_nothing_in_teams(emulator: Emulator) -> None:  # noqa: F811
    """Carol has no Teams login: the relay account speaks for her and stays in the chat."""
    net = _logged_in(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    before = _members(emulator, chat)
    shared = TeamsSharedClient(net)
    await shared.handle_matrix_membership(_change(chat, CAROL, "leave"))
    await shared.handle_matrix_membership(_change(chat, CAROL, "join", inviter=ANNA))
    assert _members(emulator, chat) == before
    assert _changes(emulator) == []


async def test_a_leave_removes_only_the_leavers_own_account(emulator: Emulator) -> None:  # noqa: F811
    """Carol (no login) leaving, in a chat where Anna's and Bert's accounts are, removes
    neither of them; Bert leaving removes Alex (his own account) and nobody else."""
    net = _logged_in(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    await membership_changed(net, _change(chat, CAROL, "leave"))
    assert {adele, alex} <= _members(emulator, chat)
    await membership_changed(net, _change(chat, BERT, "leave"))
    assert alex not in _members(emulator, chat) and adele in _members(emulator, chat)
    [removal] = emulator.requests("/v1.0/chats/*/members/*", "DELETE")
    assert removal["status"] == 204


@pytest.mark.parametrize(("status", "why"), [(403, "Teams refused it"),
                                              (404, "no longer knows that membership")])  # fmt: skip
async def test_a_refused_removal_says_so_and_is_not_retried(
    emulator: Emulator,  # noqa: F811
    status: int,
    why: str,
) -> None:
    """Graph refuses the removal: a notice (NotSupported, which the core answers with a notice
    and finishes at once, so the portal's queue moves on) says the account is still in the
    chat and what to do; the next leave goes through."""
    net = _logged_in(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    emulator.services.wire.add_fault("/v1.0/chats/*/members/*", status=status, method="DELETE")
    with pytest.raises(NotSupported) as refused:
        await membership_changed(net, _change(chat, ANNA, "leave"))
    assert why in refused.value.user_message
    assert "still a member there" in refused.value.user_message
    assert "leave it in Teams" in refused.value.user_message
    assert emulator.user("adele")["id"] in _members(emulator, chat)
    await membership_changed(net, _change(chat, BERT, "leave"))
    assert emulator.user("alex")["id"] not in _members(emulator, chat)


async def test_a_join_invited_by_someone_without_a_login_adds_nobody(emulator: Emulator) -> None:  # noqa: F811
    net = _logged_in(emulator)
    chat = await _group(emulator, "alex", "megan")
    for inviter in (CAROL, ""):
        with pytest.raises(NotSupported) as skipped:
            await membership_changed(net, _change(chat, ANNA, "join", inviter=inviter))
        assert "not a member of this Teams chat" in skipped.value.user_message
    assert CAROL in skipped.value.user_message or "nobody" in skipped.value.user_message
    assert emulator.user("adele")["id"] not in _members(emulator, chat)
    assert _changes(emulator) == []


# --- leaving and joining -------------------------------------------------------------------


async def test_a_logged_in_user_leaves_and_is_added_back_by_their_inviter(
    emulator: Emulator,  # noqa: F811
) -> None:
    net = _logged_in(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    adele = emulator.user("adele")["id"]
    await membership_changed(net, _change(chat, ANNA, "leave"))
    assert adele not in _members(emulator, chat)
    await membership_changed(net, _change(chat, ANNA, "leave"))  # again: nothing left to do
    await membership_changed(net, _change(chat, ANNA, "join", inviter=BERT))
    assert adele in _members(emulator, chat)
    [post] = emulator.requests("/v1.0/chats/*/members", "POST")
    assert post["status"] == 201
    # Teams says who did what: Adele left, Alex (Bert's account) added her.
    details = [m.event_detail for m in emulator.services.state.chats[chat].messages.values()
               if m.event_detail]  # fmt: skip
    assert [
        (d["@odata.type"].rsplit(".", 1)[1], d["initiator"]["user"]["id"]) for d in details
    ] == [
        ("membersDeletedEventMessageDetail", adele),
        ("membersAddedEventMessageDetail", emulator.user("alex")["id"]),
    ]


async def test_a_join_of_someone_already_in_the_chat_adds_nothing(emulator: Emulator) -> None:  # noqa: F811
    """The invite member sync sent when Teams added Anna's account, accepted: no second add."""
    net = _logged_in(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    await membership_changed(net, _change(chat, ANNA, "join", inviter=BOT))
    await membership_changed(net, _change(chat, ANNA, "join", inviter=BERT))
    assert _changes(emulator) == []


async def test_a_one_on_one_chat_keeps_its_two_people(emulator: Emulator) -> None:  # noqa: F811
    net = _logged_in(emulator)
    one_on_one = emulator.chat(1)  # Adele and Megan
    before = _members(emulator, one_on_one)
    await membership_changed(net, _change(one_on_one, ANNA, "leave"))
    assert _members(emulator, one_on_one) == before
    assert _changes(emulator) == []


async def test_the_bridges_own_invite_adds_nobody(emulator: Emulator) -> None:  # noqa: F811
    """The bridge invites a Matrix user into a chat that reaches them through the relay
    account (a service chat): their own account is not made a member, nor are they told off."""
    net = _logged_in(emulator)
    chat = await _group(emulator, "alex", "megan")
    ghost = f"@teams_{emulator.user('alex')['id']}:hub.example"
    for inviter in (BOT, ghost):
        await membership_changed(net, _change(chat, ANNA, "join", inviter=inviter))
    assert emulator.user("adele")["id"] not in _members(emulator, chat)
    assert _changes(emulator) == []


async def test_the_relay_chat_of_a_user_who_logged_in_later_is_left_alone(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Anna's relay chat (opened before she logged in) has her account in it after all: it is
    still the relay's chat for her, and her joins and leaves there change nothing in Teams."""
    net = _logged_in(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    await net.ctx.store.kv_set(relay_owner_key(chat), ANNA)
    await membership_changed(net, _change(chat, ANNA, "leave"))
    assert emulator.user("adele")["id"] in _members(emulator, chat)
    assert _changes(emulator) == []


async def test_an_inviter_whose_login_expired_is_named_and_nothing_retried(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Graph refuses Bert's token (401, a fresh one too): Anna is told it is Bert's login that
    expired, not hers, at once (no retries that would end in "your login has expired")."""
    net = _logged_in(emulator)
    chat = await _group(emulator, "alex", "megan")
    emulator.services.wire.add_fault("/v1.0/chats/*/members", status=401, method="POST", count=9)
    with pytest.raises(NotSupported) as refused:
        await membership_changed(net, _change(chat, ANNA, "join", inviter=BERT))
    assert f"the Teams login of {BERT} has expired" in refused.value.user_message
    assert emulator.user("adele")["id"] not in _members(emulator, chat)


async def test_a_deactivated_account_leaving_keeps_its_teams_account(emulator: Emulator) -> None:  # noqa: F811
    """Synapse deletes a deactivated account's devices, then makes it leave every room: that
    leave is not Bert's choice, and Alex (his Teams account) stays in the Teams chat."""
    net = _logged_in(emulator)
    net.ctx.matrix_has_devices = AsyncMock(return_value=False)
    chat = await _group(emulator, "adele", "alex", "megan")
    before = _members(emulator, chat)
    with pytest.raises(NotSupported) as kept:
        await TeamsSharedClient(net).handle_matrix_membership(_change(chat, BERT, "leave"))
    assert "still a member there" in kept.value.user_message
    assert _members(emulator, chat) == before
    assert _changes(emulator) == []
    net.ctx.matrix_has_devices.assert_awaited_once_with(BERT)
