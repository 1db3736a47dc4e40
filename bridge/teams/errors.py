"""Graph failures as the core's errors: what the user is told and whether to retry."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
import httpx
from kiota_abstractions.api_error import APIError

from bridge.core import AuthExpired, BridgeError, NotFound, PermanentError, TransientError
from bridge.teams.protocol import TokenError

T = TypeVar("T")


def retry_after(err: APIError) -> float | None:
    headers = {k.lower(): v for k, v in (err.response_headers or {}).items()}
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


APP_REFUSED = (
    "Teams refused to let the bridge read this chat, so a message from Teams could not be"
    " bridged; an administrator must check the Teams app's permissions (Chat.Read.All)."
)


def as_bridge_error(
    err: Exception, what: str, *, delegated: bool = False, reading: bool = False
) -> BridgeError:
    """``err`` from a Graph call (``what``: "send to chat 19:…") as a :class:`BridgeError`.

    Graph away (429, 5xx, unreachable) is a :class:`TransientError`, waited for however long it
    takes; a refusal (403, other 4xx) is permanent. Anything unrecognised stays a plain
    :class:`BridgeError`, which the core retries a bounded number of times. ``reading``: the
    app token read something for a message from Teams (a 403 is then the app's permissions).
    """
    if isinstance(err, BridgeError):
        return err
    if isinstance(err, TokenError):
        if delegated and err.error in ("invalid_grant", "interaction_required"):
            return AuthExpired(f"{what}: token refused ({err.error})")
        if err.status >= 500 or err.status == 429:
            return TransientError(f"{what}: identity platform said {err.status}")
        if err.error == "interaction_required":  # the relay account has not signed in (yet)
            return PermanentError(
                f"{what}: {err.description}",
                user_message="The bridge's Teams relay account is not signed in, so this could"
                " not be sent; an administrator must sign it in (`login teams` as that account)"
                " and can then retry it (`pontis dead-letters`).",
            )
        return PermanentError(
            f"{what}: token refused ({err.error})",
            user_message="The bridge's Microsoft login was refused; an administrator must check"
            " the Teams app registration (`pontis check`).",
        )
    if isinstance(err, APIError):
        status = err.response_status_code or 0
        detail = f"{what}: Graph answered {status}: {err}"
        if status in (429, 503, 504) or status >= 500:
            return TransientError(detail, retry_after=retry_after(err))
        if status == 401 and delegated:
            return AuthExpired(detail)
        if status == 401:  # a fresh token was refused too (bridge.teams.protocol.refresh)
            return PermanentError(
                detail,
                user_message="Teams refused the bridge's app token, a fresh one too; an"
                " administrator must check the Teams app registration (`pontis check`).",
            )
        if status == 404:
            return NotFound(
                detail, user_message="Teams does not know this chat or message (any more)."
            )
        if status == 403 and reading:
            return PermanentError(detail, user_message=APP_REFUSED)
        if status == 403:
            return PermanentError(
                detail,
                user_message="Teams refused this: your Teams account may not be allowed to do it"
                " in this chat (only the author can edit or delete a message).",
            )
        return PermanentError(detail)
    if isinstance(err, httpx.HTTPError | aiohttp.ClientError | OSError | TimeoutError):
        return TransientError(f"{what}: Graph unreachable: {type(err).__name__}: {err}")
    return BridgeError(f"{what}: {type(err).__name__}: {err}")


async def graph_call(
    what: str, call: Awaitable[T], *, delegated: bool = False, reading: bool = False
) -> T:
    try:
        return await call
    except Exception as err:
        raise as_bridge_error(err, what, delegated=delegated, reading=reading) from err
