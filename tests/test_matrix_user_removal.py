"""A Matrix user the network removed (``RemoteKick(matrix_user=…)``) leaves the portal room, or
the room is told once why not (bridge.core.removals). Real store, router and portal manager;
the homeserver records what it was asked and refuses a kick its power levels forbid, as
Synapse does (403 M_FORBIDDEN)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.errors import PermanentError, TransientError
from bridge.core.events import MessagePart, RemoteKick, RemoteMessage
from bridge.core.ids import RemoteMessageID, RemoteUserID
from bridge.core.removals import AUDIT_ACTION, CREATOR, kick_power_needed
from bridge.portal.audit import AuditStore
from bridge.portal.store import Store
from tests.test_permissions import BOT, KEY, NET, ROOM, Homeserver, Hub

BOB = "@bob:hub.test"
BOB_ACCOUNT = RemoteUserID("bob@bridge.test")
REASON = "Removed from the chat"


class Moderated(Homeserver):
    """A room a user bridged: they are at 100, the bot at 0, kicking needs 50."""

    def __init__(self) -> None:
        super().__init__()
        self.levels = {"users": {"@alice:hub.test": 100}, "kick": 50}
        self.creators: list[str] = []
        self.members = {BOB: "Bob", BOT: "Pontis"}
        self.kicked: list[tuple[str, str, str]] = []
        self.fail_kick: Exception | None = None

    async def kick(self, room_id: str, mxid: str, reason: str = "", *, ban: bool = False) -> None:
        if self.fail_kick is not None:
            raise self.fail_kick
        if kick_power_needed(self.levels, self.creators, BOT, mxid) is not None:
            raise PermanentError(f"removing {mxid}: homeserver refused with 403 M_FORBIDDEN")
        self.kicked.append((room_id, mxid, reason))
        self.members.pop(mxid, None)

    async def get_displayname(self, room_id: str, mxid: str) -> str:
        return self.members.get(mxid, mxid)


async def _hub(store: Store) -> tuple[Hub, Moderated]:
    hub = Hub(store, relay_enabled=False)
    matrix = Moderated()
    hub.matrix = matrix
    hub.portals._matrix = matrix  # type: ignore[assignment]
    hub.portals.removals._matrix = matrix  # type: ignore[assignment]
    hub.router._matrix = matrix  # type: ignore[assignment]
    await hub.portal(relay=False)
    return hub, matrix


def _kick(reason: str = REASON) -> RemoteKick:
    return RemoteKick(portal=KEY, target=BOB_ACCOUNT, reason=reason, matrix_user=BOB)


def _notices(matrix: Moderated) -> list[str]:
    return [body for room, body in matrix.sent if room == ROOM and "cannot remove" in body]


async def _audit(store: Store) -> list[Any]:
    return await AuditStore(store.database).newest(action=AUDIT_ACTION)


# --- hostile first -------------------------------------------------------------------------------


async def test_without_kick_power_the_room_is_told_once_and_the_portal_goes_on(
    store: Store,
) -> None:
    hub, matrix = await _hub(store)
    for _ in range(3):  # a retry, a catch-up, the next member change: the same removal
        await hub.router.submit_remote_event(NET, _kick(), wait=True)
    message = RemoteMessage(portal=KEY, id=RemoteMessageID("m1"), sender=RemoteUserID("eve"),
                            parts=[MessagePart(text="after")])  # fmt: skip
    await hub.router.submit_remote_event(NET, message, wait=True)

    assert matrix.kicked == []  # the bot did not try what the power levels forbid
    [notice] = _notices(matrix)
    assert notice.startswith("Email does not let Bob (@bob:hub.test) read this chat (“Removed"
                             " from the chat”), but the bridge cannot remove them from this"
                             " room, so they still read what is bridged here.")  # fmt: skip
    assert notice.endswith(f"Remove them yourself, and give the bridge bot ({BOT}) the power to"
                           " kick (power level 50) in this room so that it removes whom Email"
                           " removes from now on.")  # fmt: skip
    assert (ROOM, "after") in matrix.sent  # the queue went on: the next message arrived
    assert not [b for _, b in matrix.sent if "could not be bridged" in b]  # no dead letter
    [entry] = await _audit(store)
    assert (entry.actor, entry.target, entry.outcome, entry.origin) == (
        f"{NET}:{BOB_ACCOUNT}", BOB, "failed", f"room {ROOM}"
    )  # fmt: skip


async def test_the_homeservers_refusal_is_told_once_too(store: Store) -> None:
    """Levels that look enough (a state cache behind, a rule the bridge does not know): the
    homeserver's 403 is caught, not raised, and the room is told without a level."""
    hub, matrix = await _hub(store)
    matrix.levels["users"] = {BOT: 100}
    matrix.fail_kick = PermanentError("removing @bob: homeserver refused with 403 M_FORBIDDEN")
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    [notice] = _notices(matrix)
    assert "the power to kick in this room" in notice
    assert len(await _audit(store)) == 1


async def test_another_cause_or_a_new_stay_is_told_again(store: Store) -> None:
    hub, matrix = await _hub(store)
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    await hub.portals.handle(_kick("Not a member"), hub.client)  # type: ignore[arg-type]
    assert len(_notices(matrix)) == 2
    del matrix.members[BOB]  # Bob left; the mark goes with him (kept in the store)
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    portal = await store.get_portal(KEY)
    assert portal is not None and BOB not in portal.metadata.get("core.removals_noticed", {})
    matrix.members[BOB] = "Bob"  # back, and removed on the network again
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    assert len(_notices(matrix)) == 3


async def test_a_room_creator_is_told_to_unbridge_not_to_give_power(store: Store) -> None:
    hub, matrix = await _hub(store)
    matrix.creators = [BOB]
    matrix.levels["users"] = {BOT: 100}
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    [notice] = _notices(matrix)
    assert "nobody can remove a room's creator" in notice and "unbridge" in notice
    assert matrix.kicked == []


async def test_a_homeserver_away_is_retried_not_told(store: Store) -> None:
    hub, matrix = await _hub(store)
    matrix.levels["users"] = {BOT: 100}
    matrix.fail_kick = TransientError("removing @bob: homeserver unreachable")
    with pytest.raises(TransientError):
        await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    assert _notices(matrix) == []


# --- as before -----------------------------------------------------------------------------------


async def test_with_kick_power_the_user_is_kicked_and_nothing_is_said(store: Store) -> None:
    hub, matrix = await _hub(store)
    matrix.levels["users"] = {BOT: 50}
    await hub.router.submit_remote_event(NET, _kick(), wait=True)
    assert matrix.kicked == [(ROOM, BOB, REASON)]
    assert _notices(matrix) == [] and await _audit(store) == []
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]  # gone: nothing
    assert len(matrix.kicked) == 1


@pytest.mark.parametrize(("levels", "creators", "target", "need"), [
    ({"users": {BOT: 50}}, [], BOB, None),
    ({"users": {BOT: 49}}, [], BOB, 50),
    ({"users": {BOT: 100}, "kick": 0}, [], BOB, None),
    ({"users": {BOT: 50, BOB: 50}}, [], BOB, 51),  # an equal may not be kicked
    ({"users_default": 60, "kick": 10}, [], BOB, 61),
    ({}, [BOT], BOB, None),  # no levels: the creator may
    ({}, [], BOB, 100),
    ({"users": {BOB: 0}}, [BOT], BOB, None),  # room version 12: the creator above all
    ({"users": {BOT: 100}}, [BOB], BOB, CREATOR),
    ({"users": "not a map"}, [], BOB, 100),  # malformed: the homeserver decides
])  # fmt: skip
def test_the_power_the_bot_needs(
    levels: dict[str, Any], creators: list[str], target: str, need: int | None
) -> None:
    assert kick_power_needed(levels, creators, BOT, target) == need
