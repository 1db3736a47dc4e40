"""The Graph webhook: ``/_pontis/teams/notifications`` and ``/_pontis/teams/lifecycle``.

Graph calls it in three ways:

- the validation handshake when a subscription is created: ``?validationToken=…``, answered
  with the token as ``text/plain`` within 10 s;
- change notifications and lifecycle events: a JSON ``{"value": [...]}`` whose items carry the
  ``clientState`` the bridge chose. An item with any other client state is not from Graph (or
  from a subscription the bridge no longer trusts): the whole POST gets ``403`` and nothing is
  kept. Otherwise the items are handed to the core's remote inbox (stored durably), *then*
  Graph gets its ``202``; they are bridged afterwards in their portals' queues (Graph wants an
  answer within 3 s). If they cannot be stored, Graph gets ``503`` and sends them again.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

MAX_BODY = 1024 * 1024

AcceptItems = Callable[[list[dict[str, Any]]], Awaitable[None]]
"""Keeps trusted notification items durably (or raises): ``Inbound.accept``."""


class NotificationEndpoint:
    def __init__(self, client_state: str, accept: AcceptItems, log: logging.Logger) -> None:
        self._client_state = client_state.encode()
        self._accept = accept
        self._log = log

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "validationToken" in request.query:
            # aiohttp has URL-decoded it already; Graph wants it back verbatim.
            return web.Response(text=request.query["validationToken"], content_type="text/plain")
        if request.method != "POST":
            return web.json_response({"error": "POST change notifications here"}, status=405)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            body = json.loads(await request.content.read(MAX_BODY + 1) or b"null")
            items = body["value"]
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise TypeError("value is not a list of objects")
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response({"error": f"not a notification collection: {err}"}, status=400)
        for item in items:
            if not self._trusted(item):
                self._log.warning(
                    "Refused a Graph notification from %s for subscription %s: wrong clientState"
                    " (forged, or from a subscription this bridge did not create)",
                    request.remote,
                    str(item.get("subscriptionId"))[:64],
                )
                return web.json_response({"error": "clientState does not match"}, status=403)
        try:
            await self._accept(items)
        except Exception as err:
            self._log.error(
                "Could not store %d Graph notification(s); Graph will send them again: %s",
                len(items), err, exc_info=not isinstance(err, OSError),
            )  # fmt: skip
            return web.json_response({"error": "try again later"}, status=503)
        return web.Response(status=202)

    def _trusted(self, item: dict[str, Any]) -> bool:
        state = item.get("clientState")
        if not isinstance(state, str):
            return False
        return hmac.compare_digest(state.encode(), self._client_state)
