"""An agency's admin manages their agency's portals in the management room, against the real
Synapse: they see and delete their own, and another agency's are not there for them."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.reference_portal import _body, _management_room, _portal

pytestmark = pytest.mark.e2e


async def _ask(hub: Hub, user: MatrixUser, room_id: str, command: str) -> str:
    mark = user.mark()
    await user.send_text(room_id, command)
    reply = await user.wait_for(lambda e: e["sender"] == hub.bot, room_id=room_id, after=mark)
    return _body(reply)


async def test_an_agency_admin_lists_and_deletes_only_their_agencys_portals(hub: Hub) -> None:
    north_staff = await hub.user(localpart="north-staff")
    south_staff = await hub.user(localpart="south-staff")
    north_chat, north_room, _ = await _portal(hub, north_staff, sender="nina")
    south_chat, south_room, _ = await _portal(hub, south_staff, sender="sam")
    north_it = await hub.user(localpart="north-it")
    admin_room = await _management_room(hub, north_it)

    listing = await _ask(hub, north_it, admin_room, "list-portals all")
    assert north_room in listing and north_chat in listing
    assert south_room not in listing and south_chat not in listing

    refused = await _ask(hub, north_it, admin_room, f"delete-portal {south_room}")
    assert refused == f"{south_room} is not bridged."
    assert hub.bridge.query("SELECT count(*) FROM portal WHERE mxid = ?", south_room) == [(1,)]

    mark = north_staff.mark()
    deleted = await _ask(hub, north_it, admin_room, f"delete-portal {north_room}")
    assert deleted.startswith("Deleted the portal of reference")
    await north_staff.wait_for(
        lambda e: e["type"] == "m.room.member" and e["state_key"] == hub.bot
        and e["content"]["membership"] == "leave",
        room_id=north_room, after=mark,
    )  # fmt: skip
    assert hub.bridge.query("SELECT count(*) FROM portal WHERE mxid = ?", north_room) == [(0,)]
    audit = hub.bridge.query(
        "SELECT outcome FROM audit WHERE actor = ? AND action = 'delete-portal' ORDER BY id",
        north_it.mxid,
    )
    assert audit == [("refused",), ("ok",)]
