"""Dead letters through the provisioning API, for bridge admins only (and agency admins, for
their agency's: :mod:`bridge.core.agencies`): they hold other people's messages. The same store
calls as the ``dead-letters``/``retry``/``drop`` commands; another agency's letter is a 404."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.core.agency_view import AgencyView
from bridge.core.audit import AuditLog
from bridge.portal.audit import Outcome
from bridge.portal.dead_letters import Retried
from bridge.portal.store import Store
from bridge.provision import views
from bridge.provision.auth import Actor, Authenticator
from bridge.provision.errors import bad_request, conflict, not_found

MAX_LIMIT = 500
_MAX_ID = 2**63 - 1


class DeadLetterEndpoints:
    def __init__(
        self,
        *,
        auth: Authenticator,
        store: Store,
        after_retry: Callable[[], Awaitable[None]],
        audit: AuditLog,
        log: logging.Logger,
    ) -> None:
        """``after_retry`` tells the running bridge that rows came back into its inboxes."""
        self._auth = auth
        self._store = store
        self._after_retry = after_retry
        self._audit = audit
        self._log = log
        self._view = AgencyView(store)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/dead-letters", self.list)
        app.router.add_get("/dead-letters/{letter_id}", self.show)
        app.router.add_post("/dead-letters/{letter_id}/retry", self.retry)
        app.router.add_delete("/dead-letters/{letter_id}", self.drop)

    async def list(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request, admin=True, query=("limit",))
        limit = _number(request.query.get("limit", "100"), "limit")
        if limit > MAX_LIMIT:
            raise bad_request(f"`limit` is at most {MAX_LIMIT}.", "M_INVALID_PARAM")
        letters, total = await self._view.letters(actor.scope, limit)
        await self._record(request, actor, "dead-letters.list", "", "ok", f"{len(letters)} shown")
        return web.json_response({
            "total": total, "dead_letters": [views.letter(letter) for letter in letters],
        })  # fmt: skip

    async def show(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request, admin=True)
        letter_id = _number(request.match_info["letter_id"], "letter_id")
        letter = await self._store.dead_letters.get(letter_id)
        if not await self._view.has_letter(actor.scope, letter_id):
            letter = None  # another agency's: as if there were none
        await self._record(request, actor, "dead-letters.show", str(letter_id),
                           "failed" if letter is None else "ok")  # fmt: skip
        if letter is None:
            raise not_found(f"There is no dead letter {letter_id}.")
        return web.json_response(views.letter(letter, with_payload=True))

    async def retry(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request, admin=True)
        letter_id = _number(request.match_info["letter_id"], "letter_id")
        if await self._view.has_letter(actor.scope, letter_id):
            result = await self._store.dead_letters.retry(letter_id)
        else:
            result = Retried(letter_id, "missing")
        done = result.outcome in ("retried", "pending")
        await self._record(request, actor, "dead-letters.retry", str(letter_id),
                           "ok" if done else "failed", result.outcome)  # fmt: skip
        if result.outcome == "missing":
            raise not_found(f"There is no dead letter {letter_id}.")
        if result.outcome == "unreadable":
            raise conflict(
                f"Dead letter {letter_id} is an event the bridge cannot read: it cannot be "
                "retried, only dropped."
            )
        await self._after_retry()
        return web.json_response({"id": letter_id, "outcome": result.outcome})

    async def drop(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request, admin=True)
        letter_id = _number(request.match_info["letter_id"], "letter_id")
        dropped = await self._view.has_letter(
            actor.scope, letter_id
        ) and await self._store.dead_letters.drop(letter_id)
        await self._record(request, actor, "dead-letters.drop", str(letter_id),
                           "ok" if dropped else "failed")  # fmt: skip
        if not dropped:
            raise not_found(f"There is no dead letter {letter_id}.")
        return web.json_response({"id": letter_id, "dropped": True})

    async def _record(
        self,
        request: web.Request,
        actor: Actor,
        action: str,
        target: str,
        outcome: Outcome,
        detail: str = "",
    ) -> None:
        await self._audit.record(actor=actor.mxid, action=action, target=target,
                                 outcome=outcome, origin=origin(request, actor), detail=detail)  # fmt: skip


def origin(request: web.Request, actor: Actor) -> str:
    """Where an audited request came from: the API, how it authenticated, the peer address."""
    return f"provisioning {actor.via} {request.remote or '-'}"


def _number(raw: str, name: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 1 <= int(raw) <= _MAX_ID:
        raise bad_request(
            f"`{name}` must be a whole number from 1 to {_MAX_ID}.", "M_INVALID_PARAM"
        )
    return int(raw)
