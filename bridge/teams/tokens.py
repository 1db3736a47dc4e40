"""A tenant's tokens as the configuration says: its cloud's authority and Graph, the app's
secret or certificate, Matrix users' sign-ins, and the relay account's sign-in kept sealed.

The relay account signs in once with a device code, like any Teams user (``login teams``, as
that account), so MFA and Conditional Access apply to it as to everyone. Its MSAL token cache
(which holds the refresh token) is kept in the connector's key-value store sealed with the
pickle key (:meth:`bridge.portal.network_store.NetworkStore.sealed_set`), never unsealed on
disk. A configuration that still names ``relay_password`` signs in with it (ROPC) while no
device-code sign-in is stored; that path cannot satisfy MFA and is deprecated.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from bridge.portal import NetworkStore
from bridge.teams.cloud_config import Endpoints, endpoints
from bridge.teams.config import DELEGATED_SCOPES, TeamsConfig, TenantConfig
from bridge.teams.protocol.msal_auth import (
    Authority,
    MsalTokenProvider,
    UserTokens,
    app_tokens,
    certificate_credential,
)


def tenant_endpoints(cfg: TeamsConfig, tenant: TenantConfig) -> Endpoints:
    return endpoints(
        tenant.cloud, tenant.authority_host, tenant.graph_endpoint, cfg.authority, cfg.graph_url
    )


def authority(cfg: TeamsConfig, tenant: TenantConfig) -> Authority:
    where = tenant_endpoints(cfg, tenant)
    return Authority(
        where.authority_host, tenant.tenant_id, tenant.client_id, where.graph_resource, cfg.ca_file
    )


def graph_url(cfg: TeamsConfig, tenant: TenantConfig) -> str:
    return tenant_endpoints(cfg, tenant).graph_url


def allowed_hosts(cfg: TeamsConfig, tenant: TenantConfig) -> list[str]:
    """The hosts that get a token: the tenant's Graph only, never the authority or others."""
    return [urlparse(graph_url(cfg, tenant)).hostname or ""]


def app_credential(tenant: TenantConfig) -> str | dict[str, Any]:
    if tenant.certificate_file:
        return certificate_credential(tenant.certificate_file, tenant.certificate_password)
    return tenant.client_secret


def app_provider(cfg: TeamsConfig, tenant: TenantConfig) -> MsalTokenProvider:
    """The tenant's app-only tokens (subscriptions, reads)."""
    return app_tokens(authority(cfg, tenant), app_credential(tenant), allowed_hosts(cfg, tenant))


def user_tokens(cfg: TeamsConfig, tenant: TenantConfig, cache: str | None = None) -> UserTokens:
    """A Teams account's sign-in (a Matrix user's or the relay's), from its stored cache."""
    return UserTokens(authority(cfg, tenant), DELEGATED_SCOPES, cache)


NOT_SIGNED_IN = (
    "the relay account {upn} is not signed in: send `login teams` to the bridge bot and sign in"
    " as {upn}"
)


class RelaySignIn:
    """The relay account's tokens: its stored device-code sign-in, else (deprecated) its
    configured password."""

    def __init__(
        self, cfg: TeamsConfig, tenant: TenantConfig, store: NetworkStore, log: logging.Logger
    ) -> None:
        self._cfg = cfg
        self._tenant = tenant
        self._store = store
        self._log = log
        self.tokens = user_tokens(cfg, tenant)
        self._loaded = False
        self.provider = MsalTokenProvider(
            self._acquire, allowed_hosts(cfg, tenant), changed=self._changed, prepare=self.load
        )

    @property
    def key(self) -> str:
        return f"relay-sign-in:{self._tenant.tenant_id}"

    @property
    def username(self) -> str:
        return self._tenant.relay_username.lower()

    async def load(self) -> None:
        """Read the sealed sign-in once. One that cannot be unsealed (another pickle key, a
        damaged row) is reported and ignored: the relay must sign in again."""
        if self._loaded:
            return
        try:
            cache = await self._store.sealed_get(self.key)  # the database away: tried again
        except ValueError as err:
            self._loaded = True
            self._log.error(
                "Tenant %s: the relay account's sign-in cannot be unsealed (%s); %s",
                self._tenant.tenant_id, err, NOT_SIGNED_IN.format(upn=self.username),
            )  # fmt: skip
            return
        self._loaded = True
        if cache:
            self.tokens = user_tokens(self._cfg, self._tenant, cache)
        elif not self._tenant.relay_password:
            self._log.warning("Tenant %s: %s", self._tenant.tenant_id,
                              NOT_SIGNED_IN.format(upn=self.username))  # fmt: skip

    def _acquire(self, force: bool) -> dict[str, Any]:
        """In a worker thread (MSAL is synchronous)."""
        tokens = self.tokens
        if tokens.app().get_accounts():
            return tokens.silent(force)
        if self._tenant.relay_password:
            return tokens.password(self._tenant.relay_username, self._tenant.relay_password)
        return {
            "error": "interaction_required",
            "error_description": NOT_SIGNED_IN.format(upn=self.username),
        }

    async def _changed(self) -> None:
        if self.tokens.changed:
            await self._save(self.tokens.serialize())

    async def _save(self, cache: str) -> None:
        try:
            await self._store.sealed_set(self.key, cache)
        except Exception as err:  # no pickle key, the database away: the token still serves
            self._log.error(
                "Tenant %s: the relay account's sign-in is not kept (%s)",
                self._tenant.tenant_id,
                err,
            )

    async def signed_in(self, tokens: UserTokens) -> None:
        """The relay account completed a device-code sign-in (``login teams``): use it from
        now on and keep it, sealed. ValueError if it cannot be kept (no pickle key)."""
        await self._store.sealed_set(self.key, tokens.serialize())
        self.tokens = tokens
        self._loaded = True
        self.provider.invalidate()


class LoginSignIn:
    """A Matrix user's Teams sign-in (``login teams``): the MSAL token cache in the login's
    metadata under ``token_cache``, which the store seals (its key names a token). A login
    stored before MSAL holds a bare ``refresh_token``: it is moved into the cache at first use
    and then dropped."""

    def __init__(
        self,
        cfg: TeamsConfig,
        tenant: TenantConfig,
        metadata: dict[str, Any],
        save: Callable[[], Awaitable[None]],
    ) -> None:
        self._metadata = metadata
        self._save = save
        cache = metadata.get("token_cache")
        self.tokens = user_tokens(cfg, tenant, str(cache) if cache else None)
        self.provider = MsalTokenProvider(
            self._acquire, allowed_hosts(cfg, tenant), changed=self._changed
        )

    def _acquire(self, force: bool) -> dict[str, Any]:
        legacy = str(self._metadata.get("refresh_token") or "")
        if legacy and not self.tokens.app().get_accounts():
            return self.tokens.import_refresh_token(legacy)
        return self.tokens.silent(force)

    async def _changed(self) -> None:
        if self.tokens.changed:
            self._metadata["token_cache"] = self.tokens.serialize()
            self._metadata.pop("refresh_token", None)
            await self._save()
