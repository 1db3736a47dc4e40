"""State the Teams clients share: the tenants, which tenant a chat belongs to, which Matrix
user each Teams account belongs to, and the ids of messages the bridge has just sent."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from kiota_abstractions.api_error import APIError

from bridge.core import ConnectorContext
from bridge.teams.config import TeamsConfig
from bridge.teams.tenant import TenantLink

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

    from bridge.teams.channel_subscriptions import ChannelSubscriptions


class RecentIds:
    """Ids seen in the last ``ttl`` seconds: Graph's notification of a message the bridge
    sent can arrive before the core has stored the id that the send returned."""

    def __init__(self, ttl: float = 600.0) -> None:
        self._ttl = ttl
        # An OrderedDict, not a dict: a dict's first item is found by scanning past the slots
        # of deleted ones, so dropping the oldest ids one by one would cost O(n) each.
        self._ids: OrderedDict[str, float] = OrderedDict()

    def add(self, remote_id: str) -> None:
        now = time.monotonic()
        # Expiries grow with insertion order (one ttl), so the expired ids are the oldest.
        while self._ids and next(iter(self._ids.values())) <= now:
            self._ids.popitem(last=False)
        self._ids[remote_id] = now + self._ttl
        self._ids.move_to_end(remote_id)  # re-added: its expiry is now the latest

    def __contains__(self, remote_id: object) -> bool:
        expiry = self._ids.get(str(remote_id))
        return expiry is not None and expiry > time.monotonic()


class TeamsNetwork:
    def __init__(self, ctx: ConnectorContext, cfg: TeamsConfig, tenants: list[TenantLink]) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.tenants = {t.id: t for t in tenants}
        self.sent = RecentIds()
        self._chat_tenants: dict[str, str] = {}
        self.channel_subscriptions: ChannelSubscriptions | None = None
        """Set at start: the subscriptions of bridged channels."""
        self.login_graphs: dict[str, GraphServiceClient] = {}
        """Each loaded Teams login's own (delegated) Graph client, by login id (its AAD object
        id): how one Matrix user acts for another's membership (bridge.teams.matrix_members)."""

    def tenant(self, tenant_id: str) -> TenantLink | None:
        return self.tenants.get(tenant_id.lower())

    async def remember_chat(self, chat_id: str, tenant_id: str) -> None:
        if self._chat_tenants.get(chat_id) != tenant_id:
            self._chat_tenants[chat_id] = tenant_id
            await self.ctx.store.kv_set(f"chat:{chat_id}", tenant_id)

    async def tenant_for_chat(self, chat_id: str) -> TenantLink:
        """The tenant whose app reads ``chat_id``: remembered from its notifications, else the
        only tenant, else the first whose app can see the chat."""
        known = self._chat_tenants.get(chat_id) or await self.ctx.store.kv_get(f"chat:{chat_id}")
        if known and (link := self.tenant(known)) is not None:
            self._chat_tenants[chat_id] = link.id
            return link
        links = list(self.tenants.values())
        if len(links) > 1:
            for link in links:
                try:
                    await link.app.chats.by_chat_id(chat_id).get()
                except APIError:
                    continue
                await self.remember_chat(chat_id, link.id)
                return link
        return links[0]

    async def logged_in(self) -> dict[str, str]:
        """AAD object id → Matrix user, for every Teams login of a Matrix user."""
        return {login.login_id: login.user_mxid for login in await self.ctx.store.list_logins()}

    def relay_ids(self) -> set[str]:
        return {t.relay_user_id for t in self.tenants.values() if t.relay_user_id}
