"""The narrow facade each connector receives.

A connector gets everything it may use from its :class:`ConnectorContext`: its own config section,
a logger, a store view scoped to its network, the shared HTTP session, metrics and a way to hand
events to the core. There are no globals, so two connectors (or two hubs in one test) never see
each other's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp import web

from bridge.core.connector import NetworkClient
from bridge.core.errors import BridgeError
from bridge.core.events import RemoteEvent
from bridge.core.federation import FederationPolicy
from bridge.core.ghost_names import GhostNames
from bridge.core.ids import (
    LoginID,
    NetworkID,
    PortalKey,
    RemoteUserID,
)
from bridge.core.metrics import Metrics

if TYPE_CHECKING:
    from bridge.portal.models import Portal, RemoteInput
    from bridge.portal.store import NetworkStore


class CoreServices(Protocol):
    """What the context needs from the core; implemented by the router."""

    async def submit_remote_event(
        self, network: NetworkID, event: RemoteEvent, *, wait: bool, last_attempt: bool = True
    ) -> None: ...

    async def accept_remote(self, item: RemoteInput) -> bool: ...

    async def remote_message_lost(
        self, network: NetworkID, key: PortalKey, err: Exception
    ) -> None: ...

    def add_client(self, network: NetworkID, client: NetworkClient) -> object: ...

    def set_client_state(
        self, network: NetworkID, login_id: LoginID, *, connected: bool, message: str
    ) -> None: ...

    async def matrix_profile(self, mxid: str) -> tuple[str | None, bytes | None, str]: ...

    async def set_ghost_presence(
        self, network: NetworkID, user: RemoteUserID, presence: str, status: str | None
    ) -> None: ...

    async def adopt_matrix_room(self, key: PortalKey, alias: str) -> Portal | None: ...

    async def matrix_members(self, room_id: str) -> dict[str, str]: ...

    async def matrix_power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]: ...

    async def matrix_membership(self, room_id: str, mxid: str) -> str | None: ...

    async def matrix_has_devices(self, mxid: str) -> bool: ...

    async def delivery_failed(
        self, network: NetworkID, event_id: str, err: BridgeError
    ) -> None: ...

    async def matrix_history(self, room_id: str, limit: int) -> list[tuple[str, str, str, int]]: ...


HttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectorRoutes:
    """``/_pontis/<network>/<path>`` on the bridge's HTTP port: endpoints a connector serves to
    its network (Graph change notifications arrive at ``/_pontis/teams/notifications``).

    The port opens before connectors start, so a request for an enabled network that has not
    claimed the path yet gets ``503`` and a retry-minded sender (Graph) comes back later.
    """

    def __init__(self, networks: Collection[str] = ()) -> None:
        self._networks = set(networks)
        self._handlers: dict[tuple[str, str], HttpHandler] = {}

    def add(self, network: NetworkID, path: str, handler: HttpHandler) -> None:
        self._handlers[(network, path.strip("/"))] = handler

    def add_to(self, app: web.Application) -> None:
        app.router.add_route("*", "/_pontis/{network}/{path:.*}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["network"], request.match_info["path"].strip("/"))
        handler = self._handlers.get(key)
        if handler is None:
            starting = key[0] in self._networks and not any(n == key[0] for n, _ in self._handlers)
            return web.json_response(
                {"error": "starting" if starting else "not found"}, status=503 if starting else 404
            )
        return await handler(request)


class ConnectorContext:
    def __init__(
        self,
        *,
        network: NetworkID,
        config: dict[str, Any],
        domain: str,
        log: logging.Logger,
        store: NetworkStore,
        http: aiohttp.ClientSession,
        metrics: Metrics,
        core: CoreServices,
        routes: ConnectorRoutes | None = None,
        federation: FederationPolicy | None = None,
        ghost_names: GhostNames | None = None,
        bot_mxid: str = "",
    ) -> None:
        self.network = network
        self.bot_mxid = bot_mxid
        """The bridge bot's Matrix ID: the sender of relayed messages (relay mode)."""
        self.config = config
        """The connector's validated ``connectors.<id>`` section, defaults merged in."""
        self.domain = domain
        """The homeserver's server name (the part after ``:`` in ghost mxids)."""
        self.log = log
        self.store = store
        self.http = http
        self.metrics = metrics
        self.federation = federation or FederationPolicy(None, domain)
        """Who may reach whom (:mod:`bridge.core.federation`): check it at every entry where a
        remote person reaches a Matrix user or room, before anything changes."""
        self._ghost_names = ghost_names or GhostNames(domain)
        self._core = core
        self._routes = routes or ConnectorRoutes()
        self._tasks: set[asyncio.Task[Any]] = set()

    def ghost_mxid(self, user: RemoteUserID) -> str:
        """The Matrix user standing for ``user`` (``connectors.<id>.ghost_username_template``)."""
        return self._ghost_names.mxid(self.network, user)

    def parse_ghost_mxid(self, mxid: str) -> RemoteUserID | None:
        """The remote user ``mxid`` stands for if it is one of this network's ghosts, else
        ``None`` (a Matrix user, another network's or another hub's ghost)."""
        return self._ghost_names.parse(self.network, mxid)

    async def accept_remote(self, item: RemoteInput) -> bool:
        """Keep ``item`` (the network's raw input) durably and queue it on its portal; the
        client's ``convert_remote`` turns it into events inside the portal's queue, now and
        again after a crash, until Matrix has all of them.

        Acknowledge to the network (receipt, 250, 202) only after this returns. It returns
        False if the same input (``dedupe_id``) is still pending, and raises if the store is
        unreachable: then refuse the input temporarily, so the network offers it again. Nothing
        is given up while the homeserver or the network is away; a permanent refusal becomes a
        dead letter with a notice in the room.
        """
        if item.portal.network != self.network:
            raise ValueError(f"{item.portal} is not a {self.network} portal")
        return await self._core.accept_remote(item)

    async def queue_remote_event(self, event: RemoteEvent) -> None:
        """Hand ``event`` to its portal's ordered queue and return.

        Waits only while that portal's queue is full. The event is not yet on Matrix when this
        returns; use :meth:`deliver_remote_event` where the network must be acknowledged only
        after the event is safely stored.
        """
        await self._core.submit_remote_event(self.network, event, wait=False)

    async def deliver_remote_event(self, event: RemoteEvent, *, last_attempt: bool = True) -> None:
        """Queue ``event`` and wait until it is on the homeserver.

        Raises the :class:`bridge.core.errors.BridgeError` that made it fail after retries, so a
        gateway can refuse the remote message (SMTP 451) instead of accepting and losing it.
        A failure is a lost message: the room gets a "could not be bridged" notice and it counts
        as a dead letter. Pass ``last_attempt=False`` when the network will offer the message
        again after a refusal (SMTP 451, a notification kept for another try): then only a
        :class:`~bridge.core.errors.PermanentError` or :class:`NotSupported` is one; any other
        error is left to the caller, without a notice.
        """
        await self._core.submit_remote_event(
            self.network, event, wait=True, last_attempt=last_attempt
        )

    async def remote_message_lost(self, portal: PortalKey, err: Exception) -> None:
        """The connector gives up on a message of ``portal`` it could not even turn into an
        event (its network kept failing to hand it over): the room gets the "could not be
        bridged" notice and it counts as a dead letter, as failures in
        :meth:`deliver_remote_event` do."""
        await self._core.remote_message_lost(self.network, portal, err)

    def add_client(self, client: NetworkClient) -> None:
        """Register a client that serves every Matrix user without a login of their own."""
        self._core.add_client(self.network, client)

    def set_client_state(self, login_id: LoginID, *, connected: bool, message: str = "") -> None:
        """Report a client's connection state (metrics, ``list`` command, readiness)."""
        self._core.set_client_state(self.network, login_id, connected=connected, message=message)

    async def matrix_profile(self, mxid: str) -> tuple[str | None, bytes | None, str]:
        """A Matrix user's (display name, avatar bytes, avatar mime type), for networks that
        show Matrix users as contacts (vCards). ``(None, None, "")`` if there is no profile."""
        return await self._core.matrix_profile(mxid)

    async def set_ghost_presence(
        self, user: RemoteUserID, presence: str, status: str | None = None
    ) -> None:
        """Show ``user``'s presence on their ghost: ``online``, ``unavailable`` (away) or
        ``offline``, with an optional status message. Only for ghosts that exist; a no-op where
        the homeserver keeps no presence (logged once, see :mod:`bridge.core.ghost_presence`).
        Never raises for the homeserver's errors (they are logged)."""
        await self._core.set_ghost_presence(self.network, user, presence, status)

    async def adopt_matrix_room(self, key: PortalKey, alias: str) -> Portal | None:
        """Make the Matrix room ``alias`` the portal of ``key`` (a room the network offers to
        its users, like an XMPP MUC hosted by the bridge). The bot joins it; ``None`` if the
        alias does not exist, the room is not open to the bot or it is already the portal of
        another chat (see :mod:`bridge.core.adopt`)."""
        return await self._core.adopt_matrix_room(key, alias)

    async def matrix_members(self, room_id: str) -> dict[str, str]:
        """mxid → display name of a portal room's Matrix members (ghosts left out)."""
        return await self._core.matrix_members(room_id)

    async def matrix_power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]:
        """A portal room's ``m.room.power_levels`` content and its creators (who have every
        power in room versions that say so)."""
        return await self._core.matrix_power_levels(room_id)

    async def matrix_membership(self, room_id: str, mxid: str) -> str | None:
        """``mxid``'s membership in a portal room (``join``, ``ban``, …; None if never a member),
        from the homeserver: e.g. whether a ghost is banned, whoever banned it and when."""
        return await self._core.matrix_membership(room_id, mxid)

    async def matrix_has_devices(self, mxid: str) -> bool:
        """Whether ``mxid`` has a device with keys on its homeserver: a leave of an account
        without one is most likely its deactivation, not the person's choice."""
        return await self._core.matrix_has_devices(mxid)

    async def delivery_failed(self, event_id: str, err: BridgeError) -> None:
        """The network bounced a message after ``handle_matrix_*`` had returned (an XMPP error
        stanza, a mail bounce): the sender gets a notice in the room."""
        await self._core.delivery_failed(self.network, event_id, err)

    async def matrix_history(self, room_id: str, limit: int) -> list[tuple[str, str, str, int]]:
        """The portal room's last ``limit`` messages, oldest first, as (event id, sender display
        name, plain body, timestamp in ms): for networks that show history on join."""
        return await self._core.matrix_history(room_id, limit)

    def add_http_handler(self, path: str, handler: HttpHandler) -> None:
        """Serve ``handler`` at ``/_pontis/<network>/<path>`` on the bridge's HTTP port (any
        method). The handler authenticates its caller itself (a webhook's client state)."""
        self._routes.add(self.network, path, handler)

    def background(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` until the connector stops; an unexpected exception is logged."""
        task = asyncio.create_task(coro, name=f"{self.network}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("Background task %s failed", task.get_name(), exc_info=task.exception())

    async def cancel_background(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
