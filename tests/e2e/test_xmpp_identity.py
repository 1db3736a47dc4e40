"""Matrix users as XMPP entities: disco#info, vCard, presence, XEP-0100 and ping.

Real Prosody, real Synapse, real bridge: an XMPP user queries the JIDs the component serves.
"""

from __future__ import annotations

import base64
import itertools
import struct
import zlib
from collections.abc import AsyncIterator
from xml.etree import ElementTree as ET

import pytest
import pytest_asyncio
from slixmpp import JID, Iq
from slixmpp.exceptions import IqError

from tests.e2e.conftest import DOMAIN, XMPP_COMPONENT, Hub
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e
_names = itertools.count(1)

VCARD = "{vcard-temp}vCard"
GATEWAY = "jabber:iq:gateway"
DM_FEATURES = {
    "urn:xmpp:message-correct:0",
    "urn:xmpp:message-retract:1",
    "urn:xmpp:reactions:0",
    "urn:xmpp:reply:0",
    "urn:xmpp:chat-markers:0",
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:sid:0",
    "jabber:x:oob",
    "vcard-temp",
}


def jid_of(mxid: str) -> str:
    local, server = mxid[1:].split(":", 1)
    return f"{local}\\3a{server}@{XMPP_COMPONENT}"


def png(width: int = 2, height: int = 2) -> bytes:
    """A valid RGB PNG, so the bridge sniffs ``image/png``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest_asyncio.fixture
async def xmpp_user(hub: Hub) -> AsyncIterator[XmppUser]:
    jid = hub.prosody.register(f"identity{next(_names)}")
    user = XmppUser(jid, "pw", hub.prosody.c2s_port)
    await user.connect()
    yield user
    await user.close()


async def disco_info(user: XmppUser, jid: str) -> tuple[set[tuple[str, str]], set[str]]:
    """((category, type) of each identity, features) of ``jid``."""
    iq = await user.client.plugin["xep_0030"].get_info(jid=JID(jid), cached=False, timeout=10)
    info = iq["disco_info"]
    return {(i[0], i[1]) for i in info["identities"]}, set(info["features"])


async def get(user: XmppUser, jid: str, payload: ET.Element) -> Iq:
    iq = user.client.make_iq_get(ito=JID(jid))
    iq.append(payload)
    result: Iq = await iq.send(timeout=10)
    return result


async def gateway_set(user: XmppUser, typed: str) -> Iq:
    query = ET.Element(f"{{{GATEWAY}}}query")
    ET.SubElement(query, f"{{{GATEWAY}}}prompt").text = typed
    result: Iq = await user.client.make_iq_set(query, ito=JID(XMPP_COMPONENT)).send(timeout=10)
    return result


async def error_of(request: object) -> tuple[str, str]:
    with pytest.raises(IqError) as caught:
        await request  # type: ignore[misc]
    error = caught.value.iq["error"]
    return str(error["condition"]), str(error["text"])


async def test_disco_info_of_the_gateway_and_of_a_matrix_user(
    hub: Hub, xmpp_user: XmppUser
) -> None:
    identities, features = await disco_info(xmpp_user, XMPP_COMPONENT)
    assert ("gateway", "matrix") in identities
    assert {
        GATEWAY,
        "http://jabber.org/protocol/disco#info",
        "vcard-temp",
        "urn:xmpp:ping",
    } <= features

    alice = await hub.user("idalice")
    identities, features = await disco_info(xmpp_user, jid_of(alice.mxid))
    assert identities == {("client", "pc")}
    assert features >= DM_FEATURES
    assert "urn:xmpp:receipts" in features  # answered once the message is stored for Matrix


async def test_disco_and_vcard_of_a_jid_that_is_no_matrix_user(
    hub: Hub, xmpp_user: XmppUser
) -> None:
    garbage = f"not-a-matrix-id@{XMPP_COMPONENT}"
    condition, _ = await error_of(
        xmpp_user.client.plugin["xep_0030"].get_info(jid=JID(garbage), cached=False, timeout=10)
    )
    assert condition == "item-not-found"
    condition, _ = await error_of(get(xmpp_user, garbage, ET.Element(VCARD)))
    assert condition == "item-not-found"
    # A well-formed Matrix id that Synapse does not know has no profile either.
    condition, text = await error_of(get(xmpp_user, jid_of(f"@nobody:{DOMAIN}"), ET.Element(VCARD)))
    assert condition == "item-not-found", text


async def test_vcard_has_display_name_and_exact_avatar(hub: Hub, xmpp_user: XmppUser) -> None:
    alice: MatrixUser = await hub.user("idvcard")
    await alice.set_displayname("Alice Liddell")
    avatar = png()
    mxc = await alice.upload(avatar, "image/png", "avatar.png")
    await alice.request(
        "PUT", f"/_matrix/client/v3/profile/{alice.mxid}/avatar_url", {"avatar_url": mxc}
    )

    result = await get(xmpp_user, jid_of(alice.mxid), ET.Element(VCARD))
    vcard = result.xml.find(VCARD)
    assert vcard is not None, result
    assert vcard.findtext("{vcard-temp}FN") == "Alice Liddell"
    assert vcard.findtext("{vcard-temp}NICKNAME") == "Alice Liddell"
    assert vcard.findtext("{vcard-temp}PHOTO/{vcard-temp}TYPE") == "image/png"
    binval = vcard.findtext("{vcard-temp}PHOTO/{vcard-temp}BINVAL") or ""
    assert base64.b64decode("".join(binval.split())) == avatar


async def test_probe_and_subscription_are_answered(hub: Hub, xmpp_user: XmppUser) -> None:
    alice = await hub.user("idpresence")
    alice_jid = jid_of(alice.mxid).lower()

    xmpp_user.client.send_presence(pto=JID(alice_jid), ptype="probe")
    probed = await xmpp_user.wait_for_presence(
        lambda p: p["from"].bare == alice_jid and p["type"] == "available"
    )
    assert probed["to"].bare == xmpp_user.jid

    # Prosody hands subscription answers only to "interested" resources: those that fetched
    # the roster, as real clients do at login.
    await xmpp_user.client.get_roster(timeout=10)
    xmpp_user.presences.clear()
    xmpp_user.client.send_presence(pto=JID(alice_jid), ptype="subscribe")
    await xmpp_user.wait_for_presence(
        lambda p: p["from"].bare == alice_jid and p["type"] == "subscribed"
    )
    await xmpp_user.wait_for_presence(
        lambda p: p["from"].bare == alice_jid and p["type"] == "available"
    )

    roster = xmpp_user.client.client_roster
    assert roster[JID(alice_jid)]["subscription"] in ("to", "both")

    xmpp_user.client.send_presence(pto=JID(alice_jid), ptype="unsubscribe")
    # The bridge also answers "unsubscribed", but Prosody rightly drops that once the
    # subscription is gone; what the client sees is the contact going offline.
    await xmpp_user.wait_for_presence(
        lambda p: p["from"].bare == alice_jid and p["type"] == "unavailable"
    )


async def test_gateway_turns_a_matrix_id_into_a_jid(hub: Hub, xmpp_user: XmppUser) -> None:
    prompt = await get(xmpp_user, XMPP_COMPONENT, ET.Element(f"{{{GATEWAY}}}query"))
    assert "Matrix ID" in (prompt.xml.findtext(f"{{{GATEWAY}}}query/{{{GATEWAY}}}desc") or "")
    assert prompt.xml.findtext(f"{{{GATEWAY}}}query/{{{GATEWAY}}}prompt") == "Matrix ID"

    answer = await gateway_set(xmpp_user, f"@alice:{DOMAIN}")
    assert answer.xml.findtext(f"{{{GATEWAY}}}query/{{{GATEWAY}}}jid") == jid_of(f"@alice:{DOMAIN}")

    lenient = await gateway_set(xmpp_user, f"alice:{DOMAIN}")  # the "@" is often forgotten
    assert lenient.xml.findtext(f"{{{GATEWAY}}}query/{{{GATEWAY}}}jid") == jid_of(
        f"@alice:{DOMAIN}"
    )
    # The Matrix ghost of an XMPP user leads back to that user's own JID.
    ghost = await gateway_set(xmpp_user, f"@xmpp_bob=40xmpp.test:{DOMAIN}")
    assert ghost.xml.findtext(f"{{{GATEWAY}}}query/{{{GATEWAY}}}jid") == "bob@xmpp.test"

    condition, text = await error_of(gateway_set(xmpp_user, "alice at example dot org"))
    assert condition == "bad-request"
    assert "@alice:example.org" in text


async def test_ping_to_gateway_and_matrix_user(hub: Hub, xmpp_user: XmppUser) -> None:
    for jid in (XMPP_COMPONENT, jid_of(f"@alice:{DOMAIN}")):
        result = await get(xmpp_user, jid, ET.Element("{urn:xmpp:ping}ping"))
        assert result["type"] == "result"
