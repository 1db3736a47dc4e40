"""Identity without a server: stanzas go into a list instead of onto a stream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ComponentXMPP
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import StanzaBase

from bridge.core import MatrixPresence
from bridge.core.federation import FederationPolicy
from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID
from bridge.xmpp.component import PLUGINS
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.identity import USER_FEATURES, Identity, caps_ver
from bridge.xmpp.ids import dm_key

DOMAIN = "matrix.xmpp.example"
ALICE = "alice\\3ahub.example@" + DOMAIN
XMPP_USER = "juliet@xmpp.example"


class FakeContext:
    log = logging.getLogger("test.identity")

    def __init__(self) -> None:
        self.profiles: dict[str, tuple[str | None, bytes | None, str]] = {}
        self.federation = FederationPolicy(
            [{"network": "xmpp", "remote": ["xmpp.example"], "matrix": ["*"]}], "hub.example"
        )
        self.portals: dict[tuple[str, str], object] = {}
        self.looked_up: list[str] = []

    @property
    def store(self) -> Any:
        return self

    async def get_portal(self, remote_id: str, receiver: str = "") -> object | None:
        return self.portals.get((remote_id, receiver))

    def parse_ghost_mxid(self, mxid: str) -> str | None:
        return GhostNames("hub.example").parse(NetworkID("xmpp"), mxid)

    async def matrix_profile(self, mxid: str) -> tuple[str | None, bytes | None, str]:
        self.looked_up.append(mxid)
        return self.profiles.get(mxid, (None, None, ""))


def make_cfg() -> XmppConfig:
    return XmppConfig(jid=DOMAIN, host="127.0.0.1", port=5347, secret="s",
                      rooms_domain="rooms.xmpp.example", upload_service="", muc_nick="bridge",
                      history_on_join=0, max_file_bytes=1)  # fmt: skip


@pytest.fixture
def setup() -> tuple[Identity, ComponentXMPP, FakeContext, list[StanzaBase]]:
    xmpp = ComponentXMPP(DOMAIN, "s", "127.0.0.1", 5347, fix_error_ns=True)
    for plugin in PLUGINS:
        xmpp.register_plugin(plugin)
    sent: list[StanzaBase] = []
    xmpp.send = lambda stanza, *a, **kw: sent.append(stanza)  # type: ignore[method-assign]
    ctx = FakeContext()
    identity = Identity(xmpp, make_cfg(), ctx)  # type: ignore[arg-type]
    return identity, xmpp, ctx, sent


def test_caps_ver_matches_the_xep_0115_example() -> None:
    features = ("http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc")  # fmt: skip
    assert caps_ver(("client", "pc", "Exodus 0.9.1"), features) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_disco_info(setup: Any) -> None:
    identity, _, _, _ = setup
    domain = identity._disco_info(JID(DOMAIN), "", JID(XMPP_USER), None)
    assert domain["identities"] == {("gateway", "matrix", None, "Matrix")}
    assert "urn:xmpp:receipts" not in domain["features"]  # added to the domain by xep_0184
    user = identity._disco_info(JID(ALICE), "", JID(XMPP_USER), None)
    assert user["identities"] == {("client", "pc", None, "Matrix")}
    assert set(user["features"]) == set(USER_FEATURES)
    for jid in (f"garbage@{DOMAIN}", f"xmpp_romeo=40xmpp.example\\3ahub.example@{DOMAIN}"):
        with pytest.raises(XMPPError) as err:
            identity._disco_info(JID(jid), "", JID(XMPP_USER), None)
        assert err.value.condition == "item-not-found"


async def test_vcard(setup: Any) -> None:
    identity, xmpp, ctx, sent = setup
    ctx.profiles["@alice:hub.example"] = ("Alice", b"\x89PNG-ish", "image/png")
    iq = xmpp.make_iq_get(ito=JID(ALICE), ifrom=JID(XMPP_USER))
    iq.append(ET.Element("{vcard-temp}vCard"))
    await identity._vcard(iq)
    vcard = sent[-1].xml.find("{vcard-temp}vCard")
    assert sent[-1]["type"] == "result" and sent[-1]["from"] == JID(ALICE)
    assert vcard.findtext("{vcard-temp}FN") == "Alice"
    assert base64.b64decode(vcard.findtext("{vcard-temp}PHOTO/{vcard-temp}BINVAL")) == (
        b"\x89PNG-ish"
    )
    iq["to"] = JID(f"bob\\3ahub.example@{DOMAIN}")  # no profile
    with pytest.raises(XMPPError) as err:
        await identity._vcard(iq)
    assert err.value.condition == "item-not-found"


def test_gateway_mapping(setup: Any) -> None:
    identity, _, _, _ = setup
    assert identity._jid_for("@alice:hub.example") == ALICE
    assert identity._jid_for("alice:hub.example") == ALICE
    assert identity._jid_for("@xmpp_romeo=40xmpp.example:hub.example") == "romeo@xmpp.example"
    for typed in ("", "alice", "@alice", "@alice:bad server"):
        with pytest.raises(XMPPError) as err:
            identity._jid_for(typed)
        assert err.value.condition == "bad-request"
        assert "@alice:example.org" in err.value.text


def _presence(xmpp: ComponentXMPP, ptype: str, to: str = ALICE) -> Any:
    # The stream was made outside this test's loop (a sync fixture): slixmpp took whatever
    # loop asyncio last had, where its handler tasks would never run.
    xmpp.loop = asyncio.get_running_loop()
    return xmpp.make_presence(pto=JID(to), pfrom=JID(f"{XMPP_USER}/phone"), ptype=ptype)


@pytest.mark.parametrize(
    ("ptype", "answers"),
    [("probe", [None]), ("subscribe", ["subscribed", None]),
     ("unsubscribe", ["unsubscribed", "unavailable"])],
)  # fmt: skip
async def test_presence_answers_once_and_only_from_the_matrix_user(
    setup: Any, ptype: str, answers: list[str | None]
) -> None:
    _, xmpp, _, sent = setup
    xmpp._handle_presence(_presence(xmpp, ptype))  # the path a stanza takes, default handlers too
    await _settle()
    assert [p.xml.get("type") for p in sent] == answers
    assert {str(p["from"]) for p in sent} == {ALICE}


async def _settle() -> None:
    """Let the presence handlers (coroutines: they check the policy and look the avatar up
    first) run to their end, however loaded the machine."""
    current = asyncio.current_task()
    for _ in range(200):
        await asyncio.sleep(0.005)
        if not [t for t in asyncio.all_tasks() if t is not current and "handler" in repr(t)]:
            return


async def test_presence_carries_the_avatar_hash(setup: Any) -> None:
    """XEP-0153: the sha-1 of the picture the vCard shows; an empty photo for no avatar."""
    _, xmpp, ctx, sent = setup
    ctx.profiles["@alice:hub.example"] = ("Alice", b"\x89PNG-ish", "image/png")
    xmpp._handle_presence(_presence(xmpp, "probe"))
    await _settle()
    photo = sent[-1].xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
    assert photo is not None and photo.text == hashlib.sha1(b"\x89PNG-ish").hexdigest()
    bob = f"bob\\3ahub.example@{DOMAIN}"
    xmpp._handle_presence(_presence(xmpp, "probe", bob))
    await _settle()
    photo = sent[-1].xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
    assert str(sent[-1]["from"]) == bob and photo is not None and not photo.text


async def test_presence_to_a_non_user(setup: Any) -> None:
    _, xmpp, _, sent = setup
    xmpp._handle_presence(_presence(xmpp, "probe", f"garbage@{DOMAIN}"))
    await _settle()
    assert sent == []
    xmpp._handle_presence(_presence(xmpp, "subscribe", f"garbage@{DOMAIN}"))
    await _settle()
    assert [(p["type"], str(p["from"])) for p in sent] == [("unsubscribed", f"garbage@{DOMAIN}")]


# --- who sees a Matrix user's presence (the hostile cases first) --------------------------------


def _probe(xmpp: ComponentXMPP, frm: str, to: str = ALICE) -> Any:
    return xmpp.make_presence(pto=JID(to), pfrom=JID(frm), ptype="probe")


async def test_strangers_see_neither_show_nor_status_and_refused_domains_nothing(
    setup: Any,
) -> None:
    identity, xmpp, ctx, sent = setup
    identity.states.changed(MatrixPresence(sender="@alice:hub.example", presence="unavailable",
                                           status="on sick leave until Monday"))  # fmt: skip
    await identity._probe(_probe(xmpp, "mallory@refused.example/x"))
    await identity._subscribe(xmpp.make_presence(pto=JID(ALICE), pfrom=JID("m@refused.example"),
                                                 ptype="subscribe"))  # fmt: skip
    assert [p["type"] for p in sent] == ["unsubscribed"]  # refused: not even an answer
    sent.clear()
    await identity._probe(_probe(xmpp, "stranger@xmpp.example/x"))
    [plain] = sent
    assert plain["type"] == "available" and not plain["status"] and not plain["show"]
    sent.clear()
    key = dm_key(XMPP_USER, "@alice:hub.example")
    ctx.portals[(key.remote_id, key.receiver)] = object()  # Juliet has a DM with Alice
    await identity._probe(_probe(xmpp, f"{XMPP_USER}/phone"))
    [detailed] = sent
    assert detailed["status"] == "on sick leave until Monday" and detailed["show"] == "away"


async def test_probes_and_vcards_of_other_servers_users_look_nothing_up(setup: Any) -> None:
    identity, xmpp, ctx, sent = setup
    invented = f"victim\\3aother.example@{DOMAIN}"
    await identity._probe(_probe(xmpp, "stranger@xmpp.example/x", invented))
    iq = xmpp.make_iq_get(ito=JID(invented), ifrom=JID("stranger@xmpp.example/x"))
    iq.append(ET.Element("{vcard-temp}vCard"))
    await identity._vcard(iq)
    assert ctx.looked_up == []
    assert sent[-1].xml.find("{vcard-temp}vCard").findtext("{vcard-temp}FN") == (
        "@victim:other.example"
    )
