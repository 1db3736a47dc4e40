"""The service chat (bridge.teams.service_chat) against the Graph emulator, through the
unmodified msgraph-sdk: a Teams user writes a Matrix ID to the relay account and gets a Teams
group chat bridged to a Matrix direct chat; hostile requests get a clear answer and change
nothing. Megan Bowen plays the tenant's relay account; the seeded Adele and Megan chat is Adele's
service chat."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from bridge.core import RemoteChatID, RemoteMessage
from bridge.core.federation import FederationPolicy
from bridge.portal.models import Portal, RemoteInput
from bridge.teams import service_chat as service_chat_module
from bridge.teams.config import TeamsConfig
from bridge.teams.ids import NETWORK, portal_key
from bridge.teams.network import TeamsNetwork
from bridge.teams.service_chat import (
    INTERRUPTED,
    OPENED,
    BadRequest,
    RateLimit,
    ServiceChat,
    requested_mxid,
    service_partner,
)
from bridge.teams.service_config import ServiceChatConfig, problems
from bridge.teams.tenant import TenantLink
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

ANNA = "@anna:luxchat.lu"
CONTACT = "the IT service desk (it-help@contoso.example)"


@dataclass
class Hub:
    """The service chat with a fake core (store, policy, profiles) and a real tenant link."""

    emu: Emulator
    service: ServiceChat
    ctx: Any
    inner: AsyncMock
    kv: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    clock: list[float] = field(default_factory=lambda: [1000.0])

    @property
    def service_chat(self) -> str:
        return self.emu.chat(1)  # Adele and Megan (the relay)

    async def write(self, text: str, first_name: str = "adele", chat: str | None = None) -> str:
        chat = chat or self.service_chat
        posted = await self.emu.post_as(first_name, chat, text)
        return str(posted["id"])

    async def convert(self, msg_id: str, chat: str | None = None) -> list[Any]:
        chat = chat or self.service_chat
        item = RemoteInput(
            portal=portal_key(chat),
            kind="notification",
            payload={
                "subscriptionId": "sub",
                "changeType": "created",
                "resource": f"chats('{chat}')/messages('{msg_id}')",
                "tenantId": self.emu.tenant_id,
            },
        )
        return list(await self.service.convert(item))

    async def answers(self) -> list[str]:
        """The relay's messages in the service chat, oldest first."""
        megan = self.emu.user("megan")["id"]
        page = await self.emu.app_client().chats.by_chat_id(self.service_chat).messages.get()
        found = [
            m
            for m in (page.value if page else None) or []
            if m.from_ and m.from_.user and m.from_.user.id == megan
        ]
        found.sort(key=lambda m: int(m.id or 0))
        return [m.body.content or "" for m in found if m.body]

    def group_chats(self) -> list[Any]:
        state = self.emu.services.state
        return [c for c in state.chats.values() if c.chat_type == "group" and c.topic != "Launch"]

    def opened(self) -> list[RemoteInput]:
        return [
            c.args[0] for c in self.ctx.accept_remote.await_args_list if c.args[0].kind == OPENED
        ]


def _policy(remote: list[str], matrix: list[str]) -> FederationPolicy:
    return FederationPolicy(
        [{"network": "teams", "remote": remote, "matrix": matrix}], "hub.example"
    )


@pytest.fixture
async def hub(emulator: Emulator) -> AsyncIterator[Hub]:  # noqa: F811
    yield await _hub(emulator)


async def _hub(
    emu: Emulator, *, policy: FederationPolicy | None = None, per_hour: int = 10,
    enabled: bool = True,
) -> Hub:  # fmt: skip
    megan = emu.user("megan")
    section = {
        "tenants": [
            {
                "tenant_id": emu.tenant_id,
                "client_id": emu.app["clientId"],
                "client_secret": emu.app["clientSecret"],
                "relay_username": megan["userPrincipalName"],
                "relay_password": "megan-pw",
                "display_name": "Contoso",
            }
        ],
        "graph_url": emu.graph_url,
        "authority": emu.authority,
        "ca_file": emu.ca_file,
        "webhook": {"public_url": "http://127.0.0.1:1"},
    }
    cfg = TeamsConfig.from_section(section)
    kv: dict[str, str] = {}
    profiles = {ANNA: "Anna Schmidt"}
    ctx = MagicMock()
    ctx.log = logging.getLogger("test.teams.service")
    ctx.store.kv_get = AsyncMock(side_effect=kv.get)
    ctx.store.kv_set = AsyncMock(side_effect=kv.__setitem__)
    ctx.store.sealed_get = AsyncMock(return_value=None)  # no stored relay sign-in
    ctx.store.sealed_set = AsyncMock()
    ctx.store.get_portal = AsyncMock(return_value=None)
    ctx.accept_remote = AsyncMock(return_value=True)
    ctx.federation = policy or _policy([emu.tenant_id], ["luxchat.lu"])
    ctx.matrix_profile = AsyncMock(side_effect=lambda mxid: (profiles.get(mxid), None, ""))
    ctx.parse_ghost_mxid = MagicMock(
        side_effect=lambda m: m[7:].split(":")[0] if m.startswith("@teams_") else None
    )
    link = TenantLink(cfg, cfg.tenants[0], emu.session, ctx.store, ctx.log)
    emu._http.extend(link._httpx)
    net = TeamsNetwork(ctx, cfg, [link])
    inner = AsyncMock(return_value=[])
    ready = asyncio.Event()
    ready.set()
    clock = [1000.0]
    service = ServiceChat(
        net,
        ServiceChatConfig(enabled=enabled, requests_per_hour=per_hour, contact=CONTACT),
        inner,
        ready,
        clock=lambda: clock[0],
    )
    return Hub(emu, service, ctx, inner, kv, profiles, clock)


# --- the request, end to end on the Teams side ---------------------------------------------------


async def test_a_matrix_id_opens_a_group_chat_bridged_to_a_matrix_dm(hub: Hub) -> None:
    msg = await hub.write("<p>chat with @anna:LuxChat.lu please</p>")
    assert await hub.convert(msg) == []
    hub.inner.assert_not_awaited()  # the service chat is never a portal
    [group] = hub.group_chats()
    adele, megan = hub.emu.user("adele")["id"], hub.emu.user("megan")["id"]
    assert set(group.members) == {adele, megan}
    assert ANNA in (group.topic or "") and "Anna Schmidt" in (group.topic or "")
    [answer] = await hub.answers()
    assert "I opened a new chat" in answer and ANNA in answer
    [opened] = hub.opened()
    assert opened.portal == portal_key(group.id)
    [event] = await hub.service.convert(opened)
    assert isinstance(event, RemoteMessage)
    assert event.chat_info is not None and event.chat_info.is_direct
    assert event.chat_info.matrix_users == [ANNA]
    assert event.sender == adele.lower()
    assert event.sender_info is not None and event.sender_info.name == "Adele Vance (Contoso)"
    assert "started this chat from Microsoft Teams" in event.parts[0].text


async def test_the_group_chat_binds_members_on_the_tenants_own_graph(hub: Hub) -> None:
    """A national-cloud tenant: the binds name its Graph, not the section's global one."""
    net = hub.service.net
    net.cfg = dataclasses.replace(net.cfg, graph_url="https://graph.global.invalid/v1.0")
    await hub.convert(await hub.write(ANNA))
    [post] = hub.emu.requests("/v1.0/chats", "POST")
    binds = [m["user@odata.bind"] for m in json.loads(post["body"])["members"]]
    [link] = net.tenants.values()
    assert binds and all(b.startswith(f"{link.graph_url}/users('") for b in binds)
    assert len(hub.group_chats()) == 1


async def test_a_replayed_notification_opens_one_chat_and_answers_once(hub: Hub) -> None:
    msg = await hub.write(ANNA)
    await hub.convert(msg)
    await hub.convert(msg)  # Graph redelivers, or the inbox converts it again after a crash
    assert len(hub.group_chats()) == 1
    assert len(await hub.answers()) == 1
    assert len(hub.opened()) == 1


async def test_a_crash_after_creating_the_chat_makes_no_second_chat(hub: Hub) -> None:
    msg = await hub.write(ANNA)
    hub.kv[f"service-request:{hub.service_chat}:{msg}"] = "opening"
    await hub.convert(msg)
    assert hub.group_chats() == []
    assert await hub.answers() == [INTERRUPTED]


async def test_an_outage_after_creating_the_chat_bridges_that_chat_on_the_next_try(
    hub: Hub,
) -> None:
    msg = await hub.write(ANNA)
    hub.ctx.accept_remote.side_effect = [RuntimeError("database away"), True]
    with pytest.raises(RuntimeError):
        await hub.convert(msg)  # the group chat exists in Teams; its portal was not queued
    assert len(hub.group_chats()) == 1 and await hub.answers() == []
    await hub.convert(msg)  # the inbox converts the request again
    [group] = hub.group_chats()
    failed, opened = hub.opened()  # the failed attempt, then the kept one, for the same chat
    assert failed.portal == opened.portal == portal_key(group.id)
    [answer] = await hub.answers()
    assert "I opened a new chat" in answer


def _crash_before_choosing(hub: Hub) -> None:
    """The next request dies after Graph created its chat, before the chat id is recorded."""

    def kv_set(key: str, value: str) -> None:
        if value.startswith("bridging\n") and not crashed:
            crashed.append(True)
            raise RuntimeError("process killed here")
        hub.kv[key] = value

    crashed: list[bool] = []
    hub.ctx.store.kv_set.side_effect = kv_set


async def test_a_crash_after_queueing_the_portal_answers_with_that_chat(hub: Hub) -> None:
    """Killed after the portal's input was queued (and ran: the chat is bridged) but before
    the request was marked opened: the retry says which chat, not "interrupted"."""

    def kv_set(key: str, value: str) -> None:
        if value.startswith("opened\n") and not crashed:
            crashed.append(True)
            raise RuntimeError("process killed here")
        hub.kv[key] = value

    crashed: list[bool] = []
    hub.ctx.store.kv_set.side_effect = kv_set
    msg = await hub.write(ANNA)
    with pytest.raises(RuntimeError):
        await hub.convert(msg)
    [group] = hub.group_chats()
    bridged = Portal(NETWORK, RemoteChatID(group.id), mxid="!dm:hub.example")
    hub.ctx.store.get_portal.side_effect = lambda chat: bridged if chat == group.id else None
    await hub.convert(msg)  # the inbox converts the request again
    [answer] = await hub.answers()
    assert "I opened a new chat" in answer and ANNA in answer
    assert hub.group_chats() == [group]
    assert {o.portal for o in hub.opened()} == {portal_key(group.id)}  # queued again: deduped


async def test_retries_of_one_request_count_once_against_the_limit(
    emulator: Emulator,  # noqa: F811
) -> None:
    hub = await _hub(emulator, per_hour=2)
    slow = [TimeoutError("luxchat.lu slow"), TimeoutError("again"), ("Anna", None, "")]
    hub.ctx.matrix_profile.side_effect = slow
    msg = await hub.write(ANNA)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await hub.convert(msg)  # the inbox retries the same input
    await hub.convert(msg)
    [answer] = await hub.answers()
    assert "I opened a new chat" in answer and len(hub.group_chats()) == 1
    hub.ctx.matrix_profile.side_effect = lambda mxid: ("Anna", None, "")
    await hub.convert(await hub.write(ANNA))  # the second request of the hour is allowed
    assert len(hub.group_chats()) == 2


async def test_a_sender_without_a_tenant_is_refused(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graph omits the sender's tenant: the policy cannot vouch for it, so no chat."""
    real = service_chat_module._sender

    def no_tenant(msg: Any) -> tuple[str, str, str] | None:
        found = real(msg)
        return (found[0], found[1], "") if found is not None else None

    monkeypatch.setattr(service_chat_module, "_sender", no_tenant)
    await hub.convert(await hub.write(ANNA))
    [answer] = await hub.answers()
    assert "does not connect your organisation" in answer and CONTACT in answer
    assert hub.group_chats() == [] and hub.opened() == []
    hub.ctx.matrix_profile.assert_not_awaited()


async def test_an_unclear_recovery_makes_no_chat_and_says_so(hub: Hub) -> None:
    first, second = await hub.write(ANNA), await hub.write(ANNA)  # two requests in a row
    await hub.convert(first)
    _crash_before_choosing(hub)
    with pytest.raises(RuntimeError):
        await hub.convert(second)
    # Both chats were created after the second request and neither has a portal yet (the
    # fake core makes none): which is the second request's cannot be told, so neither is
    # bridged for it, no third chat is made, and the person is told.
    await hub.convert(second)
    assert len(hub.group_chats()) == 2 and len(hub.opened()) == 1  # the first's only
    assert (await hub.answers())[-1] == INTERRUPTED


async def test_a_recovery_skips_chats_made_before_the_request(hub: Hub) -> None:
    await hub.convert(await hub.write(ANNA))
    await hub.emu.control("POST", "/clock", {"advanceSeconds": 1})  # not in the same instant
    second = await hub.write(ANNA)
    _crash_before_choosing(hub)
    with pytest.raises(RuntimeError):
        await hub.convert(second)
    await hub.convert(second)
    _, second_chat = sorted(hub.group_chats(), key=lambda c: c.created)
    assert hub.opened()[-1].portal == portal_key(second_chat.id)
    assert "I opened a new chat" in (await hub.answers())[-1]


async def test_the_relays_own_answers_are_not_requests(hub: Hub) -> None:
    msg = await hub.write("<p>@anna:luxchat.lu</p>", first_name="megan")
    assert await hub.convert(msg) == []
    assert hub.group_chats() == [] and await hub.answers() == [
        "<p>@anna:luxchat.lu</p>"
    ]  # only what Megan wrote herself


async def test_a_message_without_a_matrix_id_gets_help(hub: Hub) -> None:
    await hub.convert(await hub.write("hello?"))
    [answer] = await hub.answers()
    assert "write their Matrix ID" in answer
    assert hub.group_chats() == []


# --- hostile requests ------------------------------------------------------------------------


async def test_a_refused_tenant_is_told_whom_to_ask_and_nothing_changes(
    emulator: Emulator,  # noqa: F811
) -> None:
    hub = await _hub(emulator, policy=_policy(["another-tenant"], ["*"]))
    await hub.convert(await hub.write(ANNA))
    [answer] = await hub.answers()
    assert "does not connect your organisation" in answer and "luxchat.lu" in answer
    assert CONTACT in answer
    assert hub.group_chats() == [] and hub.opened() == []
    hub.ctx.matrix_profile.assert_not_awaited()  # refused before asking Matrix anything


async def test_a_refused_matrix_server_is_refused(hub: Hub) -> None:
    hub.profiles["@eve:evil.example"] = "Eve"
    await hub.convert(await hub.write("@eve:evil.example"))
    [answer] = await hub.answers()
    assert "evil.example" in answer and CONTACT in answer
    assert hub.group_chats() == []


@pytest.mark.parametrize(
    "text", ["@anna:", "@anna:lux_chat!.lu", "@:luxchat.lu", "@anna:" + "a" * 300 + ".lu"]
)
async def test_a_malformed_matrix_id_is_explained(hub: Hub, text: str) -> None:
    await hub.convert(await hub.write(text))
    [answer] = await hub.answers()
    assert "is not a Matrix ID" in answer
    assert hub.group_chats() == []


async def test_a_nonexistent_matrix_user_is_not_invited(hub: Hub) -> None:
    await hub.convert(await hub.write("@nobody:luxchat.lu"))
    [answer] = await hub.answers()
    assert "could not find the Matrix user" in answer
    assert hub.group_chats() == [] and hub.opened() == []


async def test_a_teams_ghost_is_not_a_matrix_user_to_reach(hub: Hub) -> None:
    hub.ctx.federation = _policy(["*"], ["*"])
    await hub.convert(await hub.write("@teams_abc:hub.example"))
    [answer] = await hub.answers()
    assert "chat with them in Teams directly" in answer


async def test_spamming_requests_is_limited_per_person(emulator: Emulator) -> None:  # noqa: F811
    hub = await _hub(emulator, per_hour=2)
    for _ in range(5):
        await hub.convert(await hub.write(ANNA))
    assert len(hub.group_chats()) == 2
    answers = await hub.answers()
    assert len(answers) == 3  # two chats, then one "too many", then silence
    assert "Try again in 60 minute(s)" in answers[2]
    hub.clock[0] += 3601
    await hub.convert(await hub.write(ANNA))
    assert len(hub.group_chats()) == 3


async def test_an_html_injection_in_the_request_is_not_echoed_as_html(hub: Hub) -> None:
    await hub.convert(await hub.write("@<b>x</b>:a&lt;script&gt;"))
    for answer in await hub.answers():
        assert "<script>" not in answer


# --- what is not the service chat goes to the inbound path ---------------------------------------


async def test_other_chats_go_to_the_inbound_path(hub: Hub) -> None:
    launch = hub.emu.chat(0)  # a group chat
    await hub.convert(await hub.write(ANNA, chat=launch), chat=launch)
    hub.inner.assert_awaited_once()
    assert hub.group_chats() == []


async def test_a_bridged_relay_chat_stays_a_portal(hub: Hub) -> None:
    portal = Portal(NETWORK, RemoteChatID(hub.service_chat), mxid="!room:hub.example")
    hub.ctx.store.get_portal = AsyncMock(return_value=portal)
    await hub.convert(await hub.write(ANNA))
    hub.inner.assert_awaited_once()
    assert hub.group_chats() == []


async def test_disabled_the_service_chat_is_left_alone(emulator: Emulator) -> None:  # noqa: F811
    hub = await _hub(emulator, enabled=False)
    await hub.convert(await hub.write(ANNA))
    hub.inner.assert_awaited_once()
    assert hub.group_chats() == [] and await hub.answers() == []


# --- parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@anna:luxchat.lu", ANNA),
        ("<p>Chat with <b>@anna:LuxChat.lu</b>.</p>", ANNA),
        # Only the server name is case-blind: a historical localpart keeps its case.
        ("@Bob.Legacy:Hub.Example:8448", "@Bob.Legacy:hub.example:8448"),
        ("talk to @bob:[::1]:8448", "@bob:[::1]:8448"),
        ("mail me at x@y, or @anna:luxchat.lu!", ANNA),
        ("hello", None),
        ("@everyone hi", None),
    ],
)
def test_requested_mxid(text: str, expected: str | None) -> None:
    assert requested_mxid(text) == expected


def test_a_huge_message_is_read_in_one_pass() -> None:
    assert requested_mxid("x " * 14_000 + ANNA) == ANNA
    with pytest.raises(BadRequest) as bad:
        requested_mxid("@a:" + "b" * 28_000)
    assert len(bad.value.answer) < 300  # the echo is cut


def test_requested_mxid_refuses_lookalikes() -> None:
    with pytest.raises(BadRequest):
        requested_mxid("@anna:luxchat..lu")


def test_service_partner_reads_one_on_one_ids() -> None:
    a, b = "a" * 8 + "-0000-4000-8000-" + "0" * 12, "b" * 8 + "-0000-4000-8000-" + "0" * 12
    chat = f"19:{a}_{b}@unq.gbl.spaces"
    assert service_partner(chat, a) == b and service_partner(chat, b.upper()) == a
    assert service_partner(chat, "c") is None
    assert service_partner("19:abc@thread.v2", a) is None


def test_rate_limit_tells_once_per_window() -> None:
    now = [0.0]
    limit = RateLimit(1, lambda: now[0])
    assert [limit.allow("p"), limit.allow("p"), limit.allow("p")] == [True, False, None]
    assert limit.allow("q") is True
    now[0] = 3600.5
    assert limit.allow("p") is True


def test_config_problems() -> None:
    relay = {"tenants": [{"relay_username": "r@x"}]}
    assert problems({**relay, "service_chat": {"enabled": True}}) == []
    assert problems({}) == []
    found = problems(
        {"tenants": [{}], "service_chat": {"enabled": "yes", "requests_per_hour": 0,
                                           "contact": "a\nb"}}
    )  # fmt: skip
    assert [p.split(":")[0] for p in found] == [
        "connectors.teams.service_chat.enabled",
        "connectors.teams.service_chat.requests_per_hour",
        "connectors.teams.service_chat.contact",
    ]
    assert "relay account" in problems({"tenants": [{}], "service_chat": {"enabled": True}})[0]
    assert ServiceChatConfig.from_section({}).enabled is False
