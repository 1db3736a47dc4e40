"""One fresh token and one retry when Graph answers 401.

Graph refuses a token before its expiry when it was revoked (a password reset, a session
revoked by an administrator, a Conditional Access change) or when clocks disagree. The token
provider cannot know; Graph's 401 is the only sign. This middleware, the last before the wire
in the SDK's pipeline, asks the provider for a new token (not from any cache) and sends the
request once more with it. A second 401 is passed on: the token endpoint gave a token Graph
still refuses, which no further retry fixes (the caller reports it).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import httpx
from kiota_http.middleware.middleware import BaseMiddleware

log = logging.getLogger(__name__)


@runtime_checkable
class Refreshable(Protocol):
    async def refreshed(self, rejected: str) -> str:
        """A token to use instead of ``rejected``."""
        ...


class RefreshOn401(BaseMiddleware):
    def __init__(self, provider: Refreshable) -> None:
        super().__init__()
        self._provider = provider

    async def send(
        self, request: httpx.Request, transport: httpx.AsyncBaseTransport
    ) -> httpx.Response:
        response = await super().send(request, transport)
        header = request.headers.get("Authorization", "")
        if response.status_code != 401 or not header.lower().startswith("bearer "):
            return response
        await response.aread()
        await response.aclose()
        token = await self._provider.refreshed(header[7:])
        request.headers["Authorization"] = f"Bearer {token}"
        retried = await super().send(request, transport)
        if retried.status_code == 401:
            log.warning(
                "Graph refused a fresh token too (401) for %s %s", request.method, request.url.path
            )
        return retried
