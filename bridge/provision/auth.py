"""Who is calling the provisioning API, and may they.

Two ways to say who you are, both as ``Authorization: Bearer <token>``:

- the shared secret of ``provisioning.shared_secret``, plus ``?user_id=@you:server`` naming the
  Matrix user the caller acts for (an integration manager, a web portal of the agency);
- the user's own Matrix access token, which the bridge checks with the homeserver
  (``GET /_matrix/client/v3/account/whoami``) and remembers for ``cache_seconds``. A
  ``user_id`` given with it must be that user.

Then ``bridge.permissions`` decides, as for the management room: at least ``user`` to use the
API at all, ``admin`` for the admin endpoints. The bridge bot and the ghosts never act through
it. The token itself is never logged, and only its SHA-256 is kept in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bridge.core.agencies import NOBODY, Scope
from bridge.core.permissions import Permissions
from bridge.provision.errors import ApiError, bad_request, forbidden

MXID = re.compile(r"^@[a-z0-9._=/+\-]+:[A-Za-z0-9.\-\[\]:]+$")
"""As ``openapi.yaml`` has it (at most 512 characters)."""
LEVEL_NAMES = {Permissions.RELAY: "relay", Permissions.USER: "user", Permissions.ADMIN: "admin"}
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Actor:
    """The Matrix user a request acts for, and their level in ``bridge.permissions``."""

    mxid: str
    level: int
    via: str
    """``shared_secret`` or ``access_token``."""
    scope: Scope = NOBODY
    """What the user administers: everything (a bridge admin), their agencies, or nothing."""

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES.get(self.level, "none")


def unauthorized(error: str, errcode: str = "M_UNKNOWN_TOKEN") -> ApiError:
    return ApiError(401, errcode, error)


class Authenticator:
    def __init__(
        self,
        *,
        shared_secret: str | None,
        permissions: Permissions,
        http: aiohttp.ClientSession,
        homeserver_url: str,
        is_puppet: Callable[[str], bool],
        log: logging.Logger,
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = shared_secret.encode() if shared_secret else None
        self._permissions = permissions
        self._http = http
        self._whoami_url = f"{homeserver_url.rstrip('/')}/_matrix/client/v3/account/whoami"
        self._is_puppet = is_puppet
        self._log = log
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._known: dict[bytes, tuple[float, str | None]] = {}
        """SHA-256 of a token → (until when, its user or None for a token the homeserver
        refused)."""

    async def actor(
        self, request: web.Request, *, admin: bool = False, query: tuple[str, ...] = ()
    ) -> Actor:
        """The acting user of ``request``; raises 401/400/403 :class:`ApiError` otherwise.
        ``query``: the parameters the endpoint takes besides ``user_id``; others are refused."""
        token = _bearer(request)
        by_secret = self._secret is not None and hmac.compare_digest(token.encode(), self._secret)
        # Who the token is comes first: a caller without a valid one learns nothing else.
        token_user = None if by_secret else await self._whoami(token)
        user_id = _query(request, query).get("user_id")
        if user_id is not None and (len(user_id) > 512 or not MXID.fullmatch(user_id)):
            raise bad_request(
                "`user_id` is not a Matrix user id (@user:server).", "M_INVALID_PARAM"
            )
        if token_user is None:
            if user_id is None:
                raise bad_request(
                    "With the shared secret, `user_id` must name the user to act for.",
                    "M_MISSING_PARAM",
                )
            mxid, via = user_id, "shared_secret"
        else:
            if user_id is not None and user_id != token_user:
                raise forbidden(f"This access token belongs to {token_user}, not {user_id}.")
            mxid, via = token_user, "access_token"
        if self._is_puppet(mxid):
            raise forbidden(f"{mxid} is a user of the bridge itself.")
        level = self._permissions.level(mxid)
        if level < Permissions.USER:
            raise forbidden(f"{mxid} may not use this bridge (bridge.permissions).")
        scope = self._permissions.admin_scope(mxid)
        if admin and not scope:
            raise forbidden(
                "Only bridge admins may do this (the admin level in bridge.permissions), or an "
                "agency's admins for what belongs to their agency (bridge.agencies)."
            )
        return Actor(mxid, level, via, scope)

    async def _whoami(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        known = self._known.get(digest)
        if known is not None and known[0] > now:
            if known[1] is None:
                raise unauthorized("The homeserver does not know this access token.")
            return known[1]
        mxid = await self._ask_homeserver(token)
        if len(self._known) >= _CACHE_LIMIT:
            self._known.clear()
        # A refusal is remembered briefly, so that a flood of bad tokens is not a flood of
        # requests to the homeserver; a new token still works a few seconds later.
        self._known[digest] = (now + (self._cache_seconds if mxid else 5.0), mxid)
        if mxid is None:
            raise unauthorized("The homeserver does not know this access token.")
        return mxid

    async def _ask_homeserver(self, token: str) -> str | None:
        # Never with ?user_id=: with an appservice token that would act as anyone.
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._http.get(
                self._whoami_url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                if resp.status in (401, 403):
                    return None
                body: Any = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            self._log.warning("Cannot check an access token with the homeserver: %s", err)
            raise ApiError(
                502, "M_UNKNOWN", "The homeserver could not be asked about this token."
            ) from None
        user = body.get("user_id") if isinstance(body, dict) else None
        if not isinstance(user, str) or not MXID.fullmatch(user):
            self._log.warning("The homeserver answered whoami with HTTP %d", resp.status)
            raise ApiError(502, "M_UNKNOWN", "The homeserver could not check this token.")
        return user


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once, none unknown: a typo is an error, not a
    silently different request."""
    known = {"user_id", *allowed}
    for key in request.query:
        if key not in known:
            raise bad_request(f"Unknown query parameter `{key[:64]}`.", "M_INVALID_PARAM")
        if len(request.query.getall(key)) > 1:
            raise bad_request(f"`{key}` is given more than once.", "M_INVALID_PARAM")
    return dict(request.query)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise unauthorized("Send `Authorization: Bearer <token>`.", "M_MISSING_TOKEN")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be `Bearer <token>`.", "M_MISSING_TOKEN")
    token = token.strip()
    # Secrets and Matrix access tokens are printable ASCII; anything else is no token of ours
    # (and could not even be sent on to the homeserver).
    if len(token) > 4096 or not (token.isascii() and token.isprintable()):
        raise unauthorized("The homeserver does not know this access token.")
    return token
