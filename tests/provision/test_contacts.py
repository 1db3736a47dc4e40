"""Contacts of a portal through the provisioning API (``/portals/{room_id}/contacts``), as
``email contacts <room> …`` does in the management room. Refusals first: a user not in the room,
another agency's admin, a room that is not bridged, a network without contacts, malformed ids;
each with its JSON error and nothing changed. Real store (SQLite and PostgreSQL), real HTTP."""

from __future__ import annotations

from urllib.parse import quote

from tests.provision.calls import call, refused
from tests.provision.harness import (
    ADMIN,
    ALICE,
    ALICE_ROOM,
    BOB,
    BOB_IT,
    BOB_PORTAL_ROOM,
    PORTAL_ROOM,
    STRANGER,
    ApiServer,
)

DANA = "dana@elsewhere.test"


def _path(room: str, contact: str | None = None) -> str:
    path = f"/portals/{quote(room, safe='')}/contacts"
    return path if contact is None else f"{path}/{quote(contact, safe='')}"


def test_someone_not_in_the_room_can_neither_see_nor_change_its_contacts(api: ApiServer) -> None:
    assert call(api, "PUT", _path(BOB_PORTAL_ROOM, DANA), user=BOB).status_code == 200
    before = api.snapshot()
    for method, path in (("GET", _path(BOB_PORTAL_ROOM)), ("PUT", _path(BOB_PORTAL_ROOM, DANA)),
                         ("DELETE", _path(BOB_PORTAL_ROOM, DANA))):  # fmt: skip
        # The same answer as for a room that is no portal: which rooms are does not leak.
        assert refused(call(api, method, path, user=ALICE), 404, "M_NOT_FOUND") == refused(
            call(api, method, path.replace(quote(BOB_PORTAL_ROOM, safe=""),
                                           quote(ALICE_ROOM, safe="")), user=ALICE),
            404,
            "M_NOT_FOUND",
        )  # fmt: skip
        # Someone the bridge does not serve at all is refused before any room is looked up.
        refused(call(api, method, path, user=STRANGER), 403, "M_FORBIDDEN")
    assert api.snapshot() == before


def test_another_agencys_admin_is_refused_and_its_own_admin_is_not(api: ApiServer) -> None:
    before = api.snapshot()
    # Bob's agency admin is not in Alice's portal, which is not Bob's agency's.
    for method, path in (("GET", _path(PORTAL_ROOM)), ("PUT", _path(PORTAL_ROOM, DANA)),
                         ("DELETE", _path(PORTAL_ROOM, DANA))):  # fmt: skip
        refused(call(api, method, path, user=BOB_IT), 404, "M_NOT_FOUND")
    assert api.snapshot() == before
    # Bob's portal is his agency's: its admin manages it without being in the room.
    assert call(api, "PUT", _path(BOB_PORTAL_ROOM, DANA), user=BOB_IT).status_code == 200
    listed = call(api, "GET", _path(BOB_PORTAL_ROOM), user=BOB).json()
    assert listed == {"contacts": [{"id": DANA, "stopped": None}]}


def test_rooms_that_are_not_portals_and_bad_ids_change_nothing(api: ApiServer) -> None:
    before = api.snapshot()
    refused(call(api, "GET", _path(ALICE_ROOM)), 404, "M_NOT_FOUND")  # bridged: no
    refused(call(api, "PUT", _path(ALICE_ROOM, DANA)), 404, "M_NOT_FOUND")
    refused(call(api, "GET", "/portals/not-a-room/contacts"), 400, "M_INVALID_PARAM")
    refused(call(api, "PUT", _path(PORTAL_ROOM, "no-at-sign")), 400, "M_INVALID_PARAM")
    refused(call(api, "PUT", _path(PORTAL_ROOM, "x" * 400 + "@a.test")), 400, "M_INVALID_PARAM")
    refused(call(api, "PUT", _path(PORTAL_ROOM, "nul\x00@a.test")), 400, "M_INVALID_PARAM")
    refused(call(api, "DELETE", _path(PORTAL_ROOM, DANA)), 404, "M_NOT_FOUND")  # not one
    assert api.snapshot() == before


def test_a_member_adds_lists_and_removes_contacts(api: ApiServer) -> None:
    assert call(api, "GET", _path(PORTAL_ROOM)).json() == {"contacts": []}
    added = call(api, "PUT", _path(PORTAL_ROOM, DANA))
    assert added.status_code == 200 and added.json() == {"id": DANA, "stopped": None}
    assert call(api, "PUT", _path(PORTAL_ROOM, DANA)).status_code == 200  # idempotent
    admin_view = call(api, "GET", _path(PORTAL_ROOM), user=ADMIN).json()
    assert admin_view == {"contacts": [{"id": DANA, "stopped": None}]}
    removed = call(api, "DELETE", _path(PORTAL_ROOM, DANA))
    assert removed.json() == {"id": DANA, "removed": True}
    assert call(api, "GET", _path(PORTAL_ROOM)).json() == {"contacts": []}
    rows = api.run(api.store.database.fetch("SELECT actor, action, detail FROM audit"))
    assert {(r["actor"], r["action"], r["detail"]) for r in rows} >= {
        (ALICE, "add-contact", DANA),
        (ALICE, "remove-contact", DANA),
    }
