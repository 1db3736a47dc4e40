"""The appservice HTTP API, at-least-once and idempotent.

mautrix-python's receiver acknowledges a transaction before handling it and answers 200 even
when handling fails, so a crash loses events. Here a transaction is written to the inbox table
(in one database transaction, deduplicated by txnId and event id) *before* the 200; if that write
fails the homeserver gets a 500 and sends the same transaction again. The rows just committed are
then handed to the router, so it need not read them back from the store.

The homeserver retries a refused transaction for ever and sends nothing newer meanwhile, so one
event the bridge cannot read never refuses a transaction: it is kept as a dead letter with the
reason (in the same database transaction) and the rest is handled. Only a body that is no
transaction at all (not JSON, not an object, no ``events`` list) or a wrong token is refused,
with a 4xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.core.metrics import Metrics
from bridge.portal.dead_letters import UnreadableEvent
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


def _dedupe_key(txn_id: str, raw: bytes) -> str:
    """What recognises a transaction sent again: its id *and* its content. Synapse (on SQLite,
    measured) numbers transactions anew after a restart, so an id alone would make a new
    transaction look like a replay and lose it; a real retry carries the same body. A retry
    that differs (Synapse drops ephemeral parts of a transaction it reloads after a restart)
    is stored again, and its events are still deduplicated one by one by event id."""
    return f"{txn_id}:{hashlib.sha256(raw).hexdigest()[:24]}"


class BadTransaction(ValueError):
    """The body is no transaction at all: refused with a 400."""


def _ok() -> web.Response:
    """``{}``, the answer to every successful call; built without the JSON encoder, which took
    a tenth of the time spent on a transaction."""
    return web.Response(body=b"{}", content_type="application/json")


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class _Unreadable(ValueError):
    pass


@dataclass(slots=True)
class ParsedTransaction:
    items: list[InboxItem]
    """What is to be handled, in the order it came."""
    echoes: int
    """The bridge's own events coming back, left out."""
    unreadable: list[UnreadableEvent] = field(default_factory=list)
    """What the bridge cannot read; kept as dead letters, never a reason to refuse."""


class _HugeNumber:
    """An integer literal longer than Python reads by default. Not JSON serialisable, so the
    event that holds it is set aside when it is stored, not the whole transaction refused."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return self.digits


def _parse_int(text: str) -> int | _HugeNumber:
    return int(text) if len(text) <= 4000 else _HugeNumber(text)


def _loads(raw: bytes) -> Any:
    """The body as JSON; raises ValueError (or RecursionError) for what is not JSON."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer past sys.int_info.default_max_str_digits: valid JSON
        return json.loads(raw, parse_int=_parse_int)


def _clean_id(value: object) -> str | None:
    return value if isinstance(value, str) and value.isprintable() else None


def _read_event(
    name: str, index: int, kind: str, event: object, is_echo: EchoCheck
) -> InboxItem | None:
    """Element ``index`` of list field ``name`` as an inbox item; None for an echo. Raises
    _Unreadable."""
    if not isinstance(event, dict):
        raise _Unreadable(f"{name}[{index}] must be an object")
    room_id = event.get("room_id")
    if kind != "pdu":
        return InboxItem(kind, None, room_id if isinstance(room_id, str) else None, event)
    for key in ("event_id", "room_id", "type", "sender"):
        value = event.get(key)
        if not isinstance(value, str):
            raise _Unreadable(f"{name}[{index}].{key} must be a string")
        if "\x00" in value:
            raise _Unreadable(f"{name}[{index}].{key} must be a string without NUL")
    if is_echo(event):
        return None
    return InboxItem(kind, event["event_id"], room_id, event)


def _set_aside(kind: str, raw: object, reason: str) -> UnreadableEvent:
    fields = raw if isinstance(raw, dict) else {}
    return UnreadableEvent(
        kind, raw, reason, _clean_id(fields.get("event_id")), _clean_id(fields.get("room_id"))
    )


def parse_transaction(body: Any, is_echo: EchoCheck = lambda _: False) -> ParsedTransaction:
    """Turn a transaction body into inbox items; raises :class:`BadTransaction` only for a
    body that is no transaction (not an object, ``events`` missing or not a list).

    Anything else the bridge cannot read (an event that is not an object or lacks its ids, a
    field of the wrong shape) is set aside in ``unreadable`` with the reason. Timeline events
    for which ``is_echo`` is true (the bridge's own sends coming back) are left out: they would
    cost the inbox a write and a delete for nothing.
    """
    if not isinstance(body, dict):
        raise BadTransaction("transaction body must be a JSON object")
    if "events" not in body:
        raise BadTransaction("events is required")
    if not isinstance(body["events"], list):
        raise BadTransaction("events must be a list")
    parsed = ParsedTransaction([], 0)
    seen_kinds: set[tuple[str, str]] = set()
    for field_name, kind in _LIST_FIELDS.items():
        value = body.get(field_name)
        if value is None or ((kind, "list") in seen_kinds and kind != "pdu"):
            continue  # stable and unstable names carry the same events; keep one copy
        if not isinstance(value, list):
            parsed.unreadable.append(_set_aside(kind, value, f"{field_name} must be a list"))
            continue
        seen_kinds.add((kind, "list"))
        for index, event in enumerate(value):
            try:
                item = _read_event(field_name, index, kind, event, is_echo)
            except _Unreadable as err:
                parsed.unreadable.append(_set_aside(kind, event, str(err)))
                continue
            if item is None:
                parsed.echoes += 1
            else:
                parsed.items.append(item)
    for field_name, kind in _OBJECT_FIELDS.items():
        value = body.get(field_name)
        if value is None or (kind, "object") in seen_kinds:
            continue
        if not isinstance(value, dict):
            parsed.unreadable.append(_set_aside(kind, value, f"{field_name} must be an object"))
            continue
        seen_kinds.add((kind, "object"))
        parsed.items.append(InboxItem(kind, None, None, value))
    return parsed


def _unstorable(item: InboxItem) -> str | None:
    """Why the database cannot take ``item`` (checked only after a store failed)."""
    try:
        for text in (item.event_id, item.room_id):
            if text is not None:
                text.encode("utf-8")
        json.dumps(item.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError, TypeError) as err:
        return f"cannot be stored ({type(err).__name__}: {str(err)[:200]})"
    return None


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
        raw = await request.read()
        try:
            body = _loads(raw)
        except (ValueError, RecursionError) as err:  # RecursionError: nested too deep
            self._metrics.transactions.labels("malformed").inc()
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:200]
            return _error(400, "M_NOT_JSON", f"Transaction {txn_id} is not valid JSON: {reason}")
        try:
            parsed = parse_transaction(body, self._is_echo)
        except BadTransaction as err:
            self._metrics.transactions.labels("malformed").inc()
            self._log.warning("Rejected malformed transaction %s: %s", txn_id, err)
            return _error(400, "M_BAD_JSON", f"Transaction {txn_id}: {err}")
        items, unreadable = parsed.items, parsed.unreadable
        self._metrics.echoes_dropped.inc(parsed.echoes)
        if any(event.kind in ADVISORY_KINDS for event in unreadable):
            # Repeated in every transaction: a dead letter each time would be noise.
            self._log.warning("Transaction %s: ignored unreadable key counts", txn_id)
            unreadable = [event for event in unreadable if event.kind not in ADVISORY_KINDS]
        if advisory := [item for item in items if item.kind in ADVISORY_KINDS]:
            items = [item for item in items if item.kind not in ADVISORY_KINDS]
            self._on_advisory(advisory)
        if not items and not unreadable:
            # Only our own echoes: nothing to keep, so a replay is harmless too.
            self._metrics.transactions.labels("echo_only").inc()
            return _ok()
        async with self._storing:
            try:
                stored = await self._store_items(
                    txn_id, _dedupe_key(txn_id, raw), items, unreadable
                )
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

    async def _store_items(
        self, txn_id: str, key: str, items: list[InboxItem], unreadable: list[UnreadableEvent]
    ) -> list[InboxRow] | None:
        """Store the items, and what could not be read as dead letters, in one transaction.

        A store that fails is most likely the database being away (the homeserver gets a 500
        and retries). But if an event is what the database cannot take (a lone surrogate in a
        string, nesting too deep to serialise), that event is set aside and the rest stored:
        otherwise the homeserver would retry that transaction for ever."""
        try:
            return await self._store_once(txn_id, key, items, unreadable)
        except Exception:
            bad = [(item, why) for item in items if (why := _unstorable(item)) is not None]
            if not bad:
                raise
        kept = [item for item in items if all(item is not b for b, _ in bad)]
        unreadable = unreadable + [
            UnreadableEvent(item.kind, item.payload, why, _clean_id(item.event_id),
                            _clean_id(item.room_id))
            for item, why in bad
        ]  # fmt: skip
        return await self._store_once(txn_id, key, kept, unreadable)

    async def _store_once(
        self, txn_id: str, key: str, items: list[InboxItem], unreadable: list[UnreadableEvent]
    ) -> list[InboxRow] | None:
        """``key`` recognises a retry of the transaction (see :func:`_dedupe_key`)."""
        if not unreadable:
            return await self._store.store_transaction(key, items)
        dead_letters = self._store.dead_letters
        async with dead_letters.transaction():
            stored = await self._store.store_transaction(key, items)
            if stored is None:  # a replay: its dead letters were kept the first time
                return None
            ids = await dead_letters.park_unreadable(txn_id, unreadable)
        self._metrics.dead_letters.labels("matrix").inc(len(ids))
        for letter_id, event in zip(ids, unreadable, strict=True):
            self._log.warning(
                "Transaction %s: kept a %s the bridge cannot read as dead letter %d: %s",
                txn_id, event.kind, letter_id, event.reason,
            )  # fmt: skip
        return stored

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
