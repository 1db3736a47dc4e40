"""Several XEP-0114 components in one hub, one per agency XMPP domain (issue #14).

Each component is a whole :class:`XmppClient` of its own (its stream, its hosted rooms, its MUC
listener), so one that is down, refused or reconnecting holds up none of the others. The core
knows one shared XMPP client: :class:`XmppClients`, which hands each call to the component that
serves the chat. Which one that is follows from the remote JID alone, so nothing is stored:

- a room on a component's ``rooms_domain`` (a Matrix room offered as a MUC) goes through it;
- any other JID (a DM partner, a bridged MUC) goes through the component whose ``domains``
  cover its domain (an exact name first, then the longest ``*.`` suffix);
- everything else goes through the default component, the first.

A component hears only what is meant for it: a message that reaches it from a JID another
component serves is refused with the address to write to instead, so that a conversation never
runs through two components.

For the operator, each component stream (a component's own, and its rooms domain's) shows in
``/_pontis/health`` (:meth:`XmppClients.health_detail`) and in the metrics (link.py), whether
or not the others are up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from bridge.core import (
    ChatInfo,
    ConnectorContext,
    LoginID,
    MatrixMessage,
    NotFound,
    PortalKey,
    RemoteEvent,
    RemoteMessageID,
    RemoteUserID,
    UserInfo,
)
from bridge.portal.models import RemoteInput
from bridge.xmpp.client import XmppClient
from bridge.xmpp.invites import InviteLimits
from bridge.xmpp.link import Link, redact
from bridge.xmpp.protocol.escaping import split_jid
from bridge.xmpp.routing import ComponentRoutes

RETRY_FIRST = 5.0
"""Seconds before a component that failed to start is started again; doubled each time."""
RETRY_MAX = 300.0


class XmppClients:
    """The one XMPP client the core knows, in front of one :class:`XmppClient` per component.

    Every ``handle_matrix_*`` method of :class:`XmppClient`, including those added later, is
    handed on to the component of the event's portal (see :func:`_forward`); the other calls
    are written out below, each with how it picks a component.
    """

    login_id = LoginID("")

    def __init__(
        self,
        ctx: ConnectorContext,
        routes: ComponentRoutes,
        clients: Sequence[XmppClient],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self.routes = routes
        self.clients = list(clients)
        self._clock = clock
        self._states: list[tuple[bool, str]] = [(False, "connecting")] * len(self.clients)
        self._retries: dict[int, asyncio.Task[Any]] = {}
        """component index → its next start, after one failed."""
        self._start_failures: dict[int, Link] = {}
        """component index → what health shows of it while it fails to start (never connected)."""
        self._closed = False
        """Set by :meth:`disconnect`: no component is started (again) after it."""
        limits = InviteLimits()  # one set for the hub: a stranger gains nothing from two domains
        for index, client in enumerate(self.clients):
            client.report_state = self._reporter(index)
            client.owns = routes.is_ours
            client.invitations.rooms = self  # the room's own component joins it
            client.invitations.limits = limits

    @property
    def default(self) -> XmppClient:
        return self.clients[0]

    def client_for(self, remote_id: str) -> XmppClient:
        return self.clients[self.routes.index_of(remote_id)]

    # --- connection -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Start every component; one that fails to start (its store read, say) is reported
        down and started again later, with growing pauses, and leaves the others be."""
        self._closed = False
        results = await asyncio.gather(*(c.connect() for c in self.clients), return_exceptions=True)
        for index, result in enumerate(results):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                self._start_failed(index, result, 0)

    def _start_failed(self, index: int, err: BaseException, attempt: int) -> None:
        if self._closed:
            return
        delay = min(RETRY_MAX, RETRY_FIRST * 2**attempt)
        jid, secret = self.routes.configs[index].jid, self.routes.configs[index].secret
        why = redact(str(err), secret)  # shown in health and the state: never the secret
        self._ctx.log.error("Starting XMPP component %s failed: %s; trying again in %.0f s",
                            jid, why, delay)  # fmt: skip
        self._reporter(index)(False, f"failed to start ({why}); trying again in {delay:.0f} s")
        previous = self._start_failures.get(index)
        failed = Link(jid, since=previous.since if previous else None, failures=attempt)
        failed.down(self._clock(), f"failed to start: {why}", delay)
        self._start_failures[index] = failed
        self._retries[index] = self._ctx.background(
            self._restart(index, attempt + 1, delay), name=f"start {jid} again"
        )

    async def _restart(self, index: int, attempt: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closed:
            return
        try:
            await self.clients[index].connect()
        except Exception as err:
            self._start_failed(index, err, attempt)
        else:
            self._retries.pop(index, None)
            self._start_failures.pop(index, None)
            self._ctx.log.info("XMPP component %s started", self.routes.configs[index].jid)

    async def disconnect(self) -> None:
        self._closed = True
        retries = list(self._retries.values())
        self._retries.clear()
        for task in retries:
            task.cancel()
        # Wait until a restart cancelled mid-connect is over, so that stopping the components
        # below comes after anything it started.
        await asyncio.gather(*retries, return_exceptions=True)
        await asyncio.gather(*(c.disconnect() for c in self.clients), return_exceptions=True)

    def _reporter(self, index: int) -> Callable[[bool, str], None]:
        def report(up: bool, message: str) -> None:
            self._states[index] = (up, message)
            if len(self.clients) == 1:
                self._ctx.set_client_state(self.login_id, connected=up, message=message)
                return
            jid = self.routes.configs[index].jid
            self._ctx.set_client_state(LoginID(jid), connected=up, message=message)
            down = [f"{cfg.jid}: {state[1] or 'disconnected'}"
                    for cfg, state in zip(self.routes.configs, self._states, strict=True)
                    if not state[0]]  # fmt: skip
            self._ctx.set_client_state(self.login_id, connected=not down, message="; ".join(down))

        return report

    # --- for the operator ------------------------------------------------------------------------

    def links(self) -> Iterator[tuple[str, Link]]:
        """Every component stream of the hub, with what it serves: ``users`` (the Matrix users'
        JIDs) or ``rooms`` (Matrix rooms offered as MUCs)."""
        for index, client in enumerate(self.clients):
            failed = self._start_failures.get(index)
            yield "users", failed or client.component.link
            if client.hosted is not None:
                rooms = client.hosted.component.link
                yield "rooms", rooms if failed is None else replace(failed, domain=rooms.domain)

    def health_detail(self) -> dict[str, Any]:
        """``components``: one entry per component stream (core: ``SupportsHealthDetail``)."""
        now = self._clock()
        return {"components": [{**link.as_json(now), "serves": serves}
                               for serves, link in self.links()]}  # fmt: skip

    # --- calls that name a chat or a person -------------------------------------------------------

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        return await self.client_for(msg.portal.remote_id).handle_matrix_message(msg)

    async def convert_remote(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        return await self.client_for(item.portal.remote_id).convert_remote(item)

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        return await self.client_for(portal.remote_id).get_chat_info(portal)

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        return await self.client_for(user).get_user_info(user)

    async def start_direct_chat(self, user: RemoteUserID, matrix_user: str) -> PortalKey:
        try:
            domain = split_jid(user)[1]
        except ValueError:
            domain = ""
        if domain and self.routes.is_ours(domain):  # another component's Matrix user or room
            raise NotFound(
                f"cannot chat with {user!r}",
                user_message=f"{user} is not an XMPP address the bridge can reach.",
            )
        return await self.client_for(user).start_direct_chat(user, matrix_user)

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        return await self.client_for(remote_id).bridge_room(remote_id, matrix_user)

    # --- invites.Rooms: an invitation any component received, to a room one of them serves --

    def real_occupants(self, room: str) -> set[str]:
        return self.client_for(room).real_occupants(room)

    def leave_unbridged(self, room: str) -> None:
        self.client_for(room).leave_unbridged(room)

    def owns(self, domain: str) -> bool:
        return self.routes.is_ours(domain)


def _forward(name: str) -> Callable[..., Awaitable[Any]]:
    """``XmppClients.<name>``: the same call on the component of the portal it is about (the
    first argument is the portal or an event that has one); on every component if it is about
    no chat (a Matrix user's presence), each one's failure logged."""

    async def forward(self: XmppClients, first: Any, *args: Any, **kwargs: Any) -> Any:
        remote_id = getattr(getattr(first, "portal", first), "remote_id", None)
        if isinstance(remote_id, str):
            return await getattr(self.client_for(remote_id), name)(first, *args, **kwargs)
        calls = (getattr(client, name)(first, *args, **kwargs) for client in self.clients)
        results = await asyncio.gather(*calls, return_exceptions=True)
        for cfg, result in zip(self.routes.configs, results, strict=True):
            if isinstance(result, Exception):
                self._ctx.log.error("%s on component %s failed: %s", name, cfg.jid, result)
        return None

    forward.__name__ = forward.__qualname__ = name
    return forward


# Set on the class, not found through __getattr__: the core detects capabilities with
# isinstance() on runtime protocols, which from Python 3.12 looks at the class only.
for _name in dir(XmppClient):
    if _name.startswith("handle_matrix_") and _name not in XmppClients.__dict__:
        setattr(XmppClients, _name, _forward(_name))
