"""Tokens from the Microsoft identity platform through MSAL, Microsoft's own library.

MSAL does what a hand-written OAuth client gets wrong: certificate credentials (a client
assertion signed with the app's key, SHA-256 thumbprint, PS256), the device-code flow, the
token cache with refresh-token rotation, the authority of each national cloud. It is
synchronous (``requests``): every call that may touch the network, building an application
included (it reads the authority's OpenID configuration), runs in a worker thread
(:func:`asyncio.to_thread`) so the event loop never waits on the identity platform.

MSAL insists on an https authority. Against the Graph emulator, tests serve the identity
platform over https with a test CA and name it in ``ca_file`` (MSAL's ``verify``); instance
discovery is off (``instance_discovery=False``) because the authority is configured, not
guessed, and the emulator is not a host Microsoft's discovery knows.

Kiota asks :class:`MsalTokenProvider` for a token per request; the provider keeps the last one
until a minute before it expires, so most requests do not hop to a thread at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msal
import requests
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator

from .oauth import TokenError

Acquire = Callable[[bool], dict[str, Any]]
"""Get a token (``True``: not from the cache); MSAL's result dict, ``error`` on failure."""


@dataclass(frozen=True, slots=True)
class Authority:
    """Where one tenant's app gets tokens, and for which Graph."""

    host: str
    """``https://login.microsoftonline.com``, ``https://login.microsoftonline.us``, …"""
    tenant_id: str
    client_id: str
    graph_resource: str
    """The Graph the tokens are for (their ``aud``): ``https://graph.microsoft.us``, …"""
    ca_file: str = ""
    """A CA bundle to trust for ``host`` instead of the system's (a test CA, a TLS proxy)."""

    @property
    def url(self) -> str:
        return f"{self.host.rstrip('/')}/{self.tenant_id}"

    @property
    def app_scope(self) -> str:
        return f"{self.graph_resource}/.default"

    def delegated(self, scopes: list[str]) -> list[str]:
        """``Chat.ReadWrite`` → ``https://graph.microsoft.us/Chat.ReadWrite``: without the
        prefix Entra ID would take the global Graph, the wrong audience in a national cloud."""
        return [s if "://" in s else f"{self.graph_resource}/{s}" for s in scopes]

    def msal_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "authority": self.url,
            "instance_discovery": False,
            "timeout": TIMEOUT,
        }
        if self.ca_file:
            options["http_client"] = _TrustingSession(self.ca_file)
        return options


TIMEOUT = 30.0
"""Seconds MSAL waits for the identity platform."""


class _TrustingSession(requests.Session):
    """MSAL's ``verify`` sets the session's CA bundle, which ``requests`` then replaces with
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment (set on many hosts): the
    bundle is passed with each request instead, which the environment does not override."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self._ca_file = ca_file

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self._ca_file
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(method, url, *args, **kwargs)


def certificate_credential(path: str, password: str = "") -> dict[str, Any]:
    """MSAL's ``client_credential`` for a certificate: a PKCS#12 file (``.pfx``/``.p12``) or a
    PEM file holding the private key and the certificate. MSAL computes the SHA-256 thumbprint
    from the certificate (sent as ``x5t#S256``, signed with PS256)."""
    if Path(path).suffix.lower() in (".pfx", ".p12"):
        credential: dict[str, Any] = {"private_key_pfx_path": path}
        if password:
            credential["passphrase"] = password
        return credential
    pem = Path(path).read_text(encoding="ascii")
    start = pem.find("-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise ValueError(f"{path}: no certificate (-----BEGIN CERTIFICATE-----) in the file")
    end = pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    credential = {"private_key": pem, "public_certificate": pem[start:end]}
    if password:
        credential["passphrase"] = password
    return credential


def _as_error(result: dict[str, Any]) -> TokenError:
    error = str(result.get("error") or "invalid_response")
    description = str(result.get("error_description") or "no access token in the answer")
    status = 401 if error == "invalid_client" else 400
    return TokenError(status, error, description)


def _guarded(acquire: Acquire) -> Acquire:
    """MSAL raises on an answer that is not JSON or not shaped like the identity platform's
    (ValueError, KeyError, …): a :class:`TokenError` saying so, transient like a 502."""

    def call(force: bool) -> dict[str, Any]:
        try:
            return acquire(force)
        except OSError:  # requests' errors: the identity platform unreachable
            raise
        except Exception as err:
            raise TokenError(
                502, "invalid_response", f"the identity platform's answer: {type(err).__name__}"
            ) from err

    return call


class MsalTokenProvider(AccessTokenProvider):
    """Kiota's token source, backed by one MSAL acquisition (app or signed-in user)."""

    # Renew this many seconds before the token expires.
    MARGIN = 60.0

    def __init__(
        self,
        acquire: Acquire,
        allowed_hosts: list[str],
        *,
        changed: Callable[[], Awaitable[None]] | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``changed``: called after each acquisition (to keep a changed token cache);
        ``prepare``: before each (to load a stored cache first)."""
        self._acquire = _guarded(acquire)
        self._hosts = AllowedHostsValidator(allowed_hosts)
        self._changed = changed
        self._prepare = prepare
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        if not self._hosts.is_url_host_valid(uri):
            return ""
        parsed = urlparse(uri)
        if parsed.scheme != "https" and parsed.hostname not in {"localhost", "127.0.0.1", "::1"}:
            raise ValueError("Only https is supported outside localhost")
        return await self.token()

    async def token(self, *, force: bool = False) -> str:
        """The current access token; ``force``: a new one from the identity platform."""
        async with self._lock:
            if force or self._token is None or time.monotonic() >= self._expires - self.MARGIN:
                await self._fetch(force)
            assert self._token is not None
            token = self._token
        return token

    async def refreshed(self, rejected: str) -> str:
        """A token to replace ``rejected``, which Graph refused (401): a new one, unless
        another request has already replaced it meanwhile."""
        async with self._lock:
            if self._token is not None and self._token != rejected:
                return self._token
            await self._fetch(True)
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the kept token (the next request asks MSAL, whose cache may still have it)."""
        self._token = None

    async def _fetch(self, force: bool) -> None:
        if self._prepare is not None:
            await self._prepare()
        result = await asyncio.to_thread(self._acquire, force)
        if "access_token" not in result:
            self._token = None
            raise _as_error(result)
        self._token = str(result["access_token"])
        self._expires = time.monotonic() + float(result.get("expires_in", 300))
        if self._changed is not None:
            await self._changed()

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


def app_tokens(
    authority: Authority, credential: str | dict[str, Any], allowed_hosts: list[str]
) -> MsalTokenProvider:
    """App-only tokens (client credentials: a secret or :func:`certificate_credential`)."""
    built: list[msal.ConfidentialClientApplication] = []

    def acquire(force: bool) -> dict[str, Any]:
        if not built:  # the constructor reads the OpenID configuration: in the thread
            built.append(
                msal.ConfidentialClientApplication(
                    authority.client_id, client_credential=credential, **authority.msal_options()
                )
            )
        app = built[0]
        if force:
            app.remove_tokens_for_client()
        result: dict[str, Any] = app.acquire_token_for_client([authority.app_scope])
        return result

    return MsalTokenProvider(acquire, allowed_hosts)


class UserTokens:
    """One Teams account's sign-in: MSAL's token cache (refresh token included) and the public
    client application that renews from it. The cache is what is kept, sealed, at rest
    (:meth:`serialize`); it is never logged."""

    def __init__(self, authority: Authority, scopes: list[str], cache: str | None = None) -> None:
        self.authority = authority
        self.scopes = authority.delegated(scopes)
        self.cache = msal.SerializableTokenCache()
        if cache:
            self.cache.deserialize(cache)
        self._app: msal.PublicClientApplication | None = None

    def app(self) -> msal.PublicClientApplication:
        """MSAL's application; call it in a thread (building it reads the authority)."""
        if self._app is None:
            self._app = msal.PublicClientApplication(
                self.authority.client_id, token_cache=self.cache, **self.authority.msal_options()
            )
        return self._app

    def serialize(self) -> str:
        return str(self.cache.serialize())

    @property
    def changed(self) -> bool:
        return bool(self.cache.has_state_changed)

    def silent(self, force: bool) -> dict[str, Any]:
        """A token from the cache, renewed with the refresh token when due (or ``force``)."""
        app = self.app()
        accounts = app.get_accounts()
        if not accounts:
            return {
                "error": "interaction_required",
                "error_description": "no signed-in account in the token cache; sign in again",
            }
        result = app.acquire_token_silent_with_error(self.scopes, accounts[0], force_refresh=force)
        return result or {
            "error": "interaction_required",
            "error_description": "the sign-in cannot be renewed; sign in again",
        }

    # --- signing in ------------------------------------------------------------------------

    def start_device_flow(self) -> dict[str, Any]:
        """Begin a device-code sign-in: show ``message`` (``verification_uri``, ``user_code``)."""
        flow: dict[str, Any] = self.app().initiate_device_flow(self.scopes)
        if "user_code" not in flow:
            raise _as_error(flow)
        return flow

    def poll_device_flow(self, flow: dict[str, Any]) -> dict[str, Any]:
        """Ask once whether the user approved (``authorization_pending`` if not yet): MSAL
        polls until ``expires_at``, which 0 makes a single request."""
        result: dict[str, Any] = self.app().acquire_token_by_device_flow(dict(flow, expires_at=0))
        return result

    def wait_device_flow(self, flow: dict[str, Any]) -> dict[str, Any]:
        """Poll until the user approved, declined, or the code expired (blocks its thread)."""
        result: dict[str, Any] = self.app().acquire_token_by_device_flow(flow)
        return result

    def import_refresh_token(self, refresh_token: str) -> dict[str, Any]:
        """A sign-in stored before MSAL (a bare refresh token) moved into the cache."""
        result: dict[str, Any] = self.app().acquire_token_by_refresh_token(
            refresh_token, self.scopes
        )
        return result

    def password(self, username: str, password: str) -> dict[str, Any]:
        """The legacy relay sign-in (ROPC): no MFA possible. Kept for configurations that
        still name ``relay_password``; the device-code sign-in replaces it."""
        host = urlparse(self.authority.host)
        if host.port is not None:
            # MSAL asks ``https://{hostname}/common/userrealm/…`` first, without the port, so
            # an authority on a port of its own (the emulator) is told to skip that question.
            skip = msal.authority.Authority._domains_without_user_realm_discovery
            skip.add(host.hostname)
        result: dict[str, Any] = self.app().acquire_token_by_username_password(
            username, password, self.scopes
        )
        return result

    def provider(
        self, allowed_hosts: list[str], save: Callable[[str], Awaitable[None]]
    ) -> MsalTokenProvider:
        """Kiota's provider for this account; ``save`` gets the serialized cache whenever MSAL
        changed it (a rotated refresh token must be kept, or the sign-in dies at restart)."""

        async def changed() -> None:
            if self.changed:
                await save(self.serialize())

        return MsalTokenProvider(self.silent, allowed_hosts, changed=changed)


def signed_in_as(result: dict[str, Any]) -> str:
    """The account's name (UPN) in a successful sign-in's id token claims, lowercase."""
    claims = result.get("id_token_claims") or {}
    return str(claims.get("preferred_username") or claims.get("upn") or "").lower()


def raise_for(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` if it holds an access token, else its error as a :class:`TokenError`."""
    if "access_token" not in result:
        raise _as_error(result)
    return result
