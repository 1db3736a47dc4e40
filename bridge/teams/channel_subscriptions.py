"""One Graph subscription per bridged channel: ``/teams/{team}/channels/{channel}/messages``.

Chats are watched per account (:mod:`bridge.teams.tenant`), since Graph does not say which chats
a person joins; channels are bridged one by one on request, so each gets its own subscription
and Graph never tells the hub about a channel nobody bridged. Its notifications cover the
channel's messages and their replies. Made with the tenant's app token when the channel is
bridged, renewed at a third of its lifetime, made again when Graph forgot it (then the channel
is caught up: notifications were lost), and deleted once the channel is no longer bridged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from kiota_abstractions.api_error import APIError
from msgraph.generated.models.subscription import Subscription

from bridge.teams.ids import parse_channel
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import CHANGE_TYPES, TenantLink

_KV = "channel-subscriptions"
GRACE_S = 600
"""A subscription made for a channel being bridged is kept this long before its portal exists."""

Missed = Callable[[str], Awaitable[None]]


def channel_resource(team_id: str, channel_id: str) -> str:
    return f"/teams/{team_id}/channels/{channel_id}/messages"


class ChannelSubscriptions:
    def __init__(self, net: TeamsNetwork, client_state: str) -> None:
        self._net = net
        self._store = net.ctx.store
        self._log = net.ctx.log
        self._client_state = client_state
        self._lock = asyncio.Lock()
        self.missed: Missed | None = None
        """Called with a channel portal's remote id when its subscription had to be made again."""

    async def _load(self) -> dict[str, dict[str, str | float]]:
        """Channel portal id → {"id": subscription id, "tenant": …, "since": unix time}."""
        raw = await self._store.kv_get(_KV)
        return dict(json.loads(raw)) if raw else {}

    async def _save(self, entries: dict[str, dict[str, str | float]]) -> None:
        await self._store.kv_set(_KV, json.dumps(entries, sort_keys=True))

    async def owner(self, subscription_id: str) -> str | None:
        """The channel portal a subscription is for, if it is one of ours."""
        if not subscription_id:
            return None
        for portal_id, entry in (await self._load()).items():
            if entry.get("id") == subscription_id:
                return portal_id
        return None

    async def subscribe(self, link: TenantLink, portal_id: str) -> None:
        """Make the channel's subscription now (``bridge teams <link>``); if Graph refuses,
        the error goes to the user, if it is away the renewal loop tries again."""
        async with self._lock:
            entries = await self._load()
            if portal_id in entries:
                return
            entries[portal_id] = await self._create(link, portal_id)
            await self._save(entries)

    async def _create(self, link: TenantLink, portal_id: str) -> dict[str, str | float]:
        parsed = parse_channel(portal_id)
        assert parsed is not None, portal_id
        expires = datetime.now(UTC) + timedelta(minutes=self._net.cfg.subscription_minutes)
        resource = channel_resource(*parsed)
        created = await link.app.subscriptions.post(
            Subscription(
                change_type=CHANGE_TYPES,
                notification_url=self._net.cfg.notification_url,
                lifecycle_notification_url=self._net.cfg.lifecycle_url,
                resource=resource,
                expiration_date_time=expires,
                client_state=self._client_state,
                include_resource_data=False,
            )
        )
        if created is None or not created.id:
            raise RuntimeError("Graph created a subscription without an id")
        self._log.info(
            "Subscribed to %s of tenant %s (subscription %s)", resource, link.id, created.id
        )
        return {"id": created.id, "tenant": link.id, "since": time.time()}

    async def renew(self) -> bool:
        """Renew every bridged channel's subscription, make the missing ones, delete those of
        channels no longer bridged. One channel Graph refuses (deleted meanwhile, a tenant
        away) is logged and skipped: the others are still renewed. False if one failed."""
        failed = False
        lost: list[str] = []
        async with self._lock:
            entries = await self._load()
            try:
                bridged = {
                    p.remote_id
                    for p in await self._store.list_portals()
                    if p.mxid and parse_channel(p.remote_id) is not None
                }
                for portal_id in sorted(bridged | set(entries)):
                    try:
                        if await self._renew_one(entries, portal_id, portal_id in bridged):
                            lost.append(portal_id)
                    except asyncio.CancelledError:
                        raise
                    except Exception as err:
                        failed = True
                        self._log.warning(
                            "Cannot renew the subscription of channel %s: %s", portal_id, err
                        )
            finally:
                await self._save(entries)
        for portal_id in lost:
            if self.missed is not None:
                await self.missed(portal_id)
        return not failed

    async def _renew_one(
        self, entries: dict[str, dict[str, str | float]], portal_id: str, bridged: bool
    ) -> bool:
        """Renew, make or delete one channel's subscription in ``entries``; True if Graph had
        forgotten it (its notifications were lost: the channel is caught up)."""
        entry = entries.get(portal_id)
        link = await self._net.tenant_for_chat(portal_id)
        if not bridged:
            young = entry is not None and time.time() - float(entry["since"]) < GRACE_S
            if entry is not None and not young:
                await _delete(link, str(entry["id"]))
                entries.pop(portal_id)
            return False
        if entry is not None:
            expires = datetime.now(UTC) + timedelta(minutes=self._net.cfg.subscription_minutes)
            try:
                await link.app.subscriptions.by_subscription_id(str(entry["id"])).patch(
                    Subscription(expiration_date_time=expires)
                )
                return False
            except APIError as err:
                if err.response_status_code != 404:
                    raise
        entries[portal_id] = await self._create(link, portal_id)
        return entry is not None

    async def lifecycle(self, event: str, subscription_id: str) -> bool:
        """Answer Graph's lifecycle ``event`` for ``subscription_id`` if it is one of ours
        (False if not: a chat subscription's). ``missed`` is left to the caller."""
        portal_id = await self.owner(subscription_id)
        if portal_id is None or event not in ("reauthorizationRequired", "subscriptionRemoved"):
            return False
        if event == "reauthorizationRequired":
            link = await self._net.tenant_for_chat(portal_id)
            await link.app.subscriptions.by_subscription_id(subscription_id).reauthorize.post()
            return True
        async with self._lock:
            entries = await self._load()
            entries.pop(portal_id, None)
            await self._save(entries)
        await self.renew()
        if self.missed is not None:
            await self.missed(portal_id)
        return True

    async def keep(self) -> None:
        """Background loop: renew at a third of the lifetime; retry failures with backoff."""
        lifetime = self._net.cfg.subscription_minutes * 60
        delay = 5.0
        while True:
            try:
                if not await self.renew():
                    raise RuntimeError("a channel's subscription was not renewed")
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self._log.warning(
                    "Cannot renew the channel subscriptions (%s); retrying in %.0f s", err, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 600)
                continue
            delay = 5.0
            await asyncio.sleep(max(lifetime / 3, 30))


async def _delete(link: TenantLink, sub_id: str) -> None:
    with contextlib.suppress(APIError):  # gone already: nothing to delete
        await link.app.subscriptions.by_subscription_id(sub_id).delete()
