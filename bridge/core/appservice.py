"""The appservice HTTP API, at-least-once and idempotent.

mautrix-python's receiver acknowledges a transaction before handling it and answers 200 even
when handling fails, so a crash loses events. Here a transaction is written to the inbox table
(in one database transaction, deduplicated by txnId and event id) *before* the 200; if that write
fails the homeserver gets a 500 and sends the same transaction again. The rows just committed are
then handed to the router, so it need not read them back from the store.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.core.metrics import Metrics
from bridge.portal.models import InboxItem, InboxRow
from bridge.portal.store import Store

UserQuery = Callable[[str], Awaitable[bool]]
EchoCheck = Callable[[dict[str, Any]], bool]

# Transaction fields and the inbox kind they are stored as. Unstable prefixes are what Synapse
# sends today for MSC2409 (ephemeral, to-device) and MSC3202 (device lists, key counts).
_LIST_FIELDS = {
    "events": "pdu",
    "ephemeral": "ephemeral",
    "de.sorunome.msc2409.ephemeral": "ephemeral",
    "to_device": "to_device",
    "de.sorunome.msc2409.to_device": "to_device",
}
_OBJECT_FIELDS = {
    "device_lists": "device_lists",
    "org.matrix.msc3202.device_lists": "device_lists",
    "device_one_time_keys_count": "otk_count",
    "org.matrix.msc3202.device_one_time_keys_count": "otk_count",
    "device_unused_fallback_key_types": "fallback_keys",
    "org.matrix.msc3202.device_unused_fallback_key_types": "fallback_keys",
}


ADVISORY_KINDS = frozenset({"otk_count", "fallback_keys"})
"""Counts every transaction repeats (MSC3202): handed over as they come, never stored, so a
transaction of nothing but the bridge's own echoes still costs no database write."""


class BadTransaction(ValueError):
    pass


def _ok() -> web.Response:
    """``{}``, the answer to every successful call; built without the JSON encoder, which took
    a tenth of the time spent on a transaction."""
    return web.Response(body=b"{}", content_type="application/json")


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def parse_transaction(
    body: Any, is_echo: EchoCheck = lambda _: False
) -> tuple[list[InboxItem], int]:
    """Validate a transaction body and turn it into inbox items (raises :class:`BadTransaction`).

    Timeline events for which ``is_echo`` is true (the bridge's own sends coming back) are
    validated but not stored: they would cost the inbox a write and a delete for nothing.
    Returns the items and how many echoes were left out.
    """
    if not isinstance(body, dict):
        raise BadTransaction("transaction body must be a JSON object")
    items: list[InboxItem] = []
    echoes = 0
    seen_kinds: set[tuple[str, str]] = set()
    for field, kind in _LIST_FIELDS.items():
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, list):
            raise BadTransaction(f"{field} must be a list")
        if (kind, "list") in seen_kinds and kind != "pdu":
            continue  # stable and unstable names carry the same events; keep one copy
        seen_kinds.add((kind, "list"))
        for index, event in enumerate(value):
            if not isinstance(event, dict):
                raise BadTransaction(f"{field}[{index}] must be an object")
            event_id = event.get("event_id") if kind == "pdu" else None
            room_id = event.get("room_id")
            if kind == "pdu":
                for key in ("event_id", "room_id", "type", "sender"):
                    if not isinstance(event.get(key), str):
                        raise BadTransaction(f"{field}[{index}].{key} must be a string")
            if kind == "pdu" and is_echo(event):
                echoes += 1
                continue
            items.append(
                InboxItem(kind, event_id, room_id if isinstance(room_id, str) else None, event)
            )
    for field, kind in _OBJECT_FIELDS.items():
        value = body.get(field)
        if value is None or (kind, "object") in seen_kinds:
            continue
        if not isinstance(value, dict):
            raise BadTransaction(f"{field} must be an object")
        seen_kinds.add((kind, "object"))
        items.append(InboxItem(kind, None, None, value))
    if "events" not in body:
        raise BadTransaction("events is required")
    return items, echoes


class AppServiceAPI:
    def __init__(
        self,
        *,
        hs_token: str,
        store: Store,
        metrics: Metrics,
        on_stored: Callable[[list[InboxRow]], None],
        query_user: UserQuery,
        on_advisory: Callable[[list[InboxItem]], None] = lambda _: None,
        query_alias: UserQuery,
        is_echo: EchoCheck,
        log: logging.Logger,
    ) -> None:
        self._hs_token = hs_token
        self._store = store
        self._metrics = metrics
        self._on_stored = on_stored
        self._on_advisory = on_advisory
        # One transaction stored and handed over at a time, so rows reach the router in the
        # order of their ids (the homeserver sends one transaction at a time anyway).
        self._storing = asyncio.Lock()
        self._query_user = query_user
        self._query_alias = query_alias
        self._is_echo = is_echo
        self._log = log

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/_matrix/app/v1", ""):  # unprefixed: legacy homeserver fallback
            app.router.add_put(prefix + "/transactions/{txn_id}", self.put_transaction)
            app.router.add_get(prefix + "/users/{user_id}", self.get_user)
            app.router.add_get(prefix + "/rooms/{alias}", self.get_room_alias)
        app.router.add_post("/_matrix/app/v1/ping", self.ping)
        app.router.add_route("*", "/_matrix/app/{tail:.*}", self.unknown)

    def _check_token(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        from_header = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        from_query = request.query.get("access_token")
        tokens = [t for t in (from_header, from_query) if t is not None]
        if not tokens:
            return _error(401, "M_UNAUTHORIZED", "Missing homeserver token")
        if not all(hmac.compare_digest(t.encode(), self._hs_token.encode()) for t in tokens):
            self._log.warning(
                "Rejected request to %s with a wrong hs_token from %s", request.path, request.remote
            )
            return _error(403, "M_FORBIDDEN", "Bad homeserver token")
        return None

    async def put_transaction(self, request: web.Request) -> web.Response:
        if (denied := self._check_token(request)) is not None:
            self._metrics.transactions.labels("forbidden").inc()
            return denied
        txn_id = request.match_info["txn_id"]
        try:
            body = json.loads(await request.read())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            self._metrics.transactions.labels("malformed").inc()
            return _error(400, "M_NOT_JSON", f"Transaction {txn_id} is not valid JSON: {err}")
        try:
            items, echoes = parse_transaction(body, self._is_echo)
        except BadTransaction as err:
            self._metrics.transactions.labels("malformed").inc()
            self._log.warning("Rejected malformed transaction %s: %s", txn_id, err)
            return _error(400, "M_BAD_JSON", f"Transaction {txn_id}: {err}")
        self._metrics.echoes_dropped.inc(echoes)
        if advisory := [item for item in items if item.kind in ADVISORY_KINDS]:
            items = [item for item in items if item.kind not in ADVISORY_KINDS]
            self._on_advisory(advisory)
        if not items:  # only our own echoes: nothing to keep, so a replay is harmless too
            self._metrics.transactions.labels("echo_only").inc()
            return _ok()
        async with self._storing:
            try:
                stored = await self._store.store_transaction(txn_id, items)
            except Exception:
                self._metrics.transactions.labels("store_failed").inc()
                self._log.exception(
                    "Could not store transaction %s; the homeserver will retry it", txn_id
                )
                return _error(500, "M_UNKNOWN", "Could not store the transaction; retry later")
            if stored is None:
                self._metrics.transactions.labels("duplicate").inc()
                self._log.debug("Transaction %s was already stored", txn_id)
            else:
                self._metrics.transactions.labels("stored").inc()
                self._on_stored(stored)
        return _ok()

    async def get_user(self, request: web.Request) -> web.Response:
        if (denied := self._check_token(request)) is not None:
            return denied
        user_id = request.match_info["user_id"]
        try:
            exists = await self._query_user(user_id)
        except Exception:
            self._log.exception("User query for %s failed", user_id)
            exists = False
        if exists:
            return _ok()
        return _error(404, "M_NOT_FOUND", f"{user_id} is not a user this bridge can create")

    async def get_room_alias(self, request: web.Request) -> web.Response:
        if (denied := self._check_token(request)) is not None:
            return denied
        alias = request.match_info["alias"]
        try:
            exists = await self._query_alias(alias)
        except Exception:
            self._log.exception("Room alias query for %s failed", alias)
            exists = False
        if exists:
            return _ok()
        return _error(404, "M_NOT_FOUND", f"{alias} is not a room this bridge can create")

    async def ping(self, request: web.Request) -> web.Response:
        if (denied := self._check_token(request)) is not None:
            return denied
        return _ok()

    async def unknown(self, request: web.Request) -> web.Response:
        return _error(404, "M_UNRECOGNIZED", f"Unknown endpoint {request.path}")
