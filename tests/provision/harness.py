"""The provisioning API served for real (aiohttp on a loopback port, a real store on SQLite or
PostgreSQL) in a thread of its own, so that synchronous HTTP clients (schemathesis, requests)
can call it. The homeserver is a double that records what the bridge asked of it and answers
``whoami`` for a few access tokens; the network is a small in-memory one (as in
tests/test_adopt.py) whose people can be searched and chatted with, with a two-step login flow
(:class:`TokenLogin`), and a second, ``plain`` network can do none of it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from bridge.core.adopt import RoomBridging
from bridge.core.agencies import parse_agencies
from bridge.core.clients import ClientRegistry
from bridge.core.connector import Contact, LoginFlow, LoginStep, NetworkInfo
from bridge.core.errors import BridgeError, NotFound, PermanentError
from bridge.core.events import ChatInfo, UserInfo
from bridge.core.federation import FederationPolicy
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteUserID
from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.dead_letters import UnreadableEvent
from bridge.portal.models import InboxItem, Login, Portal
from bridge.portal.store import Store
from bridge.provision import PREFIX, build_app
from bridge.provision.auth import Authenticator
from tests.store_fixtures import StoreTarget

T = TypeVar("T")
NET = NetworkID("reference")
PLAIN = NetworkID("plain")
DOMAIN = "hub.test"
BOT = f"@pontis:{DOMAIN}"
ALICE, BOB, ADMIN = f"@alice:{DOMAIN}", f"@bob:{DOMAIN}", f"@admin:{DOMAIN}"
RELAY_USER = f"@guest:{DOMAIN}"
STRANGER = "@mallory:evil.test"
GHOST = f"@reference_bob:{DOMAIN}"
SECRET = "s3cret-shared-provisioning-key-0123456789"
BOB_IT = f"@bob-it:{DOMAIN}"  # an admin of Bob's agency only
CAROL = "@carol:partner.test"  # may use the bridge, but no federation rule lets her reach anyone
TOKENS = {"alice-token": ALICE, "admin-token": ADMIN, "stranger-token": STRANGER}
AGENCIES = {"bobs": {"matrix": [BOB], "admins": [BOB_IT]}}
PERMISSIONS = {"*": "relay", DOMAIN: "user", ADMIN: "admin", f"@guest:{DOMAIN}": "relay",
               CAROL: "user"}  # fmt: skip
PEOPLE = {"dana@elsewhere.test": "Dana", "dan@elsewhere.test": "Dan", "eve@evil.test": "Eve"}
"""Whom the reference network's search finds and whom a chat can be started with."""

ALICE_ROOM = f"!alice-room:{DOMAIN}"  # Alice and Bob are in it; Alice may change its state
BOB_ROOM = f"!bob-room:{DOMAIN}"  # only Bob is in it
POWERLESS_ROOM = f"!powerless:{DOMAIN}"  # Alice is in it, without the power level
PORTAL_ROOM = f"!portal:{DOMAIN}"  # Alice's room, already the portal of chat "one"
BOB_PORTAL_ROOM = f"!bob-portal:{DOMAIN}"  # Bob's, the portal of chat "two"
ALICE_LOGIN, BOB_LOGIN = LoginID("alice@reference"), LoginID("bob@reference")


class Homeserver:
    """What the bridge asked of Matrix; rooms with their members and power levels."""

    bot_mxid = BOT
    encryption = None

    def __init__(self) -> None:
        admins = {ALICE: 100, BOB: 100, ADMIN: 100}
        self.rooms: dict[str, tuple[set[str], dict[str, Any]]] = {
            ALICE_ROOM: ({BOT, ALICE, BOB, ADMIN}, {"users": admins}),
            BOB_ROOM: ({BOT, BOB}, {"users": {BOB: 100}}),
            POWERLESS_ROOM: ({BOT, ALICE, BOB}, {"users": {BOB: 100}}),
            PORTAL_ROOM: ({BOT, ALICE, ADMIN}, {"users": admins}),
            BOB_PORTAL_ROOM: ({BOT, BOB}, {"users": {BOB: 100}}),
        }
        self.state: list[tuple[str, str]] = []
        self.created: list[tuple[str, list[str]]] = []  # (room, invited)
        self.invited: list[tuple[str, str]] = []
        self.whoami_calls = 0

    def _room(self, room_id: str) -> tuple[set[str], dict[str, Any]]:
        if room_id not in self.rooms:
            raise PermanentError(f"the bot is not in {room_id}")
        return self.rooms[room_id]

    async def joined_members(self, room_id: str) -> dict[str, str]:
        return {mxid: mxid for mxid in self._room(room_id)[0]}

    async def power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]:
        return self._room(room_id)[1], []  # (levels, creators with unlimited power)

    async def set_state(self, sender: str, room_id: str, event_type: str, content: Any,
                        state_key: str) -> None:  # fmt: skip
        self.state.append((room_id, event_type))

    async def create_room(self, *, is_direct: bool, invite: list[str], **_: Any) -> str:
        room_id = f"!dm{len(self.created) + 1}:{DOMAIN}"
        self.created.append((room_id, list(invite)))
        self.rooms[room_id] = ({BOT}, {"users": {BOT: 100}})
        return room_id

    async def invite(self, room_id: str, mxid: str, *, inviter: str | None = None) -> None:
        self.invited.append((room_id, mxid))

    async def room_encrypted(self, room_id: str) -> bool:
        return False

    async def room_name_and_topic(self, room_id: str) -> tuple[str | None, str | None]:
        return "Room", None

    async def ensure_registered(self, mxid: str) -> None:
        pass

    async def set_profile(self, mxid: str, **_: Any) -> None:
        pass

    async def ensure_joined(self, mxid: str, room_id: str) -> None:
        pass

    async def whoami(self, request: web.Request) -> web.Response:
        self.whoami_calls += 1
        assert "user_id" not in request.query  # never masquerade
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in TOKENS:
            return web.json_response({"errcode": "M_UNKNOWN_TOKEN", "error": "?"}, status=401)
        return web.json_response({"user_id": TOKENS[token]})


class Network:
    """A network whose chats ``one``, ``two`` and ``three`` can be bridged into rooms, and
    whose :data:`PEOPLE` can be searched and chatted with."""

    login_id = LoginID("")

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        self.asked.append((remote_id, matrix_user))
        if remote_id not in ("one", "two", "three"):
            raise NotFound(f"no chat {remote_id}", user_message=f"There is no chat {remote_id}.")
        return PortalKey(NET, RemoteChatID(remote_id)), ChatInfo(name=f"Chat {remote_id}")

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        return ChatInfo(name=f"Chat {portal.remote_id}")

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        return UserInfo(name=PEOPLE.get(user, user))

    async def search_users(
        self, query: str, matrix_user: str
    ) -> list[tuple[RemoteUserID, UserInfo]]:
        self.asked.append(("search", query))
        return [(RemoteUserID(u), UserInfo(name=n)) for u, n in PEOPLE.items() if query in u]

    async def start_direct_chat(self, user: RemoteUserID, matrix_user: str) -> PortalKey:
        self.asked.append((f"chat {user}", matrix_user))
        if user not in PEOPLE:
            raise NotFound(f"no {user}", user_message=f"There is nobody called {user}.")
        return PortalKey(NET, RemoteChatID(f"dm {user} {matrix_user}"))


class PlainNetwork:
    """A network that can be neither searched nor have chats started from Matrix."""

    login_id = LoginID("")

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        return ChatInfo(name=str(portal.remote_id))

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        return UserInfo(name=user)


class PersonalClient(Network):
    """A user's own login (bridging through the shared network); remembers being logged out."""

    def __init__(self, login_id: LoginID, network: Network) -> None:
        self.asked = network.asked
        self.login_id = login_id
        self.logged_out = False
        self.disconnected = False

    async def logout_remote(self) -> None:
        self.logged_out = True

    async def disconnect(self) -> None:
        self.disconnected = True


GOOD_TOKEN = "good-token"
"""The token the reference network's login flow accepts."""


class TokenLogin:
    """The reference network's login flow: it asks for a token (a secret), refuses an answer
    with a space in it and keeps asking, ends on a wrong token, and completes on
    :data:`GOOD_TOKEN` with the login ``<user>/token``, which keeps the token (as a connector
    keeps what it needs to connect again)."""

    def __init__(self, user: str, network: Network) -> None:
        self.user = user
        self.network = network
        self.cancelled = False

    async def submit(self, answer: str | None) -> LoginStep:
        self.network.asked.append(("login", self.user))  # never the answer itself
        if answer is None:
            return LoginStep(kind="user_input", instructions="Send your token.", secret=True)
        if " " in answer:
            raise BridgeError("token with a space", user_message="A token has no spaces.")
        if answer != GOOD_TOKEN:
            raise PermanentError("wrong token", user_message="The network refused this token.")
        login = Login(network=NET, login_id=LoginID(f"{self.user}/token"), user_mxid=self.user,
                      remote_name="Token user", metadata={"token": answer})  # fmt: skip
        return LoginStep(kind="complete", instructions="You are logged in.", login=login)

    async def cancel(self) -> None:
        self.cancelled = True
        self.network.asked.append(("login cancelled", self.user))


class Connector:
    info = NetworkInfo(id=NET, display_name="Reference")

    def __init__(self, network: Network) -> None:
        self.network = network
        self.started: list[TokenLogin] = []
        self.contacts: dict[PortalKey, list[str]] = {}
        """Contacts per portal (SupportsContacts); an id without ``@`` is refused."""

    async def list_contacts(self, portal: PortalKey) -> list[Contact]:
        return [Contact(RemoteUserID(c)) for c in self.contacts.get(portal, [])]

    async def add_contact(self, portal: PortalKey, remote_id: str) -> Contact:
        if "@" not in remote_id:
            raise PermanentError("bad id", user_message=f"{remote_id} is not an address.")
        if remote_id not in (known := self.contacts.setdefault(portal, [])):
            known.append(remote_id)
        return Contact(RemoteUserID(remote_id))

    async def remove_contact(self, portal: PortalKey, remote_id: str) -> bool:
        known = self.contacts.get(portal, [])
        if remote_id in known:
            known.remove(remote_id)
            return True
        return False

    def login_flows(self) -> list[LoginFlow]:
        return [LoginFlow(id="token", name="Token", description="A token of the network")]

    async def start_login(self, user_mxid: str, flow_id: str) -> TokenLogin:
        assert flow_id == "token"
        self.started.append(TokenLogin(user_mxid, self.network))
        return self.started[-1]


class PlainConnector:
    info = NetworkInfo(id=PLAIN, display_name="Plain")

    def login_flows(self) -> list[LoginFlow]:
        return []


class ApiServer:
    """The API on 127.0.0.1:<port>, with its own event loop in a thread."""

    def __init__(
        self, target: StoreTarget, *, secret: str | None = SECRET, relay_enabled: bool = True
    ) -> None:
        self._target = target
        self._secret = secret
        self._relay_enabled = relay_enabled
        self.homeserver = Homeserver()
        self.network = Network()
        self.clients_of: dict[LoginID, PersonalClient] = {}
        self.retries = 0
        self.now = 0.0
        """The clock of the login processes; a test moves it on."""
        self.connector = Connector(self.network)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self.store: Store
        self.clients: ClientRegistry
        self.url = ""

    def __enter__(self) -> ApiServer:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (to seed or read the store) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    async def _after_retry(self) -> None:
        self.retries += 1

    async def _load_login(self, login: Login) -> None:
        """As :meth:`App.load_login`: the login's client joins the registry."""
        client = PersonalClient(login.login_id, self.network)
        self.clients_of[login.login_id] = client
        self.clients.add(login.network, client, login.user_mxid)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self.store = await self._target.open()
        log = logging.getLogger("test.provision")
        matrix: Any = self.homeserver
        connectors: Any = {NET: self.connector, PLAIN: PlainConnector()}
        portals = PortalManager(store=self.store, matrix=matrix, domain=DOMAIN, bridge_id="pontis",
                                networks={NET: Connector.info, PLAIN: PlainConnector.info},
                                log=log)  # fmt: skip
        self.clients = clients = ClientRegistry(connectors, Metrics(), log)
        clients.add(NET, self.network)  # type: ignore[arg-type]
        clients.add(PLAIN, PlainNetwork())  # type: ignore[arg-type]
        for login_id, user in ((ALICE_LOGIN, ALICE), (BOB_LOGIN, BOB)):
            client = PersonalClient(login_id, self.network)
            self.clients_of[login_id] = client
            clients.add(NET, client, user)  # type: ignore[arg-type]
        permissions = Permissions(PERMISSIONS, relay_enabled=self._relay_enabled,
                                  agencies=parse_agencies(AGENCIES))  # fmt: skip
        bridging = RoomBridging(
            store=self.store, matrix=matrix, portals=portals, clients=clients,
            connectors=connectors, permissions=permissions, domain=DOMAIN, log=log,
            federation=FederationPolicy(None, DOMAIN),
        )  # fmt: skip
        hs_url = await self._serve(self._homeserver_app())
        self._http = aiohttp.ClientSession()
        auth = Authenticator(
            shared_secret=self._secret, permissions=permissions, http=self._http,
            homeserver_url=hs_url, is_puppet=lambda mxid: mxid in (BOT, GHOST), log=log,
        )  # fmt: skip
        root = web.Application(client_max_size=16 * 1024**2)  # as the bridge's own server
        root.add_subapp(PREFIX, build_app(
            auth=auth, store=self.store, matrix=matrix, portals=portals, bridging=bridging,
            clients=clients, connectors=connectors, permissions=permissions,
            after_retry=self._after_retry, load_login=self._load_login, log=log,
            clock=lambda: self.now,
        ))  # fmt: skip
        self.url = await self._serve(root) + PREFIX
        await self._seed()

    def _homeserver_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_matrix/client/v3/account/whoami", self.homeserver.whoami)
        return app

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _seed(self) -> None:
        store = self.store
        for room, chat, user in ((PORTAL_ROOM, "one", ALICE), (BOB_PORTAL_ROOM, "two", BOB)):
            key = PortalKey(NET, RemoteChatID(chat))
            await store.save_portal(Portal(network=NET, remote_id=key.remote_id, mxid=room,
                                           name=f"Chat {chat}"))  # fmt: skip
            await store.add_portal_user(user, key)
        for login_id, user in ((ALICE_LOGIN, ALICE), (BOB_LOGIN, BOB)):
            await store.save_login(Login(network=NET, login_id=login_id, user_mxid=user,
                                         metadata={"password": "hunter2"}))  # fmt: skip
        rows = await store.store_transaction("t1", [InboxItem(
            kind="pdu", event_id="$lost", room_id=PORTAL_ROOM,
            payload={"type": "m.room.message", "event_id": "$lost", "room_id": PORTAL_ROOM,
                     "sender": ALICE, "content": {"body": "hi", "access_token": "leak"}},
        )])  # fmt: skip
        assert rows is not None
        await store.park_inbox(rows[0].id, "the network refused it")
        await store.dead_letters.park_unreadable("t2", [UnreadableEvent(
            kind="pdu", raw={"garbage": True}, reason="no event id", room_id=ALICE_ROOM,
        )])  # fmt: skip

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        await self._http.close()
        await self.store.close()

    # --- what a test checks -------------------------------------------------------------------

    async def _snapshot(self) -> dict[str, Any]:
        db = self.store.database
        tables = {}
        for table, order in (("portal", "network, remote_id"), ("user_portal", "user_mxid, portal_id"),
                             ("login", "network, login_id"), ("dead_letter", "id"),
                             ("inbox", "id"), ("bridge_user", "mxid"),
                             ("ghost", "network, remote_id")):  # fmt: skip
            rows = await db.fetch(f"SELECT * FROM {table} ORDER BY {order}")
            tables[table] = [tuple(row) for row in rows]
        return tables

    def snapshot(self) -> dict[str, Any]:
        """Everything the API could change: the store's rows, what the homeserver and the
        network were asked, the clients' state."""
        return {
            "store": self.run(self._snapshot()),
            "state": list(self.homeserver.state),
            "rooms": list(self.homeserver.created),
            "invited": list(self.homeserver.invited),
            "network": list(self.network.asked),
            "contacts": {str(k): list(v) for k, v in self.connector.contacts.items()},
            "clients": {k: (c.logged_out, c.disconnected) for k, c in self.clients_of.items()},
            "retries": self.retries,
        }
