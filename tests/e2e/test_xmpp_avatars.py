"""Avatars and presence both ways, against a real Synapse and a real XMPP server (Prosody, then
ejabberd): a Matrix user's avatar reaches XMPP clients as a XEP-0153 hash in presence with the
picture in the vCard, and an XMPP user's new avatar (hash in presence, picture in the vCard)
reaches their Matrix ghost, in a DM and as a MUC occupant. Presence goes both ways on a
homeserver with presence on (``presence_hub``), and degrades quietly where it is off."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import time
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, Presence

from tests.e2e.conftest import XMPP_SERVERS, Hub, hub_for
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixRequestError, MatrixUser
from tests.e2e.test_xmpp import _dm, ghost_of, jid_of, muc_alias, muc_occupant, xmpp_account
from tests.e2e.test_xmpp_identity import png
from tests.e2e.xmpp_client import XmppUser
from tests.e2e.xmpp_ghosts import muc_ghost

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
UPDATE = "vcard-temp:x:update"


@pytest.fixture(params=XMPP_SERVERS)
def hub(request: pytest.FixtureRequest) -> Hub:
    """The hub with Prosody, then the hub with ejabberd."""
    return hub_for(request)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def photo_of(presence: Presence) -> str | None:
    return presence.xml.findtext(f"{{{UPDATE}}}x/{{{UPDATE}}}photo")


async def set_matrix_avatar(user: MatrixUser, picture: bytes) -> None:
    mxc = await user.upload(picture, "image/png", "avatar.png")
    await user.request(
        "PUT", f"/_matrix/client/v3/profile/{user.mxid}/avatar_url", {"avatar_url": mxc}
    )


async def publish_avatar(user: XmppUser, picture: bytes, to: str) -> None:
    """What an XMPP client does on a new avatar: the vCard, then presence with its hash
    (here directed to ``to``: a contact, or ``room/nick`` in a MUC)."""
    vcard = user.client.plugin["xep_0054"].make_vcard()
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = picture
    await user.client.plugin["xep_0054"].publish_vcard(vcard)
    presence = user.client.make_presence(pto=JID(to))
    x = ET.SubElement(presence.xml, f"{{{UPDATE}}}x")
    ET.SubElement(x, f"{{{UPDATE}}}photo").text = sha1(picture)
    presence.send()


async def ghost_avatar(viewer: MatrixUser, ghost: str, picture: bytes, timeout: float = 40) -> None:
    """Wait until ``ghost``'s Matrix avatar is exactly ``picture``."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        with contextlib.suppress(MatrixRequestError):  # 404 until the ghost exists
            url = (await viewer.get_profile(ghost)).get("avatar_url")
        if url and await viewer.download(url) == picture:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{ghost} has avatar {url}, not the {len(picture)}-byte picture")


async def test_a_matrix_avatar_reaches_the_xmpp_client(hub: Hub) -> None:
    async with xmpp_account(hub, "avviewer") as xmpp_user:
        alice, _, _, _ = await _dm(hub, xmpp_user)
        alice_jid = jid_of(alice).lower()
        first = png(3, 3)
        await set_matrix_avatar(alice, first)
        # Asked for (a probe, as a client does for its roster): the hash of the picture.
        xmpp_user.client.send_presence(pto=JID(alice_jid), ptype="probe")
        probed = await xmpp_user.wait_for_presence(
            lambda p: p["from"].bare == alice_jid and photo_of(p) == sha1(first), timeout=30
        )
        assert probed["type"] == "available"
        # The client fetches the picture by vCard, as XEP-0153 says, and checks its hash.
        iq = xmpp_user.client.make_iq_get(ito=JID(alice_jid))
        iq.append(ET.Element("{vcard-temp}vCard"))
        result = await iq.send(timeout=15)
        binval = result.xml.findtext("{vcard-temp}vCard/{vcard-temp}PHOTO/{vcard-temp}BINVAL")
        assert sha1(base64.b64decode("".join((binval or "").split()))) == sha1(first)

        # A change in Matrix comes as new presence, unasked.
        second = png(4, 2)
        await set_matrix_avatar(alice, second)
        await xmpp_user.wait_for_presence(
            lambda p: p["from"].bare == alice_jid and photo_of(p) == sha1(second), timeout=40
        )


async def test_an_xmpp_avatar_change_reaches_the_matrix_ghost(hub: Hub) -> None:
    async with xmpp_account(hub, "avsender") as xmpp_user:
        alice, _, _, _ = await _dm(hub, xmpp_user)
        ghost = ghost_of(xmpp_user.jid)
        first, second = png(5, 5), png(6, 2)
        await publish_avatar(xmpp_user, first, jid_of(alice))
        await ghost_avatar(alice, ghost, first)
        await publish_avatar(xmpp_user, second, jid_of(alice))
        await ghost_avatar(alice, ghost, second)


async def test_a_muc_occupants_avatar_reaches_their_ghost(hub: Hub) -> None:
    room = f"faces{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:
        alice = await hub.user("alice")
        room_id = await alice.join(muc_alias(room))
        xena.send_groupchat(room, "Look at me")
        event = await alice.wait_for(lambda e: e.get("content", {}).get("body") == "Look at me",
                                     room_id=room_id)  # fmt: skip
        ghost = muc_ghost(xena, room, "Xena")
        assert event["sender"] == ghost
        picture = png(7, 3)
        await publish_avatar(xena, picture, f"{room}/Xena")
        await ghost_avatar(alice, ghost, picture)


async def _said(viewer: MatrixUser, room_id: str, body: str) -> bool:
    """Whether ``body`` is among the room's last messages, read without syncing."""
    page = await viewer.request(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20"
    )
    return any(e.get("content", {}).get("body") == body for e in page.get("chunk", []))


async def presence_of(viewer: MatrixUser, mxid: str) -> dict[str, object]:
    return dict(await viewer.request("GET", f"/_matrix/client/v3/presence/{mxid}/status"))


async def test_presence_both_ways_where_the_homeserver_keeps_it(presence_hub: Hub) -> None:
    hub = presence_hub
    # A Matrix user whose client does not sync: a syncing client would keep saying "online".
    mxid, token = await hub.synapse.register_user(f"still{next(_names)}", displayname="Still")
    alice = MatrixUser(mxid, token, hub.synapse.base_url)
    try:
        async with xmpp_account(hub, "present") as xmpp_user:
            ghost = ghost_of(xmpp_user.jid)
            room_id = await alice.create_room(invite=[ghost], is_direct=True)
            deadline = time.monotonic() + 40
            while ghost not in await alice.joined_members(room_id):
                assert time.monotonic() < deadline, "the ghost did not join the DM"
                await asyncio.sleep(0.5)
            # A message through first: the bridge keeps presence only of people it has a
            # portal with, and the ghost may join before the portal is stored.
            xmpp_user.send_chat(jid_of(alice), "ready")
            while not await _said(alice, room_id, "ready"):
                assert time.monotonic() < deadline, "the message did not arrive"
                await asyncio.sleep(0.5)

            # XMPP → Matrix: away with a status is "unavailable" on the ghost.
            away = xmpp_user.client.make_presence(pto=JID(jid_of(alice)), pshow="away",
                                                  pstatus="at lunch")  # fmt: skip
            away.send()
            deadline = time.monotonic() + 40
            while (seen := await presence_of(alice, ghost)).get("presence") != "unavailable":
                assert time.monotonic() < deadline, f"ghost presence is {seen}"
                await asyncio.sleep(0.5)
            assert seen.get("status_msg") == "at lunch"

            # Matrix → XMPP: "unavailable" with a status is "away" to the contact.
            await alice.request("PUT", f"/_matrix/client/v3/presence/{mxid}/status",
                                {"presence": "unavailable", "status_msg": "in a meeting"})  # fmt: skip
            alice_jid = jid_of(alice).lower()
            shown = await xmpp_user.wait_for_presence(
                lambda p: p["from"].bare == alice_jid and p["status"] == "in a meeting",
                timeout=40,
            )
            assert shown["show"] == "away"
    finally:
        await alice.close()


async def test_without_presence_on_the_homeserver_one_line_says_so(hub: Hub) -> None:
    line = "The homeserver keeps no presence"

    def logged() -> int:
        return hub.bridge.log_path.read_text(errors="replace").count(line)

    async with xmpp_account(hub, "absent") as xmpp_user:
        alice, _, _, _ = await _dm(hub, xmpp_user)
        before = logged()  # the bridge may have found out already (once per run)
        for show in ("chat", "dnd", "away", "chat"):
            xmpp_user.client.make_presence(pto=JID(jid_of(alice)), pshow=show).send()
        await eventually(lambda: logged() >= 1, "the degrade logged", timeout=40)
        xmpp_user.send_chat(jid_of(alice), "still here")  # everything else works on
        await alice.wait_for(lambda e: e.get("content", {}).get("body") == "still here")
        assert logged() - before <= 1
        assert (await presence_of(alice, ghost_of(xmpp_user.jid))).get("presence") == "offline"


async def test_avatars_both_ways_in_a_room_the_bridge_hosts(hub: Hub) -> None:
    alice = await hub.user("alice")
    nick = alice.mxid[1:].split(":")[0].capitalize()
    localpart = f"gallery{next(_names)}"
    await alice.create_room(preset="public_chat", room_alias_name=localpart)
    muc = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    async with xmpp_account(hub, "painter") as painter:
        await painter.join_muc(muc, "Painter")
        ghost = ghost_of(painter.jid)
        picture = png(2, 7)
        await publish_avatar(painter, picture, f"{muc}/Painter")
        await ghost_avatar(alice, ghost, picture)

        mine = png(8, 1)
        await set_matrix_avatar(alice, mine)
        await painter.wait_for_presence(
            lambda p: p["from"].bare == muc and p["from"].resource == nick
            and photo_of(p) == sha1(mine), timeout=40,
        )  # fmt: skip
