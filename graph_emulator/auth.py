"""The identity platform (login.microsoftonline.com) and the bearer check in front of Graph.

Supports the grants a bridge uses: client_credentials (app-only, for subscriptions and reads;
the app proves itself with its secret or a certificate-signed client assertion, see
``assertions``),
password (ROPC, for a relay "bridge user"), refresh_token, and the device code flow (how a
Matrix user logs in their own Teams account from a chat bot). Answers and errors are shaped
like Entra ID's, AADSTS codes included, because client libraries branch on ``error``.

Access tokens look like JWTs (so logs and jwt.io show their claims) but are not signed: the
emulator only accepts tokens it issued, by looking them up.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
from datetime import timedelta
from typing import Any

from aiohttp import web

from . import assertions
from .clouds import graph_resource, is_own_graph, scope_resource
from .config import EmulatorConfig
from .odata import WWW_AUTHENTICATE, GraphError, iso, new_guid, origin
from .state import App, DeviceCode, EmulatorState, RefreshGrant, TokenGrant, User

# Scopes that ask for OpenID Connect artefacts rather than Graph permissions.
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class OAuthError(Exception):
    """An identity-platform error: OAuth2's ``error`` plus an AADSTS-coded description."""

    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(f"{error}: AADSTS{aadsts}: {description}")
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description

    def response(self, clock_now: str) -> web.Response:
        trace_id, correlation_id = new_guid(), new_guid()
        body = {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.aadsts}: {self.description} Trace ID: {trace_id} "
                f"Correlation ID: {correlation_id} Timestamp: {clock_now}"
            ),
            "error_codes": [self.aadsts],
            "timestamp": clock_now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.aadsts}",
        }
        return web.json_response(body, status=self.status)


def _b64url(data: dict[str, Any]) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def _jwt(claims: dict[str, Any]) -> str:
    """JWT-shaped, unsigned: the third part is a random nonce that makes each token unique."""
    header = {"typ": "JWT", "alg": "none", "kid": "pontis-graph-emulator"}
    return f"{_b64url(header)}.{_b64url(claims)}.{secrets.token_urlsafe(24)}"


class IdentityPlatform:
    def __init__(self, state: EmulatorState, config: EmulatorConfig) -> None:
        self.state = state
        self.config = config

    # -- issuing ----------------------------------------------------------------------------

    def mint_access_token(
        self,
        app: App,
        user: User | None,
        scopes: frozenset[str],
        lifetime: float | None = None,
        audience: str | None = None,
    ) -> TokenGrant:
        """A token for the Graph of the app's tenant's cloud (or ``audience``, for tests)."""
        now = self.state.now()
        expires = now + timedelta(
            seconds=self.config.access_token_lifetime if lifetime is None else lifetime
        )
        tenant = self.state.tenants.get(app.tenant_id)
        aud = audience or graph_resource(tenant.cloud if tenant else "global")
        claims: dict[str, Any] = {
            "aud": aud,
            "iss": f"https://sts.windows.net/{app.tenant_id}/",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "idtyp": "user" if user else "app",
            "tid": app.tenant_id,
            "ver": "1.0",
        }
        if user is not None:
            claims.update(oid=user.id, upn=user.user_principal_name, name=user.display_name)
            claims["scp"] = " ".join(sorted(scopes))
        else:
            claims.update(oid=app.service_principal_id, roles=sorted(scopes))
        grant = TokenGrant(
            _jwt(claims),
            app.tenant_id,
            app.client_id,
            user.id if user else None,
            scopes,
            expires,
            audience=aud,
        )
        self.state.tokens[grant.token] = grant
        return grant

    def _token_response(
        self, app: App, user: User | None, scopes: frozenset[str], requested: set[str]
    ) -> dict[str, Any]:
        grant = self.mint_access_token(app, user, scopes)
        lifetime = self.config.access_token_lifetime
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": grant.token,
        }
        if user is None:
            return body
        # Who signed in, as Entra ID says it to MSAL (``client_info=1``): uid.utid keys its cache.
        body["client_info"] = _b64url({"uid": user.id, "utid": app.tenant_id})
        body["scope"] = " ".join(sorted(scopes | (requested & {"openid", "profile", "email"})))
        if "offline_access" in requested:
            refresh = "0.emu." + secrets.token_urlsafe(48)
            self.state.refresh_tokens[refresh] = RefreshGrant(
                app.tenant_id,
                app.client_id,
                user.id,
                scopes,
                self.state.now() + timedelta(seconds=self.config.refresh_token_lifetime),
            )
            body["refresh_token"] = refresh
        if "openid" in requested:
            now = int(self.state.now().timestamp())
            body["id_token"] = _jwt(
                {
                    "aud": app.client_id,
                    "iss": f"https://login.microsoftonline.com/{app.tenant_id}/v2.0",
                    "iat": now,
                    "nbf": now,
                    "exp": now + lifetime,
                    "name": user.display_name,
                    "oid": user.id,
                    "preferred_username": user.user_principal_name,
                    "sub": user.id,
                    "tid": app.tenant_id,
                    "ver": "2.0",
                }
            )
        return body

    # -- request parsing --------------------------------------------------------------------

    def _tenant_id(self, request: web.Request, app: App | None = None) -> str | None:
        """The tenant in the path; ``common``/``organizations`` resolve to the app's tenant."""
        segment = request.match_info["tenant"]
        if segment.lower() in {"common", "organizations"}:
            return app.tenant_id if app else None
        tenant = self.state.tenant(segment)
        if tenant is None:
            raise OAuthError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        return tenant.id

    def _client(self, request: web.Request, form: dict[str, str], *, secret_required: bool) -> App:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            with contextlib.suppress(ValueError, binascii.Error):
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        app = self.state.apps.get(client_id)
        tenant_id = self._tenant_id(request, app)
        if app is None or (tenant_id is not None and app.tenant_id != tenant_id):
            raise OAuthError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{request.match_info['tenant']}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in the tenant.",
            )
        self._check_resource(app, set(form.get("scope", "").split()))
        if "client_assertion" in form or "client_assertion_type" in form:
            self._check_assertion(request, app, form)
            return app
        if secret is None and (secret_required or not app.public_client):
            raise OAuthError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if secret is not None and not secrets.compare_digest(secret, app.client_secret):
            raise OAuthError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the "
                f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        return app

    def _check_assertion(self, request: web.Request, app: App, form: dict[str, str]) -> None:
        """A certificate credential (``assertions``) in place of the secret."""
        if form.get("client_assertion_type") != assertions.CLIENT_ASSERTION_TYPE:
            raise OAuthError(
                400,
                "invalid_request",
                50027,
                f"client_assertion_type must be '{assertions.CLIENT_ASSERTION_TYPE}'.",
            )
        base = origin(request, self.config.public_url)
        audiences = {
            f"{base}/{segment}/oauth2/v2.0/token"
            for segment in (request.match_info["tenant"], app.tenant_id)
        }
        try:
            assertions.verify(
                form.get("client_assertion", ""), app.client_id, app.certificates, audiences
            )
        except assertions.AssertionRefused as err:
            raise OAuthError(401, "invalid_client", err.aadsts, err.description) from err

    def _check_resource(self, app: App, requested: set[str]) -> None:
        """Every scope naming a resource names the Graph of the app's tenant's cloud: a US
        Government tenant asking for ``https://graph.microsoft.com/.default`` is refused, as
        Entra ID refuses a resource not in the tenant (AADSTS500011)."""
        tenant = self.state.tenants.get(app.tenant_id)
        cloud = tenant.cloud if tenant else "global"
        for resource in sorted({r for s in requested if (r := scope_resource(s))}):
            if not is_own_graph(resource, cloud):
                raise OAuthError(
                    400,
                    "invalid_resource",
                    500011,
                    f"The resource principal named {resource} was not found in the tenant named "
                    f"{app.tenant_id}. This can happen if the application has not been installed "
                    "by the administrator of the tenant or consented to by any user in the "
                    "tenant. You might have sent your authentication request to the wrong tenant.",
                )

    def _delegated_scopes(self, app: App, requested: set[str]) -> frozenset[str]:
        """Graph permissions granted for a delegated request; unconsented ones are refused."""
        wanted = {s for s in requested if s not in OIDC_SCOPES}
        if any(s == ".default" for s in wanted):
            return frozenset(app.delegated_permissions)
        missing = sorted(s for s in wanted if s not in app.delegated_permissions)
        if missing:
            raise OAuthError(
                400,
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{app.client_id}' named '{app.display_name}'. Send an interactive authorization "
                f"request for this user and resource. (Scopes not consented: {', '.join(missing)})",
            )
        return frozenset(wanted or ({"User.Read"} & app.delegated_permissions))

    # -- endpoints --------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        try:
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            grant_type = form.get("grant_type", "")
            requested = parse_scopes(form.get("scope", ""))
            if grant_type == "client_credentials":
                body = self._client_credentials(request, form, requested)
            elif grant_type == "password":
                body = self._password(request, form, requested)
            elif grant_type == "refresh_token":
                body = self._refresh(request, form, requested)
            elif grant_type == DEVICE_CODE_GRANT:
                body = self._device_code_redeem(request, form)
            else:
                raise OAuthError(
                    400,
                    "unsupported_grant_type",
                    70003,
                    f"The app requested an unsupported grant type '{grant_type}'.",
                )
        except OAuthError as exc:
            return exc.response(iso(self.state.now()) or "")
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _client_credentials(
        self, request: web.Request, form: dict[str, str], requested: set[str]
    ) -> dict[str, Any]:
        app = self._client(request, form, secret_required=True)
        if len(requested) != 1 or not next(iter(requested)) == ".default":
            raise OAuthError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope', '')} is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        return self._token_response(app, None, frozenset(app.application_permissions), requested)

    def _password(
        self, request: web.Request, form: dict[str, str], requested: set[str]
    ) -> dict[str, Any]:
        app = self._client(request, form, secret_required=False)
        user = self.state.find_user(form.get("username", ""), app.tenant_id)
        if user is None or not secrets.compare_digest(form.get("password", ""), user.password):
            raise OAuthError(
                400,
                "invalid_grant",
                50126,
                "Error validating credentials due to invalid username or password.",
            )
        return self._token_response(app, user, self._delegated_scopes(app, requested), requested)

    def _refresh(
        self, request: web.Request, form: dict[str, str], requested: set[str]
    ) -> dict[str, Any]:
        app = self._client(request, form, secret_required=False)
        grant = self.state.refresh_tokens.get(form.get("refresh_token", ""))
        if grant is None or grant.client_id != app.client_id:
            raise OAuthError(
                400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if grant.expires <= self.state.now():
            raise OAuthError(
                400,
                "invalid_grant",
                700082,
                "The refresh token has expired due to inactivity. The token was issued on "
                f"{iso(grant.expires - timedelta(seconds=self.config.refresh_token_lifetime))} and "
                "was inactive for 90.00:00:00.",
            )
        user = self.state.users.get(grant.user_id)
        if user is None:
            raise OAuthError(
                400, "invalid_grant", 50034, "The user account does not exist in the directory."
            )
        scopes = self._delegated_scopes(app, requested) if requested - OIDC_SCOPES else grant.scopes
        # A refresh always hands out a new refresh token, as Entra ID does.
        return self._token_response(app, user, scopes, requested | {"offline_access"})

    async def devicecode(self, request: web.Request) -> web.Response:
        try:
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            app = self._client(request, form, secret_required=False)
            requested = parse_scopes(form.get("scope", ""))
            self._delegated_scopes(app, requested)  # refuse unconsented scopes up front
        except OAuthError as exc:
            return exc.response(iso(self.state.now()) or "")
        user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
        code = DeviceCode(
            device_code="DAQAB" + secrets.token_urlsafe(48),
            user_code=user_code,
            tenant_id=app.tenant_id,
            client_id=app.client_id,
            scopes=tuple(sorted(requested)),
            expires=self.state.now() + timedelta(seconds=self.config.device_code_lifetime),
        )
        self.state.device_codes[code.device_code] = code
        verification_uri = f"{origin(request, self.config.public_url)}/_emulator/devicelogin"
        return web.json_response(
            {
                "user_code": user_code,
                "device_code": code.device_code,
                "verification_uri": verification_uri,
                "expires_in": self.config.device_code_lifetime,
                "interval": self.config.device_code_interval,
                "message": (
                    f"To sign in, use a web browser to open the page {verification_uri} and enter "
                    f"the code {user_code} to authenticate."
                ),
            }
        )

    def _device_code_redeem(self, request: web.Request, form: dict[str, str]) -> dict[str, Any]:
        app = self._client(request, form, secret_required=False)
        code = self.state.device_codes.get(form.get("device_code", ""))
        if code is None or code.client_id != app.client_id:
            raise OAuthError(
                400, "invalid_grant", 70000, "The provided value for 'device_code' is not valid."
            )
        if code.expires <= self.state.now():
            raise OAuthError(
                400,
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
            )
        if code.declined:
            del self.state.device_codes[code.device_code]
            raise OAuthError(
                400,
                "authorization_declined",
                70000,
                "The user declined to authorize the application.",
            )
        if code.approved_user_id is None:
            raise OAuthError(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        del self.state.device_codes[code.device_code]  # one redemption per code
        user = self.state.users[code.approved_user_id]
        requested = set(code.scopes)
        return self._token_response(app, user, self._delegated_scopes(app, requested), requested)

    def approve_device_code(
        self, user_code: str, user: User, *, decline: bool = False
    ) -> DeviceCode:
        code = next(
            (
                c
                for c in self.state.device_codes.values()
                if c.user_code == user_code.strip().upper()
            ),
            None,
        )
        if code is None or code.expires <= self.state.now():
            raise LookupError(f"no pending device code {user_code!r}")
        if user.tenant_id != code.tenant_id:
            raise LookupError(f"user {user.id} is not in the app's tenant {code.tenant_id}")
        if decline:
            code.declined = True
        else:
            code.approved_user_id = user.id
        return code

    async def openid_configuration(self, request: web.Request) -> web.Response:
        base = origin(request, self.config.public_url)
        tenant = request.match_info["tenant"]
        issuer_tenant = self.state.tenant(tenant)
        tid = issuer_tenant.id if issuer_tenant else "{tenantid}"
        return web.json_response(
            {
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                    "private_key_jwt",
                ],
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["none"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/{tid}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{base}/v1.0/me",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
                "grant_types_supported": [
                    "client_credentials",
                    "password",
                    "refresh_token",
                    DEVICE_CODE_GRANT,
                ],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "pontis.emulator",
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        # Tokens are unsigned; an empty key set tells a validating client so plainly.
        return web.json_response({"keys": []})

    # -- the bearer check in front of Graph -----------------------------------------------

    def authenticate(self, request: web.Request) -> TokenGrant:
        header = request.headers.get("Authorization", "")
        if not header:
            raise _unauthorized("Access token is empty.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("Access token validation failure. Invalid authorization header.")
        if token.count(".") != 2:
            raise _unauthorized(
                "IDX14100: JWT is not well formed, there are no dots (.). The token needs to be in "
                "JWS or JWE Compact Serialization Format."
            )
        grant = self.state.tokens.get(token.strip())
        if grant is None:
            raise _unauthorized("Access token validation failure. Invalid signature.")
        if grant.expires <= self.state.now():
            raise _unauthorized("Lifetime validation failed, the token is expired.")
        tenant = self.state.tenants.get(grant.tenant_id)
        if grant.audience != graph_resource(tenant.cloud if tenant else "global"):
            raise _unauthorized("Invalid audience.")
        return grant


def _unauthorized(message: str) -> GraphError:
    return GraphError(
        401, "InvalidAuthenticationToken", message, headers={"WWW-Authenticate": WWW_AUTHENTICATE}
    )


def parse_scopes(raw: str) -> set[str]:
    """Space-separated scopes with any resource prefix removed:
    ``https://graph.microsoft.com/Chat.Read`` → ``Chat.Read``, ``http://127.0.0.1/.default`` →
    ``.default`` (kiota derives the latter from the request host)."""
    scopes: set[str] = set()
    for item in raw.split():
        if "://" in item:
            item = item.rsplit("/", 1)[-1]
        if item:
            scopes.add(item)
    return scopes
