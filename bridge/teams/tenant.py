"""One tenant as the bridge sees it: the app's Graph client, the relay account's, and the
subscriptions that bring the messages of the chats its watched accounts are in to the webhook.

Graph drops a chatMessage subscription at its expiry (at most 3 days with a lifecycle URL), so
a background loop renews it at a third of its lifetime and recreates it when Graph has
forgotten it; gaps are closed by the connector's catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import AccessTokenProvider
from msgraph import GraphServiceClient
from msgraph.generated.models.subscription import Subscription

from bridge.portal import NetworkStore
from bridge.teams import tokens
from bridge.teams.avatars import Photos
from bridge.teams.config import TeamsConfig, TenantConfig
from bridge.teams.errors import graph_call
from bridge.teams.protocol import graph_client

USER_RESOURCE = "/users/{}/chats/getAllMessages"
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
        # Tokens by MSAL, for the tenant's cloud (bridge.teams.tokens).
        self.graph_url = tokens.graph_url(cfg, tenant)
        self.app_tokens = tokens.app_provider(cfg, tenant)
        self.app = self.graph(self.app_tokens)
        self.photos = Photos(self.app, store, log)
        """Profile photos as ghost avatars (bridge.teams.avatars)."""
        self.relay: GraphServiceClient | None = None
        self.resubscribed: Callable[[str], Awaitable[None]] | None = None
        """Called when a subscription had to be created again (notifications were missed)."""
        self.subscription_state: Callable[[str, bool], Awaitable[None]] | None = None
        """Called after each renewal: the tenant's id, and whether the subscription is in place."""
        self.relay_user_id: str | None = None
        self._subscriptions: dict[str, str] | None = None
        self._joining: set[str] = set()
        """Accounts being logged in: watched before their login is stored."""
        self.client_state = ""
        self._wake = asyncio.Event()
        """Set when the subscription loop should run before its next renewal is due."""
        self.relay_sign_in: tokens.RelaySignIn | None = None
        if tenant.has_relay:
            self.relay_sign_in = tokens.RelaySignIn(cfg, tenant, store, log)
            self.relay = self.graph(self.relay_sign_in.provider)

    def graph(self, provider: AccessTokenProvider) -> GraphServiceClient:
        """A Graph client with its own connection pool (closed by :meth:`close`)."""
        http = httpx.AsyncClient(timeout=30)
        self._httpx.append(http)
        return graph_client(self.graph_url, provider, http)

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
        if self.relay_sign_in is not None:  # says at start if the relay must sign in
            await self.relay_sign_in.load()
        user = await graph_call(
            "look up the relay account",
            self.app.users.by_user_id(self.tenant.relay_username).get(),
        )
        self.relay_user_id = (user.id or "").lower() if user is not None else None

    # --- the subscriptions -----------------------------------------------------------------
    #
    # One ``/users/{id}/chats/getAllMessages`` subscription per watched account: the relay and
    # every Matrix user logged in with this tenant. Graph then notifies only changes in chats
    # one of them is in, so the hub is never told about the agency's other chats, and a
    # notification for a chat without a portal names (by its subscription) a member who may
    # bridge it. Graph does not say which chats a user joins, so per-chat subscriptions
    # could not discover new ones.

    def _kv_key(self) -> str:
        return f"subscriptions:{self.id}"

    async def _load(self) -> dict[str, str]:
        """Watched account (AAD object id) → subscription id, as last stored."""
        if self._subscriptions is None:
            raw = await self._store.kv_get(self._kv_key())
            self._subscriptions = dict(json.loads(raw)) if raw else {}
        return self._subscriptions

    async def _save(self, subscriptions: dict[str, str]) -> None:
        await self._store.kv_set(self._kv_key(), json.dumps(subscriptions, sort_keys=True))
        self._subscriptions = dict(subscriptions)

    async def subscription_ids(self) -> set[str]:
        return set((await self._load()).values())

    async def watches(self, subscription_id: str) -> bool:
        """Whether ``subscription_id`` is one of this tenant's current subscriptions, i.e. a
        notification from it concerns a chat a watched account is in."""
        return bool(subscription_id) and subscription_id in await self.subscription_ids()

    async def watched_accounts(self) -> set[str]:
        """The relay and the Teams accounts of this tenant's logins (AAD object ids)."""
        accounts = {
            login.login_id.lower()
            for login in await self._store.list_logins()
            if str((login.metadata or {}).get("tenant_id", "")).lower() == self.id.lower()
        }
        if self.relay_user_id:
            accounts.add(self.relay_user_id)
        return accounts | self._joining

    async def watch(self, account: str, client_state: str | None = None) -> None:
        """Subscribe to a newly logged-in account's chats now (before its login is stored)."""
        account = account.lower()
        self._joining.add(account)
        if account in await self._load():
            return
        try:
            await self._create(account, client_state or self.client_state, again=False)
        except Exception as err:  # Graph away: the subscription loop tries again now
            self._log.warning("Tenant %s: cannot subscribe to a login's chats: %s", self.id, err)
            self._wake.set()

    async def unwatch(self, account: str) -> None:
        """A login ended: its account's chats stop reaching the hub now. If Graph cannot
        delete the subscription, it is forgotten here (its notifications of chats without a
        portal are dropped unread) and expires in Graph on its own."""
        account = account.lower()
        self._joining.discard(account)
        if account == self.relay_user_id:
            return
        current = dict(await self._load())
        sub_id = current.pop(account, None)
        if sub_id is None:
            return
        await self._save(current)
        try:
            await self._delete(sub_id)
        except Exception as err:
            self._log.warning(
                "Tenant %s: subscription %s left to expire (%s)", self.id, sub_id, err
            )

    async def ensure_subscription(self, client_state: str) -> datetime:
        """Renew each watched account's subscription, create the missing ones (and those Graph
        forgot), and delete those of accounts no longer watched. Returns the new expiry."""
        self.client_state = client_state
        expires = datetime.now(UTC) + timedelta(minutes=self.cfg.subscription_minutes)
        await self._drop_legacy()
        wanted = await self.watched_accounts()
        current = dict(await self._load())
        for account in sorted(wanted):
            sub_id = current.get(account)
            if sub_id is not None:
                try:
                    await self.app.subscriptions.by_subscription_id(sub_id).patch(
                        Subscription(expiration_date_time=expires)
                    )
                    self._log.debug("Renewed subscription %s of tenant %s", sub_id, self.id)
                    continue
                except APIError as err:
                    if err.response_status_code != 404:
                        raise
                    self._log.info(
                        "Subscription %s of tenant %s is gone; recreating", sub_id, self.id
                    )
            await self._create(account, client_state, again=sub_id is not None)
        for account in sorted(set(current) - wanted):
            await self._delete(current[account])
            remaining = dict(await self._load())
            remaining.pop(account, None)
            await self._save(remaining)
        logins = {login.login_id.lower() for login in await self._store.list_logins()}
        self._joining -= logins
        return expires

    async def _create(self, account: str, client_state: str, *, again: bool) -> datetime:
        expires = datetime.now(UTC) + timedelta(minutes=self.cfg.subscription_minutes)
        resource = USER_RESOURCE.format(account)
        created = await self.app.subscriptions.post(
            Subscription(
                change_type=CHANGE_TYPES,
                notification_url=self.cfg.notification_url,
                lifecycle_notification_url=self.cfg.lifecycle_url,
                resource=resource,
                expiration_date_time=expires,
                client_state=client_state,
                include_resource_data=False,
            )
        )
        if created is None or not created.id:
            raise RuntimeError("Graph created a subscription without an id")
        subscriptions = dict(await self._load())
        subscriptions[account] = created.id
        await self._save(subscriptions)
        self._log.info(
            "Subscribed to %s of tenant %s (subscription %s, until %s)",
            resource, self.id, created.id, expires.isoformat(timespec="seconds"),
        )  # fmt: skip
        if again and self.resubscribed is not None:
            await self.resubscribed(f"a subscription of tenant {self.id} was created again")
        return expires

    async def _delete(self, sub_id: str) -> None:
        try:
            await self.app.subscriptions.by_subscription_id(sub_id).delete()
            self._log.info("Deleted subscription %s of tenant %s", sub_id, self.id)
        except APIError as err:
            if err.response_status_code != 404:
                raise

    async def _drop_legacy(self) -> None:
        """An older version watched the whole tenant (``/chats/getAllMessages``): stop it."""
        raw = await self._store.kv_get(f"subscription:{self.id}")
        if raw:
            await self._delete(str(json.loads(raw)["id"]))
            await self._store.kv_delete(f"subscription:{self.id}")

    async def create_subscription(self, client_state: str, subscription_id: str = "") -> None:
        """Graph removed ``subscription_id`` (a lifecycle event): create it again."""
        current = await self._load()
        account = next((a for a, s in current.items() if s == subscription_id), None)
        if account is None:
            await self.ensure_subscription(client_state)
            return
        await self._create(account, client_state, again=True)

    async def reauthorize(self, client_state: str, subscription_id: str = "") -> None:
        if not await self.watches(subscription_id):
            await self.ensure_subscription(client_state)
            return
        try:
            await self.app.subscriptions.by_subscription_id(subscription_id).reauthorize.post()
            self._log.info("Reauthorized subscription %s of tenant %s", subscription_id, self.id)
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(lifetime / 3, 30))
            self._wake.clear()

    async def _report_subscription(self, *, in_place: bool) -> None:
        if self.subscription_state is None:
            return
        try:
            await self.subscription_state(self.id, in_place)
        except Exception as err:  # the database is away: the next round reports again
            self._log.warning("Tenant %s: cannot record the subscription's state: %s", self.id, err)
