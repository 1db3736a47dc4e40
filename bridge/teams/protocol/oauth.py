"""A hand-written OAuth client for the identity platform's token endpoint, over aiohttp.

The bridge gets its tokens from MSAL (:mod:`.msal_auth`); this stays for scripts and tests that
talk to the Graph emulator over plain http (MSAL accepts only https authorities), and for
:class:`TokenError`, the identity platform's refusal as both clients report it.

Kiota sends a token only to ``allowed_hosts`` and, outside localhost/127.0.0.1/::1, only
over https.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import aiohttp
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator


class TokenError(Exception):
    """The token endpoint said no; ``error`` is OAuth2's code (invalid_grant, …)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


class OAuthTokenProvider(AccessTokenProvider):
    """Gets, caches and renews an access token from ``{authority}/{tenant}/oauth2/v2.0/token``.

    Built with one of the grant constructors; when a response carries a refresh token, later
    renewals use it (that is how a device-code or password login stays alive)."""

    # Renew this many seconds before the token expires.
    MARGIN = 60.0

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token_url: str,
        form: Mapping[str, str],
        allowed_hosts: list[str],
    ) -> None:
        self._session = session
        self._token_url = token_url
        self._form = dict(form)
        self._hosts = AllowedHostsValidator(allowed_hosts)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.last_response: dict[str, Any] = {}

    @staticmethod
    def token_url(authority: str, tenant: str) -> str:
        return f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token"

    @classmethod
    def client_credentials(
        cls,
        session: aiohttp.ClientSession,
        authority: str,
        tenant: str,
        client_id: str,
        client_secret: str,
        *,
        allowed_hosts: list[str],
        resource: str = "https://graph.microsoft.com",
    ) -> OAuthTokenProvider:
        """App-only tokens (``{resource}/.default``)."""
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": f"{resource}/.default",
        }
        return cls(session, cls.token_url(authority, tenant), form, allowed_hosts)

    @classmethod
    def password(
        cls,
        session: aiohttp.ClientSession,
        authority: str,
        tenant: str,
        client_id: str,
        username: str,
        password: str,
        scopes: list[str],
        *,
        allowed_hosts: list[str],
        client_secret: str | None = None,
    ) -> OAuthTokenProvider:
        """Delegated tokens for a relay account (ROPC); ``offline_access`` is added."""
        form = {
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": password,
            "scope": " ".join([*scopes, "offline_access"]),
        }
        if client_secret is not None:
            form["client_secret"] = client_secret
        return cls(session, cls.token_url(authority, tenant), form, allowed_hosts)

    @classmethod
    def refresh_token(
        cls,
        session: aiohttp.ClientSession,
        authority: str,
        tenant: str,
        client_id: str,
        refresh_token: str,
        *,
        allowed_hosts: list[str],
        client_secret: str | None = None,
    ) -> OAuthTokenProvider:
        """Delegated tokens from a stored refresh token (e.g. after a device-code login)."""
        form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": refresh_token,
        }
        if client_secret is not None:
            form["client_secret"] = client_secret
        return cls(session, cls.token_url(authority, tenant), form, allowed_hosts)

    @property
    def refresh_token_value(self) -> str | None:
        """The newest refresh token, for the caller to store."""
        if self._form.get("grant_type") == "refresh_token":
            return self._form["refresh_token"]
        return None

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        if not self._hosts.is_url_host_valid(uri):
            return ""
        parsed = urlparse(uri)
        if parsed.scheme != "https" and parsed.hostname not in {"localhost", "127.0.0.1", "::1"}:
            raise ValueError("Only https is supported outside localhost")
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires - self.MARGIN:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (after the resource server rejected it)."""
        self._token = None

    async def _fetch(self) -> None:
        async with self._session.post(self._token_url, data=self._form) as response:
            body = await response.json(content_type=None)
        if response.status != 200 or "access_token" not in body:
            raise TokenError(
                response.status, str(body.get("error")), str(body.get("error_description"))
            )
        self.last_response = body
        self._token = str(body["access_token"])
        self._expires = time.monotonic() + float(body.get("expires_in", 3600))
        if "refresh_token" in body:
            self._form = {
                k: v for k, v in self._form.items() if k in {"client_id", "client_secret"}
            } | {"grant_type": "refresh_token", "refresh_token": str(body["refresh_token"])}

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


async def start_device_code(
    session: aiohttp.ClientSession, authority: str, tenant: str, client_id: str, scopes: list[str]
) -> dict[str, Any]:
    """Begin a device-code login; show ``message`` to the user, then :func:`poll_device_code`."""
    url = f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/devicecode"
    form = {
        "client_id": client_id,
        "scope": " ".join([*scopes, "offline_access", "openid", "profile"]),
    }
    async with session.post(url, data=form) as response:
        body: dict[str, Any] = await response.json(content_type=None)
    if response.status != 200:
        raise TokenError(
            response.status, str(body.get("error")), str(body.get("error_description"))
        )
    return body


async def poll_device_code(
    session: aiohttp.ClientSession,
    authority: str,
    tenant: str,
    client_id: str,
    device_code: str,
    *,
    interval: float,
    give_up_after: float,
) -> dict[str, Any]:
    """Poll until the user approved (returns the token response) or failed, or
    ``give_up_after`` seconds passed."""
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "client_id": client_id,
        "device_code": device_code,
    }
    deadline = time.monotonic() + give_up_after
    while True:
        async with session.post(
            OAuthTokenProvider.token_url(authority, tenant), data=form
        ) as response:
            body: dict[str, Any] = await response.json(content_type=None)
        if response.status == 200:
            return body
        error = str(body.get("error"))
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending" or time.monotonic() + interval > deadline:
            raise TokenError(response.status, error, str(body.get("error_description")))
        await asyncio.sleep(interval)
