"""Several XMPP domains in one hub (issue #14): two agencies, each with its own Prosody and its
own component, bridged by one Pontis to one Synapse. Stopping one agency's server leaves the
other bridging both ways; the stopped one comes back by itself, without a reconnect storm.
``/_pontis/health`` and the metrics show each component on its own, with why one is down."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from ruamel.yaml import YAML

from tests.e2e.conftest import DOMAIN, XMPP_SECRET
from tests.e2e.hub import BridgeProcess, eventually, write_bridge_config
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.process import free_port
from tests.e2e.prosody import ProsodyServer
from tests.e2e.synapse import SynapseServer
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
ANNEX = "annex.b.test"
"""A domain of agency A's server that the hub reaches through agency B's component."""
DOWN = "Cannot reach the XMPP server of component matrix.b.test"


@dataclass
class Agency:
    server: ProsodyServer
    component: str
    rooms: str


@dataclass
class TwoDomainHub:
    synapse: SynapseServer
    bridge: BridgeProcess
    a: Agency
    b: Agency
    workdir: Path
    metrics_port: int
    users: list[MatrixUser]

    async def user(self, prefix: str) -> MatrixUser:
        name = f"{prefix}{next(_names)}"
        mxid, token = await self.synapse.register_user(name, displayname=name.capitalize())
        user = MatrixUser(mxid, token, self.synapse.base_url)
        await user.start_sync()
        self.users.append(user)
        return user


def _agency(workdir: Path, name: str, extra: tuple[str, ...] = ()) -> Agency:
    component, rooms = f"matrix.{name}.test", f"rooms.{name}.test"
    server = ProsodyServer(
        workdir / name, domain=f"{name}.test", muc_domain=f"muc.{name}.test",
        upload_domain=f"upload.{name}.test",
        components={component: XMPP_SECRET, rooms: XMPP_SECRET}, extra_domains=extra,
    )  # fmt: skip
    return Agency(server, component, rooms)


def _xmpp_section(a: Agency, b: Agency) -> dict[str, Any]:
    """Agency A's component as the default (the single ``component:`` form operators have
    today), agency B's as a further one that serves B's own domains and ``ANNEX``."""
    return {
        "enabled": True,
        "component": {"jid": a.component, "host": "127.0.0.1",
                      "port": a.server.component_port, "secret": XMPP_SECRET},
        "rooms_domain": a.rooms,
        "upload_service": a.server.upload_domain,
        "fetch_allow_private": [f"127.0.0.1:{a.server.http_port}",
                                f"127.0.0.1:{b.server.http_port}"],
        "history_on_join": 5,
        "components": [{
            "jid": b.component, "host": "127.0.0.1", "port": b.server.component_port,
            "secret": XMPP_SECRET, "rooms_domain": b.rooms,
            "upload_service": b.server.upload_domain,
            "domains": [b.server.domain, b.server.muc_domain, ANNEX],
        }],
    }  # fmt: skip


@pytest_asyncio.fixture(scope="module")
async def two(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TwoDomainHub]:
    workdir = tmp_path_factory.mktemp("domains")
    a = _agency(workdir, "a", extra=(ANNEX,))
    b = _agency(workdir, "b")
    site_dir = workdir / "site"
    site_dir.mkdir()
    as_port, metrics_port = free_port(), free_port()
    config_path = workdir / "config.yaml"
    bridge = BridgeProcess(workdir, config_path, site_dir, env={})
    synapse = SynapseServer(DOMAIN, workdir / "synapse", [workdir / "registration.yaml"])
    remotes = [a.server.domain, b.server.domain, ANNEX, a.rooms, b.rooms]
    try:
        await a.server.start()
        await b.server.start()
        write_bridge_config(
            config_path, domain=DOMAIN, as_port=as_port, metrics_port=metrics_port,
            connectors={"xmpp": _xmpp_section(a, b)},
            bridge={
                "permissions": {DOMAIN: "user"},
                "retry": {"attempts": 6, "backoff_seconds": 0.5},
                "federation": [
                    {"network": "xmpp", "remote": remotes, "matrix": ["local"]},
                    {"network": "xmpp", "remote": [a.server.muc_domain, b.server.muc_domain],
                     "matrix": ["*"]},
                ],
                "portals": {"public": True},
            },
            log_level="DEBUG",
        )  # fmt: skip
        await bridge.register_and_start(synapse, as_port)
    except BaseException:
        bridge.stop()
        await synapse.stop()
        await a.server.stop()
        await b.server.stop()
        raise
    hub = TwoDomainHub(synapse, bridge, a, b, workdir, metrics_port, [])
    try:
        yield hub
    finally:
        for user in hub.users:
            await user.close()
        bridge.stop()
        await synapse.stop()
        await a.server.stop()
        await b.server.stop()


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def jid_on(user: MatrixUser, component: str) -> str:
    local, server = user.mxid[1:].split(":", 1)
    return f"{local}\\3a{server}@{component}"


@contextlib.asynccontextmanager
async def account(
    server: ProsodyServer, name: str, domain: str | None = None
) -> AsyncIterator[XmppUser]:
    jid = server.register(f"{name}{next(_names)}", domain=domain)
    user = XmppUser(jid, "pw", server.c2s_port)
    await user.connect()
    try:
        yield user
    finally:
        await user.close()


async def _dm_both_ways(alice: MatrixUser, xmpp: XmppUser, component: str, text: str,
                        room_id: str | None = None) -> str:  # fmt: skip
    """``xmpp`` writes to ``alice`` through ``component`` and she answers; returns the room."""
    mark = alice.mark()
    xmpp.send_chat(jid_on(alice, component), f"{text} from XMPP")
    if room_id is None:
        room_id = await alice.wait_for_invite(timeout=30)
        await alice.join(room_id)
    await alice.wait_for(lambda e: _body(e) == f"{text} from XMPP", timeout=30, room_id=room_id,
                         after=mark)  # fmt: skip
    await alice.send_text(room_id, f"{text} from Matrix")
    got = await xmpp.wait_for_message(lambda m: m["body"] == f"{text} from Matrix", timeout=30)
    assert got["from"].bare == jid_on(alice, component).lower()  # the component she was reached on
    return room_id


async def _connected(hub: TwoDomainHub) -> dict[str, float]:
    """``pontis_client_connected`` of each XMPP login (a component, or "shared")."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{hub.metrics_port}/metrics") as resp,
    ):
        text = await resp.text()
    found = re.findall(r'pontis_client_connected\{login="([^"]+)",network="xmpp"\} (\S+)', text)
    return {login: float(value) for login, value in found}


async def _metrics(hub: TwoDomainHub) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{hub.metrics_port}/metrics") as resp,
    ):
        return await resp.text()


def _component_gauges(metrics: str) -> dict[tuple[str, str], float]:
    """``pontis_xmpp_component_connected`` by (domain, serves)."""
    found = re.findall(
        r'pontis_xmpp_component_connected\{domain="([^"]+)",serves="([^"]+)"\} (\S+)', metrics
    )
    return {(domain, serves): float(value) for domain, serves, value in found}


async def _components(hub: TwoDomainHub) -> dict[str, dict[str, Any]]:
    """What ``/_pontis/health`` says of each component stream, by domain."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{hub.bridge.port}/_pontis/health") as resp,
    ):
        body = await resp.json()
    return {c["domain"]: c for c in body["client_details"]["xmpp/shared"]["components"]}


async def _components_until(
    hub: TwoDomainHub, check: Callable[[dict[str, dict[str, Any]]], bool], what: str
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 60
    while not check(components := await _components(hub)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {components}")
        await asyncio.sleep(0.2)
    return components


async def test_each_agency_bridges_through_its_own_component(two: TwoDomainHub) -> None:
    alice = await two.user("alice")
    async with account(two.a.server, "ann") as ann, account(two.b.server, "bert") as bert:
        await _dm_both_ways(alice, ann, two.a.component, "Agency A")
        await _dm_both_ways(alice, bert, two.b.component, "Agency B")
        # A DM started from Matrix goes out through the partner's agency's component.
        carol = await two.user("carol")
        ghost = f"@xmpp_{bert.jid.replace('@', '=40')}:{DOMAIN}"
        room_id = await carol.create_room(invite=[ghost], is_direct=True)
        await carol.wait_for(lambda e: e["type"] == "m.room.member" and e["state_key"] == ghost
                             and e["content"]["membership"] == "join", timeout=30,
                             room_id=room_id)  # fmt: skip
        await carol.send_text(room_id, "Started in Matrix")
        got = await bert.wait_for_message(lambda m: m["body"] == "Started in Matrix", timeout=30)
        assert got["from"].bare == jid_on(carol, two.b.component).lower()


async def test_a_muc_of_each_agency_is_bridged_through_its_component(two: TwoDomainHub) -> None:
    alice = await two.user("alice")
    for agency in (two.a, two.b):
        await _muc_both_ways(alice, agency)


async def _muc_both_ways(alice: MatrixUser, agency: Agency, room: str = "") -> str:
    """Someone in a MUC of ``agency`` and ``alice`` in its portal talk; returns the room."""
    nick = alice.mxid[1:].split(":")[0].capitalize()
    room = room or f"club{next(_names)}@{agency.server.muc_domain}"
    question, answer = f"Anyone on {agency.component}?", f"Yes, on {agency.component}"
    async with account(agency.server, "xena") as xena:
        await xena.join_muc(room, "Xena")
        room_id = await alice.join(f"#xmpp_{room.replace('@', '=40')}:{DOMAIN}")
        xena.send_groupchat(room, question)
        await alice.wait_for(lambda e: _body(e) == question, timeout=30, room_id=room_id)
        await alice.send_text(room_id, answer)
        await xena.wait_for_message(
            lambda m: m["type"] == "groupchat" and m["from"].resource == nick
            and m["body"] == answer, timeout=30,
        )  # fmt: skip
    return room


async def test_a_matrix_room_is_offered_on_agency_b_s_rooms_domain(two: TwoDomainHub) -> None:
    alice = await two.user("alice")
    localpart = f"lobby{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    muc = f"{localpart}\\3a{DOMAIN}@{two.b.rooms}"
    async with account(two.b.server, "xeno") as xeno:
        await xeno.join_muc(muc, "Xeno")
        xeno.send_groupchat(muc, "Hello Matrix room")
        await alice.wait_for(lambda e: _body(e) == "Hello Matrix room", timeout=30, room_id=room_id)
        await alice.send_text(room_id, "Welcome, Xeno")
        got = await xeno.wait_for_message(lambda m: m["body"] == "Welcome, Xeno", timeout=30)
        assert got["from"].bare == muc and got["type"] == "groupchat"


async def test_a_message_through_the_wrong_component_is_refused_with_the_right_address(
    two: TwoDomainHub,
) -> None:
    """Hostile: someone on a domain agency B's component serves writes through agency A's.
    Nothing reaches Matrix; the sender is told where to write."""
    alice = await two.user("alice")
    async with account(two.a.server, "mallory", domain=ANNEX) as mallory:
        mallory.send_chat(jid_on(alice, two.a.component), "through the wrong door")
        error = await mallory.wait_for_message(lambda m: m["type"] == "error", timeout=30)
    assert error["error"]["condition"] == "not-allowed"
    assert jid_on(alice, two.b.component) in error["error"]["text"]
    assert not alice.seen(lambda e: _body(e) == "through the wrong door")


def test_check_reports_a_duplicate_domain_by_its_key(two: TwoDomainHub) -> None:
    config = YAML().load(two.bridge.config_path)
    xmpp = config["connectors"]["xmpp"]
    xmpp["components"][0]["domains"] = [two.a.server.domain]
    xmpp["components"].append(dict(xmpp["components"][0]) | {"jid": two.a.component})
    broken = two.workdir / "broken.yaml"
    with broken.open("w") as f:
        YAML().dump(config, f)
    checker = BridgeProcess(two.workdir, broken, two.bridge.site_dir, env=two.bridge.env)
    result = checker.cli("check", "-r", str(two.workdir / "registration.yaml"))
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "connectors.xmpp.components[1].jid: matrix.a.test is already given at " \
           "connectors.xmpp.component.jid" in out  # fmt: skip
    assert "connectors.xmpp.components[1].domains[0]: a.test is already given at " \
           "connectors.xmpp.components[0].domains[0]" in out  # fmt: skip


async def test_one_agency_down_leaves_the_other_bridging_and_comes_back(two: TwoDomainHub) -> None:
    alice = await two.user("alice")
    async with account(two.a.server, "ann") as ann:
        a_room = await _dm_both_ways(alice, ann, two.a.component, "Before")
        async with account(two.b.server, "bert") as bert:
            b_room = await _dm_both_ways(alice, bert, two.b.component, "Before B")
            bert_jid = bert.jid
        a_muc = await _muc_both_ways(alice, two.a)
        b_muc = await _muc_both_ways(alice, two.b)
        log_before = len(two.bridge.log_path.read_text(errors="replace"))

        await two.b.server.stop()
        # Agency A goes on, both ways, while B's server is away.
        await _dm_both_ways(alice, ann, two.a.component, "During", a_room)
        await eventually(lambda: DOWN in two.bridge.log_path.read_text(errors="replace"),
                         "the bridge noticing agency B is away", timeout=30)  # fmt: skip
        states = await _connected(two)
        assert states[two.a.component] == 1 and states[two.b.component] == 0
        assert states["shared"] == 0  # the shared client says one component is down
        # Health names the component that is down, why, and when it tries next.
        components = await _components(two)
        assert components[two.a.component]["connected"] is True
        b = components[two.b.component]
        assert b["connected"] is False and "cannot connect to 127.0.0.1:" in b["error"]
        # pontis check names the component that is down.
        result = two.bridge.cli("check", "-r", str(two.workdir / "registration.yaml"))
        out = result.stdout + result.stderr
        assert f"connectors.xmpp.components[0].jid: {two.b.component}: cannot connect" in out
        # Agency A's server answers (it only says the running bridge holds the component).
        assert f"connectors.xmpp.component: {two.a.component}: another process" in out
        # Twenty seconds away: a handful of attempts, not a storm.
        await asyncio.sleep(20)
        attempts = two.bridge.log_path.read_text(errors="replace")[log_before:].count(DOWN)
        assert 2 <= attempts <= 10, attempts

        await two.b.server.start()
        await eventually(
            lambda: "Component matrix.b.test is connected"
            in two.bridge.log_path.read_text(errors="replace")[log_before:],
            "agency B's component back", timeout=30,
        )  # fmt: skip
        bert = XmppUser(bert_jid, "pw", two.b.server.c2s_port)
        await bert.connect()
        try:
            await _dm_both_ways(alice, bert, two.b.component, "After B", b_room)
        finally:
            await bert.close()
        await _dm_both_ways(alice, ann, two.a.component, "After", a_room)
        # Each MUC is back through its own component: B's rejoined through B once it was back
        # (the room was gone with the server's memory), A's never left.
        await _muc_both_ways(alice, two.b, b_muc)
        await _muc_both_ways(alice, two.a, a_muc)
        log = two.bridge.log_path.read_text(errors="replace")[log_before:]
        assert "Could not rejoin" not in log
    assert (await _connected(two))["shared"] == 1


async def test_a_component_its_server_refuses_shows_why_and_the_other_bridges(
    two: TwoDomainHub,
) -> None:
    """Hostile config: agency B's server is changed to expect another secret for B's component.
    Health and the metrics show B's component down with the server's reason and its next
    attempt, A's up, and A goes on bridging; the secret shows nowhere. Once both sides agree
    again, B's component is back by itself."""
    alice = await two.user("alice")
    log_before = len(two.bridge.log_path.read_text(errors="replace"))
    await two.b.server.stop()
    two.b.server.components[two.b.component] = "what-agency-b-s-server-expects-now"
    try:
        await two.b.server.start()
        components = await _components_until(
            two, lambda c: "not-authorized" in c[two.b.component].get("error", ""),
            "agency B's server refusing the component",
        )  # fmt: skip
        b = components[two.b.component]
        assert b["connected"] is False and b["serves"] == "users"
        assert b["error"].startswith("refused by the server: stream error not-authorized")
        assert b["failed_attempts"] >= 1 and "since" in b
        assert components[two.b.rooms]["connected"] is True  # its own secret is still right
        assert components[two.a.component]["connected"] is True
        gauges = _component_gauges(metrics := await _metrics(two))
        assert gauges[(two.a.component, "users")] == 1 and gauges[(two.b.component, "users")] == 0
        assert gauges[(two.b.rooms, "rooms")] == 1
        async with account(two.a.server, "ann") as ann:
            await _dm_both_ways(alice, ann, two.a.component, "While B is refused")
        # Refused attempts back off (1, 2, 4 … s), and health tells when the next one comes.
        later = await _components_until(
            two, lambda c: c[two.b.component].get("failed_attempts", 0) >= 3
            and "next_attempt" in c[two.b.component], "a third failed attempt and the next",
        )  # fmt: skip
        wait, failures = (later[two.b.component][k] for k in ("next_attempt_in_seconds",
                                                              "failed_attempts"))  # fmt: skip
        assert 0 < wait <= 2 ** (failures - 1)
        health = json.dumps(later)
    finally:
        await two.b.server.stop()
        two.b.server.components[two.b.component] = XMPP_SECRET
        await two.b.server.start()
    for text in (health, metrics, two.bridge.log_path.read_text(errors="replace")):
        assert XMPP_SECRET not in text
    await _components_until(two, lambda c: all(e["connected"] for e in c.values()),
                            "every component connected again")  # fmt: skip
    assert _component_gauges(await _metrics(two))[(two.b.component, "users")] == 1
    log = two.bridge.log_path.read_text(errors="replace")[log_before:]
    assert "not-authorized" in log  # the operator's log says why, too
