"""Service-chat requests written while the bridge was not told of them: at start, the recent
messages of each tenant's service chats that no notification brought are queued as if one had.

Graph's notifications reach the bridge only while it runs and the relay account's subscription
is in place (the first start creates it), and the inbound catch-up walks bridged chats only, so
a Teams person who wrote to the service account meanwhile would never be answered. This reads
the relay account's own chats: the list (one call per tenant), then the newest messages of the
one-on-one chats updated within :data:`LOOKBACK`. Each queued message goes through the same
path as a notification (:mod:`bridge.teams.service_chat`), whose per-message marker makes a
message answered already, or queued twice, a no-op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.chats.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.generated.users.item.chats.chats_request_builder import ChatsRequestBuilder

from bridge.core import RemoteChatID
from bridge.portal.models import RemoteInput
from bridge.teams.errors import graph_call
from bridge.teams.ids import portal_key, user_id
from bridge.teams.network import TeamsNetwork
from bridge.teams.service_chat import NOTIFICATION, marker_of, service_partner
from bridge.teams.tenant import TenantLink

LOOKBACK = timedelta(hours=24)
"""Older requests are not answered after a restart: the person has likely moved on."""
CHATS = 50
MESSAGES = 10

StateCallback = Callable[[str, bool], Awaitable[None]]


class ServiceCatchUp:
    """Wraps a tenant link's ``subscription_state`` callback: once a tenant's subscriptions
    are first in place in this process, its service chats are caught up (from then on, Graph
    notifies what is written; what was written before is read)."""

    def __init__(self, net: TeamsNetwork, enabled: bool, inner: StateCallback) -> None:
        self.net = net
        self.enabled = enabled
        self._inner = inner
        self._done: set[str] = set()

    async def subscription_state(self, tenant: str, in_place: bool) -> None:
        await self._inner(tenant, in_place)
        link = self.net.tenant(tenant)
        if in_place and self.enabled and link is not None and tenant not in self._done:
            self._done.add(tenant)
            self.net.ctx.background(catch_up_tenant(self.net, link), name=f"service-{tenant}")


async def catch_up_tenant(net: TeamsNetwork, link: TenantLink, now: datetime | None = None) -> int:
    """Queue the unanswered recent requests of the tenant's service chats; how many."""
    if link.relay is None:
        return 0
    since = (now or datetime.now(UTC)) - LOOKBACK
    try:
        queued = await _tenant(net, link, since)
    except Exception as err:  # Graph away: the next start looks again
        net.ctx.log.warning("Tenant %s: service chats not caught up: %s", link.id, err)
        return 0
    if queued:
        net.ctx.log.info("Queued %d service-chat request(s) written while not notified", queued)
    return queued


async def _tenant(net: TeamsNetwork, link: TenantLink, since: datetime) -> int:
    await link.resolve_relay()
    relay = link.relay_user_id
    if not relay:
        return 0
    params = ChatsRequestBuilder.ChatsRequestBuilderGetQueryParameters(top=CHATS)
    page = await graph_call(
        "list the service account's chats",
        link.app.users.by_user_id(relay).chats.get(RequestConfiguration(query_parameters=params)),
        reading=True,
    )
    queued = 0
    for chat in (page.value if page is not None else None) or []:
        if not chat.id or (chat.last_updated_date_time or since) < since:
            continue
        person = service_partner(chat.id, relay)
        if person is None:
            continue
        portal = await net.ctx.store.get_portal(RemoteChatID(chat.id))
        if portal is not None and portal.mxid:
            continue  # bridged from Matrix: the inbound catch-up reads it
        queued += await _chat(net, link, chat.id, person, since)
    return queued


async def _chat(net: TeamsNetwork, link: TenantLink, chat_id: str, person: str,
                since: datetime) -> int:  # fmt: skip
    params = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(top=MESSAGES)
    page = await graph_call(
        f"read the service chat {chat_id}",
        link.app.chats.by_chat_id(chat_id).messages.get(
            RequestConfiguration(query_parameters=params)
        ),
        reading=True,
    )
    found = []
    for msg in (page.value if page is not None else None) or []:
        user = msg.from_.user if msg.from_ is not None else None
        if not msg.id or user is None or not user.id or user_id(user.id) != person:
            continue
        if msg.created_date_time is None or msg.created_date_time < since:
            continue
        if await net.ctx.store.kv_get(marker_of(chat_id, msg.id)) is not None:
            continue
        found.append((msg.created_date_time, msg.id))
    queued = 0
    for _, msg_id in sorted(found):
        payload = {
            "changeType": "created",
            "resource": f"chats('{chat_id}')/messages('{msg_id}')",
            "tenantId": link.id,
            "subscriptionId": "",
        }
        item = RemoteInput(
            portal=portal_key(chat_id), kind=NOTIFICATION, payload=payload,
            dedupe_id=f"created:{msg_id}",
        )  # fmt: skip
        if await net.ctx.accept_remote(item):
            queued += 1
    return queued
