"""Logging in to a network through the provisioning API, as ``login <network>`` does in the
management room: start a flow of the connector, answer its steps, and on completion the login
is kept by the same function (:func:`bridge.core.commands.finish_login`): stored, audited,
connected. The processes under way are :class:`LoginProcesses`.

An answer may be a password: it goes to the connector and nowhere else, never into a log, the
audit log or a reply."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.core.commands import finish_login
from bridge.core.connector import LoginStep
from bridge.core.errors import BridgeError, PermanentError, TransientError
from bridge.portal.models import Login
from bridge.provision import views
from bridge.provision.admin import origin
from bridge.provision.auth import Actor
from bridge.provision.errors import (
    ApiError,
    bad_request,
    not_found,
    read_json,
    string_field,
)
from bridge.provision.networks import network_named
from bridge.provision.parts import ApiParts, Endpoints
from bridge.provision.processes import PROCESS_ID, LoginProcesses, Pending

MAX_FLOW_ID = 255
MAX_ANSWER = 8192
"""Longest answer, in characters: room for a long token, not for a document."""


def _process_id(raw: str) -> str:
    if not PROCESS_ID.fullmatch(raw):
        raise bad_request("`process_id` is not a login process id.", "M_INVALID_PARAM")
    return raw


def _unknown() -> ApiError:
    return not_found(
        "You have no such login process: it finished, was cancelled or expired. Start a new one "
        "(POST /networks/{network}/logins)."
    )


def _step(step: LoginStep) -> dict[str, Any]:
    return {"kind": step.kind, "instructions": step.instructions, "secret": step.secret}


class LoginEndpoints(Endpoints):
    def __init__(
        self,
        parts: ApiParts,
        *,
        load_login: Callable[[Login], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``load_login`` builds and connects the client of a new login (:meth:`App.load_login`,
        as the management room has it)."""
        super().__init__(parts)
        self._load_login = load_login
        self._processes = LoginProcesses(log=parts.log, clock=clock)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/networks/{network}/logins", self.start)
        app.router.add_post("/login-processes/{process_id}", self.answer)
        app.router.add_delete("/login-processes/{process_id}", self.cancel)
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        await self._processes.close()

    async def start(self, request: web.Request) -> web.Response:
        """Start a login flow for the acting user: 201 with its first step (or, for a flow that
        needs nothing more, the new login)."""
        actor = await self._auth.actor(request)
        connector = self._connectors[network_named(self._connectors, request.match_info["network"])]
        body = await read_json(request)
        flow_id = string_field(body, "flow_id", max_length=MAX_FLOW_ID)
        name, network = connector.info.display_name, connector.info.id
        flows = connector.login_flows()
        if not flows:
            raise ApiError(501, "FI.PONTIS.NOT_SUPPORTED", (
                f"{name} needs no personal login: the bridge's shared account carries your "
                "messages."
            ))  # fmt: skip
        if flow_id not in {flow.id for flow in flows}:
            known = ", ".join(flow.id for flow in flows)
            raise not_found(f"{name} has no login flow `{flow_id}`. Its flows: {known}.")
        await self._processes.check_room(actor.mxid)
        try:
            process = await connector.start_login(actor.mxid, flow_id)
        except TransientError as err:
            raise ApiError(503, "FI.PONTIS.NETWORK_AWAY", err.user_message) from None
        except BridgeError as err:
            raise ApiError(400, "FI.PONTIS.LOGIN_FAILED", err.user_message) from None
        pending = await self._processes.add(actor.mxid, network, process)
        self._log.info("%s started a %s login (flow %s)", actor.mxid, network, flow_id)
        try:
            return await self._advance(request, actor, pending, None, status=201)
        except ApiError:
            # Refused at its first step: the caller never learnt the process's id.
            if self._processes.discard(pending):
                await self._processes.cancel(pending, "its first step failed")
            raise

    async def answer(self, request: web.Request) -> web.Response:
        """The answer to the step a process waits on: 200 with the next step or the login."""
        actor = await self._auth.actor(request)
        process_id = _process_id(request.match_info["process_id"])
        body = await read_json(request)
        answer = string_field(body, "answer", max_length=MAX_ANSWER)
        pending = await self._processes.get(actor.mxid, process_id)
        if pending is None:
            raise _unknown()
        return await self._advance(request, actor, pending, answer)

    async def cancel(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request)
        process_id = _process_id(request.match_info["process_id"])
        pending = await self._processes.get(actor.mxid, process_id)
        if pending is None:
            raise _unknown()
        async with pending.lock:  # after an answer under way, which may finish it first
            if not self._processes.discard(pending):
                raise _unknown()
            await self._processes.cancel(pending, "the user cancelled it")
        return web.json_response({"process_id": pending.id, "cancelled": True})

    async def _advance(
        self,
        request: web.Request,
        actor: Actor,
        pending: Pending,
        answer: str | None,
        *,
        status: int = 200,
    ) -> web.Response:
        async with pending.lock:  # one answer at a time reaches the connector
            if not self._processes.is_current(pending):
                raise _unknown()
            step = await self._submit(pending, answer)
        if step.kind == "user_input":
            return web.json_response(
                {"process_id": pending.id, "step": _step(step), "login": None}, status=status
            )
        self._processes.discard(pending)
        shown: dict[str, Any] | None = None
        if step.login is not None:
            login = step.login
            await finish_login(
                login, actor=actor.mxid, origin=origin(request, actor), store=self._store,
                audit=self._audit, load_login=self._load_login,
            )  # fmt: skip
            loaded = dict(self._clients.items()).get((login.network, login.login_id))
            shown = views.login(login, loaded)
            self._log.info("%s logged in to %s as %s", actor.mxid, login.network, login.login_id)
        return web.json_response(
            {"process_id": pending.id, "step": _step(step), "login": shown}, status=status
        )

    async def _submit(self, pending: Pending, answer: str | None) -> LoginStep:
        """The connector's next step; a refusal is an :class:`ApiError` saying whether the
        process goes on."""
        try:
            return await pending.process.submit(answer)
        except PermanentError as err:  # trying again cannot help: the process is over
            if self._processes.discard(pending):  # and the connector lets go of what it holds
                await self._processes.cancel(pending, f"it failed: {err}")
            raise ApiError(400, "FI.PONTIS.LOGIN_FAILED", (
                f"{err.user_message} This login process has ended; start a new one to try again."
            )) from None  # fmt: skip
        except TransientError as err:
            raise ApiError(503, "FI.PONTIS.NETWORK_AWAY", (
                f"{err.user_message} The login process waits: send the answer again later, or "
                "cancel it."
            )) from None  # fmt: skip
        except BridgeError as err:  # the connector refused this answer; the step stays
            raise ApiError(400, "FI.PONTIS.LOGIN_REJECTED", (
                f"{err.user_message} Send another answer, or cancel the login process."
            )) from None  # fmt: skip
