"""``login teams``: the device-code flow, driven from the management room.

The bot shows Microsoft's verification URL and a code; the user approves in a browser (any
device, MFA as their organisation requires) and answers ``done``. Only then does the bridge ask
the token endpoint, once, so no background poller outlives an abandoned login.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.core import BridgeError, LoginStep, PermanentError
from bridge.portal.models import Login
from bridge.teams import tokens
from bridge.teams.errors import graph_call
from bridge.teams.ids import NETWORK, login_id
from bridge.teams.network import TeamsNetwork
from bridge.teams.protocol import TokenError
from bridge.teams.protocol.msal_auth import MsalTokenProvider, UserTokens, raise_for
from bridge.teams.relay_login import relay_signed_in
from bridge.teams.tenant import TenantLink


class DeviceCodeLogin:
    def __init__(self, net: TeamsNetwork, user_mxid: str) -> None:
        self._net = net
        self._user = user_mxid
        self._link: TenantLink | None = None
        self._code: dict[str, Any] | None = None
        self._tokens: UserTokens | None = None

    async def submit(self, answer: str | None) -> LoginStep:
        links = self._allowed_tenants()
        if self._link is None:
            if len(links) == 1:
                self._link = links[0]
            elif answer is None:
                choices = "\n".join(f"{i}. `{t.id}`" for i, t in enumerate(links, 1))
                return LoginStep(
                    kind="user_input",
                    instructions=f"Which organisation? Answer with its number:\n{choices}",
                )
            else:
                self._link = self._choose(answer, links)
                answer = None
        if self._code is None:
            return await self._start()
        return await self._finish()

    def _allowed_tenants(self) -> list[TenantLink]:
        """The organisations ``bridge.federation`` lets this Matrix user reach; the login is
        refused, with the reason, if there is none."""
        policy = self._net.ctx.federation
        links = list(self._net.tenants.values())
        allowed = [t for t in links if policy.allows(NETWORK, t.tenant.tenant_id, self._user)]
        if not allowed:
            refused = policy.refusal(NETWORK, links[0].tenant.tenant_id, self._user, entry="login")
            assert refused is not None  # allows() said no
            raise PermanentError(
                f"teams login refused: {refused}", user_message=refused.user_message
            )
        return allowed

    @staticmethod
    def _choose(answer: str, links: list[TenantLink]) -> TenantLink:
        text = answer.strip().lower()
        for index, link in enumerate(links, 1):
            if text in (str(index), link.id):
                return link
        raise BridgeError(f"no tenant {text!r}", user_message="Answer with one of the numbers.")

    async def _start(self) -> LoginStep:
        assert self._link is not None
        # MSAL is synchronous: its calls run in a thread (bridge.teams.protocol.msal_auth).
        self._tokens = tokens.user_tokens(self._net.cfg, self._link.tenant)
        try:
            self._code = await asyncio.to_thread(self._tokens.start_device_flow)
        except TokenError as err:
            raise BridgeError(
                f"device code refused: {err}",
                user_message="Microsoft refused to start a login; ask the bridge administrator"
                " to allow public client flows on the Teams app registration.",
            ) from err
        url = self._code.get("verification_uri", "https://microsoft.com/devicelogin")
        code = self._code.get("user_code", "")
        return LoginStep(
            kind="user_input",
            instructions=f"Open {url} and enter the code **{code}**, sign in with your Teams"
            " account, then answer `done` here.",
        )

    async def _finish(self) -> LoginStep:
        assert self._link is not None and self._code is not None and self._tokens is not None
        user = self._tokens
        try:
            raise_for(await asyncio.to_thread(user.poll_device_flow, self._code))
        except TokenError as err:
            if err.error in ("authorization_pending", "slow_down"):
                raise BridgeError(
                    "not approved yet",
                    user_message="Microsoft has not seen your approval yet. Enter the code, then"
                    " answer `done` again.",
                ) from err
            self._code = None
            raise BridgeError(
                f"device code failed: {err.error}",
                user_message=f"The login did not work ({err.error}). Send `cancel`, then"
                " `login teams` to start over.",
            ) from err
        tenant = self._link.tenant
        provider = MsalTokenProvider(user.silent, tokens.allowed_hosts(self._net.cfg, tenant))
        me = await graph_call("read your profile", self._link.graph(provider).me.get())
        if me is None or not me.id:
            raise BridgeError("no /me", user_message="Teams did not say who you are; try again.")
        if relay_step := await relay_signed_in(self._link, user, me.user_principal_name):
            return relay_step
        # Notifications of this account's chats start now, before the login is stored.
        await self._link.watch(me.id)
        login = Login(
            network=NETWORK,
            login_id=login_id(me.id),
            user_mxid=self._user,
            remote_name=me.display_name or me.user_principal_name,
            # The MSAL token cache (refresh token inside): the store seals it.
            metadata={"tenant_id": tenant.tenant_id, "token_cache": user.serialize()},
        )
        return LoginStep(
            kind="complete",
            instructions=f"Logged in to Teams as {login.remote_name}. Your Teams chats with"
            " people of your organisation appear here as rooms when someone writes.",
            login=login,
        )

    async def cancel(self) -> None:
        self._code = None
