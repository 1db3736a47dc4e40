"""One tenant as the bridge sees it: the app's Graph client, the relay account's, and the
tenant-wide subscription that brings every chat message of the tenant to the webhook.

Graph drops a chatMessage subscription at its expiry (at most 3 days with a lifecycle URL), so
a background loop renews it at a third of its lifetime and recreates it when Graph has
forgotten it; gaps are closed by the connector's catch-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import httpx
from kiota_abstractions.api_error import APIError
from msgraph import GraphServiceClient
from msgraph.generated.models.subscription import Subscription

from bridge.portal import NetworkStore
from bridge.teams.config import DELEGATED_SCOPES, TeamsConfig, TenantConfig
from bridge.teams.errors import graph_call
from bridge.teams.protocol import OAuthTokenProvider, graph_client

RESOURCE = "/chats/getAllMessages"
CHANGE_TYPES = "created,updated,deleted"


class TenantLink:
    def __init__(
        self,
        cfg: TeamsConfig,
        tenant: TenantConfig,
        http: aiohttp.ClientSession,
        store: NetworkStore,
        log: logging.Logger,
    ) -> None:
        self.cfg = cfg
        self.tenant = tenant
        self._http = http
        self._store = store
        self._log = log
        self._httpx: list[httpx.AsyncClient] = []
        self.app_tokens = OAuthTokenProvider.client_credentials(
            http,
            cfg.authority,
            tenant.tenant_id,
            tenant.client_id,
            tenant.client_secret,
            allowed_hosts=cfg.allowed_hosts,
        )
        self.app = self.graph(self.app_tokens)
        self.relay: GraphServiceClient | None = None
        self.resubscribed: Callable[[str], Awaitable[None]] | None = None
        """Called when a subscription had to be created again (notifications were missed)."""
        self.subscription_state: Callable[[str, bool], Awaitable[None]] | None = None
        """Called after each renewal: the tenant's id, and whether the subscription is in place."""
        self.relay_user_id: str | None = None
        if tenant.has_relay:
            self.relay = self.graph(
                OAuthTokenProvider.password(
                    http,
                    cfg.authority,
                    tenant.tenant_id,
                    tenant.client_id,
                    tenant.relay_username,
                    tenant.relay_password,
                    DELEGATED_SCOPES,
                    allowed_hosts=cfg.allowed_hosts,
                    client_secret=tenant.client_secret,
                )
            )

    def graph(self, provider: OAuthTokenProvider) -> GraphServiceClient:
        """A Graph client with its own connection pool (closed by :meth:`close`)."""
        http = httpx.AsyncClient(timeout=30)
        self._httpx.append(http)
        return graph_client(self.cfg.graph_url, provider, http)

    async def close(self) -> None:
        for http in self._httpx:
            await http.aclose()

    @property
    def id(self) -> str:
        return self.tenant.tenant_id

    async def resolve_relay(self) -> None:
        """Learn the relay account's object id, so its own echoes and membership are known."""
        if not self.tenant.has_relay or self.relay_user_id is not None:
            return
        user = await graph_call(
            "look up the relay account",
            self.app.users.by_user_id(self.tenant.relay_username).get(),
        )
        self.relay_user_id = (user.id or "").lower() if user is not None else None

    # --- the subscription ------------------------------------------------------------------

    def _kv_key(self) -> str:
        return f"subscription:{self.id}"

    async def subscription_id(self) -> str | None:
        raw = await self._store.kv_get(self._kv_key())
        return str(json.loads(raw)["id"]) if raw else None

    async def ensure_subscription(self, client_state: str) -> datetime:
        """Renew the tenant's subscription, or create it if Graph does not know it (any more).
        Returns its new expiry."""
        expires = datetime.now(UTC) + timedelta(minutes=self.cfg.subscription_minutes)
        sub_id = await self.subscription_id()
        if sub_id is not None:
            try:
                await self.app.subscriptions.by_subscription_id(sub_id).patch(
                    Subscription(expiration_date_time=expires)
                )
                self._log.debug("Renewed subscription %s of tenant %s", sub_id, self.id)
                return expires
            except APIError as err:
                if err.response_status_code != 404:
                    raise
                self._log.info("Subscription %s of tenant %s is gone; recreating", sub_id, self.id)
        return await self.create_subscription(client_state)

    async def create_subscription(self, client_state: str) -> datetime:
        expires = datetime.now(UTC) + timedelta(minutes=self.cfg.subscription_minutes)
        created = await self.app.subscriptions.post(
            Subscription(
                change_type=CHANGE_TYPES,
                notification_url=self.cfg.notification_url,
                lifecycle_notification_url=self.cfg.lifecycle_url,
                resource=RESOURCE,
                expiration_date_time=expires,
                client_state=client_state,
                include_resource_data=False,
            )
        )
        if created is None or not created.id:
            raise RuntimeError("Graph created a subscription without an id")
        again = await self.subscription_id() is not None
        await self._store.kv_set(self._kv_key(), json.dumps({"id": created.id}))
        self._log.info(
            "Subscribed to %s of tenant %s (subscription %s, until %s)",
            RESOURCE,
            self.id,
            created.id,
            expires.isoformat(timespec="seconds"),
        )
        if again and self.resubscribed is not None:
            await self.resubscribed(f"the subscription of tenant {self.id} was created again")
        return expires

    async def reauthorize(self, client_state: str) -> None:
        sub_id = await self.subscription_id()
        if sub_id is None:
            await self.create_subscription(client_state)
            return
        try:
            await self.app.subscriptions.by_subscription_id(sub_id).reauthorize.post()
            self._log.info("Reauthorized subscription %s of tenant %s", sub_id, self.id)
        except APIError:
            await self.ensure_subscription(client_state)

    async def keep_subscribed(self, client_state: str) -> None:
        """Background loop: subscribe, then renew at a third of the lifetime; retry failures
        with backoff (a Graph outage must not end it). Each outcome is reported
        (``subscription_state``): while it is not in place, no notification is certain."""
        lifetime = self.cfg.subscription_minutes * 60
        delay = 5.0
        while True:
            try:
                await self.resolve_relay()
                await self.ensure_subscription(client_state)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                await self._report_subscription(in_place=False)
                self._log.warning(
                    "Tenant %s: cannot subscribe to chat messages (%s); retrying in %.0f s",
                    self.id,
                    err,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 600)
                continue
            delay = 5.0
            await self._report_subscription(in_place=True)
            await asyncio.sleep(max(lifetime / 3, 30))

    async def _report_subscription(self, *, in_place: bool) -> None:
        if self.subscription_state is None:
            return
        try:
            await self.subscription_state(self.id, in_place)
        except Exception as err:  # the database is away: the next round reports again
            self._log.warning("Tenant %s: cannot record the subscription's state: %s", self.id, err)
