"""The Microsoft Teams connector: Graph change notifications in, delegated Graph calls out."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from bridge.core import (
    Capabilities,
    ConnectorContext,
    LoginFlow,
    LoginProcess,
    NetworkClient,
    NetworkInfo,
    PermanentError,
    PortalKey,
)
from bridge.portal.models import Login
from bridge.teams import tokens
from bridge.teams.channel_subscriptions import ChannelSubscriptions
from bridge.teams.client import TeamsSharedClient, TeamsUserClient
from bridge.teams.config import EXAMPLE_CONFIG, TeamsConfig
from bridge.teams.errors import as_bridge_error
from bridge.teams.ids import NETWORK
from bridge.teams.inbound import Inbound
from bridge.teams.login import DeviceCodeLogin
from bridge.teams.network import TeamsNetwork
from bridge.teams.protocol import TokenError, preload_models
from bridge.teams.service_catch_up import ServiceCatchUp
from bridge.teams.service_chat import service_chat_for
from bridge.teams.store import TeamsStore
from bridge.teams.tenant import TenantLink
from bridge.teams.webhook import NotificationEndpoint


class TeamsConnector:
    info = NetworkInfo(
        id=NETWORK, display_name="Microsoft Teams", url="https://teams.microsoft.com"
    )
    example_config = EXAMPLE_CONFIG
    # Last bridged edit time of a message, oldest message a bounded catch-up kept (inbound),
    # how far each service-chat request got (service_chat).
    kv_markers = (
        "edited:", "catch-up-floor:", "service-request:", "teams-upload:", "relay-chats-opened:"
    )  # fmt: skip
    # The core's relay mode leaves the text alone: from_matrix.as_posted puts the same
    # "External · via Matrix" line as our own relay path in front (a bare name could pass
    # for a colleague of the tenant's).
    marks_relayed_senders = True
    # Whoever joins a private or shared channel's room, even one who may not use the bridge,
    # is checked against the channel's members at once (bridge.teams.channel_members.joined).
    guards_joins = True

    def __init__(self) -> None:
        self._net: TeamsNetwork | None = None

    def capabilities(self) -> Capabilities:
        # threads: a team channel's replies (bridge.teams.channels); chats have none.
        return Capabilities(
            replies=True, threads=True, media=True, html=True, max_text_length=28_000
        )

    async def start(self, ctx: ConnectorContext) -> None:
        cfg = TeamsConfig.from_section(ctx.config)
        if problems := cfg.problems(ctx.config):
            raise PermanentError("; ".join(problems))
        store = TeamsStore(ctx.store.database)
        client_state = await ctx.store.kv_get("client_state")
        if client_state is None:
            client_state = secrets.token_urlsafe(48)
            await ctx.store.kv_set("client_state", client_state)
        links = [TenantLink(cfg, t, ctx.http, ctx.store, ctx.log) for t in cfg.tenants]
        net = self._net = TeamsNetwork(ctx, cfg, links)
        net.channel_subscriptions = ChannelSubscriptions(net, client_state)
        shared = TeamsSharedClient(net)
        inbound = Inbound(net, shared)
        inbound.set_client_state(client_state)
        # Service-chat requests (bridge.teams.service_chat) are answered before the inbound path,
        # and those written before the relay's subscription was in place are read then.
        service = service_chat_for(net, ctx.config, inbound.convert, inbound.ready)
        shared.converter = service.convert
        service_catch_up = ServiceCatchUp(net, service.cfg.enabled, inbound.subscription_state)
        for link in links:
            link.client_state = client_state  # for a login's subscription, made at once
            link.resubscribed = inbound.missed
            link.subscription_state = service_catch_up.subscription_state
        ctx.add_client(shared)
        # Notifications an older version kept in its own table go to the remote inbox first.
        if legacy := await store.legacy_notifications():
            ctx.log.info("Moving %d stored notification(s) to the remote inbox", len(legacy))
            await inbound.accept([i for i in legacy if "lifecycleEvent" not in i])
        await store.upgrade()
        # Queued ahead of anything the webhook accepts from now on, so what was missed while
        # the bridge was down reaches Matrix before what comes after it.
        try:
            await inbound.catch_up()
        except Exception as err:
            ctx.log.warning("Could not queue the catch-up of Teams chats: %s", err)
        endpoint = NotificationEndpoint(client_state, inbound.accept, ctx.log)
        # Coverage begins once every tenant's subscription is in place (subscription_state).
        ctx.add_http_handler("notifications", endpoint.handle)
        ctx.add_http_handler("lifecycle", endpoint.handle)
        ctx.background(inbound.coverage.keep_written(), name="catch-up-bound")
        ctx.background(shared.connect(), name="app-tokens")
        ctx.background(self._run(ctx, inbound, links, client_state), name="start")
        ctx.log.info(
            "Teams: %d tenant(s); Graph notifications expected at %s",
            len(links),
            cfg.notification_url,
        )

    @staticmethod
    async def _run(
        ctx: ConnectorContext, inbound: Inbound, links: list[TenantLink], client_state: str
    ) -> None:
        # Notifications are stored meanwhile; only converting them waits for the SDK's imports.
        await asyncio.to_thread(preload_models)
        inbound.ready.set()
        for link in links:
            ctx.background(link.keep_subscribed(client_state), name=f"subscription-{link.id}")
        if inbound.channels is not None:
            ctx.background(inbound.channels.subscriptions.keep(), name="channel-subscriptions")

    async def stop(self) -> None:
        if self._net is not None:
            for link in self._net.tenants.values():
                await link.close()

    async def check(self, section: dict[str, Any]) -> list[str]:
        cfg = TeamsConfig.from_section(section)
        problems = cfg.problems(section)
        if problems:  # a missing credential or an expired certificate: said, not tried
            return problems
        for index, tenant in enumerate(cfg.tenants):
            try:
                await tokens.app_provider(cfg, tenant).token()
            except TokenError as err:
                problems.append(f"connectors.teams.tenants[{index}]: {_explain(err)}")
            except Exception as err:
                reason = as_bridge_error(err, "token")
                host = tokens.tenant_endpoints(cfg, tenant).authority_host
                key = f"tenants[{index}]" if tenant.cloud or tenant.authority_host else "authority"
                problems.append(f"connectors.teams.{key}: cannot reach {host} ({reason})")
        return problems

    async def policy_domain(self, portal: PortalKey) -> str:
        """A Teams chat's remote side, for ``bridge.federation``: its tenant's id."""
        assert self._net is not None, "policy_domain before start"
        link = await self._net.tenant_for_chat(portal.remote_id)
        return link.tenant.tenant_id.lower()

    def login_flows(self) -> list[LoginFlow]:
        return [
            LoginFlow(
                id="device-code",
                name="Device code",
                description="Sign in with your Teams account in a browser, with a one-time code",
            )
        ]

    async def start_login(self, user_mxid: str, flow_id: str) -> LoginProcess:
        assert self._net is not None, "start_login before start"
        return DeviceCodeLogin(self._net, user_mxid)

    async def load_login(self, login: Login) -> NetworkClient:
        assert self._net is not None, "load_login before start"
        return TeamsUserClient(self._net, login)


def _explain(err: TokenError) -> str:
    """An identity-platform refusal in words an operator can act on (no secrets)."""
    description = err.description.split("\r\n")[0].split(" Trace ID")[0]
    if "AADSTS700027" in err.description:
        return f"the certificate is not the app's or has expired ({description})"
    if "AADSTS500011" in err.description:
        return f"the tenant's cloud is wrong: its Graph is another ({description})"
    if "AADSTS7000215" in err.description or err.error == "invalid_client":
        return f"the client secret is wrong or expired ({description})"
    if "AADSTS90002" in err.description or (err.status == 400 and "tenant" in description.lower()):
        return f"unknown tenant ({description})"
    if "AADSTS700016" in err.description:
        return f"unknown client_id in this tenant ({description})"
    return f"the identity platform refused the app ({err.error}: {description})"
