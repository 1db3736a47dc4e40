"""XEP-0084 avatars (PEP) and removed avatars, against a real Synapse and a real XMPP server
(Prosody, then ejabberd): an XMPP contact subscribed both ways with a Matrix user publishes an
avatar in PEP, and its Matrix ghost shows exactly that picture (the bytes downloaded from
Synapse); the contact disables it (empty metadata) and the ghost's avatar is cleared. A
XEP-0153 ``<photo/>`` (no avatar) clears it too. Someone else who sends the same notification
or presence changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID

from tests.e2e.conftest import XMPP_SERVERS, Hub, hub_for
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixRequestError, MatrixUser
from tests.e2e.test_xmpp import _dm, ghost_of, jid_of, xmpp_account
from tests.e2e.test_xmpp_avatars import UPDATE, ghost_avatar, publish_avatar
from tests.e2e.test_xmpp_identity import png
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e
WAIT = 40.0
EVENT = "http://jabber.org/protocol/pubsub#event"
METADATA = "urn:xmpp:avatar:metadata"


@pytest.fixture(params=XMPP_SERVERS)
def hub(request: pytest.FixtureRequest) -> Hub:
    """The hub with Prosody, then the hub with ejabberd."""
    return hub_for(request)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


async def avatar_url(viewer: MatrixUser, ghost: str) -> str | None:
    with contextlib.suppress(MatrixRequestError):  # 404 until the ghost exists
        return (await viewer.get_profile(ghost)).get("avatar_url") or None
    return None


async def no_avatar(viewer: MatrixUser, ghost: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while (url := await avatar_url(viewer, ghost)) is not None:
        assert time.monotonic() < deadline, f"{ghost} still has avatar {url}"
        await asyncio.sleep(0.5)


async def subscribe_both_ways(user: XmppUser, alice: MatrixUser) -> None:
    """What a client does to add a contact: subscribe; the bridge accepts and asks back, and
    the client accepts (slixmpp's default). Then the user's server sends the Matrix user PEP
    notifications (XEP-0163), as the caps of its presence ask for avatar metadata."""
    contact = JID(jid_of(alice).lower())
    await user.client.get_roster(timeout=10)  # the server pushes roster changes from now on
    user.client.send_presence(pto=contact, ptype="subscribe")
    await eventually(
        lambda: user.client.client_roster[contact]["subscription"] == "both",
        "subscribed both ways",
        timeout=WAIT,
    )


async def publish_pep_avatar(user: XmppUser, picture: bytes) -> None:
    avatar = user.client.plugin["xep_0084"]
    await avatar.publish_avatar(picture, timeout=15)
    info = {"id": sha1(picture), "type": "image/png", "bytes": len(picture)}
    await avatar.publish_avatar_metadata(info, timeout=15)


async def test_a_pep_avatar_reaches_the_ghost_and_its_removal_clears_it(hub: Hub) -> None:
    async with xmpp_account(hub, "pepper") as pepper, xmpp_account(hub, "mallory") as mallory:
        pepper.client.register_plugin("xep_0084")
        alice, _, _, _ = await _dm(hub, pepper)
        ghost = ghost_of(pepper.jid)
        await subscribe_both_ways(pepper, alice)

        picture = png(9, 4)
        # The user's server learns the Matrix user's caps (a disco#info round trip) right
        # after the subscription: published again until the ghost shows it.
        deadline = time.monotonic() + WAIT
        while True:
            await publish_pep_avatar(pepper, picture)
            try:
                await ghost_avatar(alice, ghost, picture, timeout=5)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "no PEP notification reached the bridge"
        shown = await avatar_url(alice, ghost)
        assert shown is not None and sha1(await alice.download(shown)) == sha1(picture)

        # Mallory sends the same "avatar disabled" notification and a "no avatar" presence to
        # Alice, dressed up as Pepper's: her server stamps her own JID, so Pepper's ghost keeps
        # its avatar.
        forged = mallory.client.make_message(mto=JID(jid_of(alice)))
        items = ET.SubElement(ET.SubElement(forged.xml, f"{{{EVENT}}}event"), f"{{{EVENT}}}items",
                              node=METADATA)  # fmt: skip
        item = ET.SubElement(items, f"{{{EVENT}}}item", id="current", publisher=pepper.jid)
        ET.SubElement(item, f"{{{METADATA}}}metadata")
        forged.send()
        presence = mallory.client.make_presence(pto=JID(jid_of(alice)))
        ET.SubElement(ET.SubElement(presence.xml, f"{{{UPDATE}}}x"), f"{{{UPDATE}}}photo")
        presence.send()
        await asyncio.sleep(3)
        assert await avatar_url(alice, ghost) == shown

        # Pepper disables the avatar: an empty metadata item (XEP-0084 §4.2).
        await pepper.client.plugin["xep_0084"].stop(timeout=15)
        await no_avatar(alice, ghost)


async def test_an_empty_photo_in_presence_clears_the_ghosts_avatar(hub: Hub) -> None:
    async with xmpp_account(hub, "nophoto") as user:
        alice, _, _, _ = await _dm(hub, user)
        ghost = ghost_of(user.jid)
        picture = png(3, 8)
        await publish_avatar(user, picture, jid_of(alice))
        await ghost_avatar(alice, ghost, picture)

        # A presence without <photo/> says nothing: the avatar stays.
        plain = user.client.make_presence(pto=JID(jid_of(alice)))
        ET.SubElement(plain.xml, f"{{{UPDATE}}}x")
        plain.send()
        await asyncio.sleep(2)
        assert await avatar_url(alice, ghost) is not None

        for _ in range(3):  # every presence repeats it; the profile changes once
            removed = user.client.make_presence(pto=JID(jid_of(alice)))
            ET.SubElement(ET.SubElement(removed.xml, f"{{{UPDATE}}}x"), f"{{{UPDATE}}}photo")
            removed.send()
        await no_avatar(alice, ghost)
        log = hub.bridge.log_path.read_text(errors="replace")
        assert log.count(f"Avatar of {user.jid} removed") == 1
