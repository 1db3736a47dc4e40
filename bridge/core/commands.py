"""The management room: a DM between a Matrix user and the bridge bot.

A permitted user who invites the bot gets a management room; there, every message is a command
(the ``command_prefix`` is optional). Login flows come from the connectors; while one is waiting
for an answer, the user's next message is that answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge import __version__
from bridge.core.agency_view import AgencyView
from bridge.core.audit import AuditLog, command_action, retried
from bridge.core.connector import (
    LoginProcess,
    NetworkConnector,
    SupportsLogout,
    connector_named,
)
from bridge.core.contact_commands import ContactCommands
from bridge.core.errors import BridgeError, PermanentError
from bridge.core.ids import NetworkID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.core.portal_commands import ADMIN_REFUSAL, PortalCommands
from bridge.core.router import Router
from bridge.portal.dead_letters import Retried, line, retry_summary
from bridge.portal.models import BridgeUser, Login
from bridge.portal.store import Store

HELP = """\
**Pontis bridge** — commands (send them here, without a prefix; elsewhere start with
`{prefix}`). A `<room>` is `!id:server` or `#alias:server`.

- `help` — this list
- `version` — the bridge version; `ping` — check the bridge, the homeserver and each network
- `list` — your logins and the portals you are in
- `login <network>` — connect your own account on a network; `relogin <network>` — do it
  again (an expired session); `logout <network>` — disconnect it; `cancel` — stop a login
- `list-logins` — your logins and whether they are connected
- `start-chat <network> <id>` — a new chat with someone on a network, in a new room
- `search <network> <query>` — find people on a network, where it can be searched
- `bridge <network> <chat>` — in a room with the bot: bridge it to a chat on that network,
  e.g. `{prefix} bridge xmpp team@muc.example.org` (needs the power level to change the room)
- `bridge-team <network> <team link>` — bridge every chat of a group you belong to (the
  channels of a Teams team you are a member of), each in a new invite-only room; here only
- `unbridge <room>` — stop bridging a room (the same power level); the room stays
- `list-portals` — the portals you are in; `sync <room>` — fetch a portal's name, topic and
  members from its network again
- `set-relay <room>` / `unset-relay <room>` — relay mode in a portal: people who may only be
  relayed (the `relay` level) get their messages sent by the bridge with their name in front
  (needs the power level to change the room, and `bridge.relay.enabled`)
- `set-management-room` — make this room (just you and the bot) your management room
- `email contacts <room> list|add|remove <address>` — who receives a mail portal's new
  conversations (its members; answers always go to the people on the mail answered)

Bridge admins only (an agency's admins: for their agency's portals, logins and messages):
`dead-letters` lists what could not be bridged; `retry <id>|all` sends it again, in its
portal's order; `drop <id>|all` deletes it; `delete-portal <room>` forgets a portal and the
bridge leaves its room; `list-portals all` and `list-logins all` show everyone's.

Networks: {networks}"""

ADMIN_COMMANDS = frozenset({"dead-letters", "retry", "drop", "delete-portal"})
MANAGEMENT_ROOM_ONLY = frozenset({"dead-letters", "retry", "drop"})
LISTED = 20
"""Dead letters listed in the room; the command line lists more."""

REFUSAL = (
    "Hello! This bridge is not open to {mxid}. If you need it, ask your Matrix administrator "
    "to add you (or your server) to `bridge.permissions`."
)


async def finish_login(
    login: Login,
    *,
    actor: str,
    origin: str,
    store: Store,
    audit: AuditLog,
    load_login: Callable[[Login], Awaitable[None]],
) -> None:
    """Keep the login a flow completed: store it, audit it, connect it. The management room and
    the provisioning API both end a login here."""
    await store.save_login(login)
    await audit.record(actor=actor, action="login", target=f"{login.network} {login.login_id}",
                       outcome="ok", origin=origin, detail=login.remote_name or "")  # fmt: skip
    await load_login(login)


@dataclass(slots=True)
class _PendingLogin:
    network: NetworkID
    process: LoginProcess
    secret: bool


class CommandProcessor:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        router: Router,
        connectors: dict[NetworkID, NetworkConnector],
        permissions: Permissions,
        prefix: str,
        load_login: Callable[[Login], Awaitable[None]],
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._router = router
        self._connectors = connectors
        self._permissions = permissions
        self._prefix = prefix
        self._load_login = load_login
        self._log = log
        self._pending: dict[str, _PendingLogin] = {}
        self._portal_commands = PortalCommands(
            store=store, matrix=matrix, router=router, connectors=connectors,
            permissions=permissions, reply=self.reply, log=log,
        )  # fmt: skip
        self._contact_commands = ContactCommands(
            store=store, matrix=matrix, portals=router.portals, connectors=connectors,
            permissions=permissions, reply=self.reply, log=log,
        )  # fmt: skip

    async def handle(self, room_id: str, sender: str, event: dict[str, Any]) -> None:
        if event.get("type") == "m.room.member":
            await self._invited(room_id, sender, bool(event.get("content", {}).get("is_direct")))
            return
        content = event.get("content") or {}
        if content.get("msgtype") not in ("m.text", None) or "m.new_content" in content:
            return
        text = str(content.get("body", "")).strip()
        user = await self._store.get_user_by_management_room(room_id)
        in_management_room = user is not None and user.mxid == sender
        if text.startswith(self._prefix):
            text = text[len(self._prefix) :].strip()
        elif not in_management_room:
            return  # ordinary chatter in a room the bot is in
        if self._permissions.level(sender) < Permissions.USER:
            await self.reply(room_id, REFUSAL.format(mxid=sender))
            return
        pending = self._pending.get(sender)
        if in_management_room and pending is not None and text.lower() != "cancel":
            if pending.secret:
                await self._matrix.redact(
                    self._matrix.bot_mxid, room_id, event["event_id"], "login secret"
                )
            await self._login_answer(room_id, sender, pending, text)
            return
        command, _, args = text.partition(" ")
        if command.lower() in ADMIN_COMMANDS:
            if not self._permissions.admin_scope(sender):
                await self.reply(room_id, ADMIN_REFUSAL.format(command=command.lower()))
                await AuditLog(self._store).record(actor=sender, action=command_action(command), target=args.strip(), outcome="refused", origin=f"{'management-room' if in_management_room else 'room'} {room_id}", detail="needs the admin level")  # fmt: skip
                return
            if command.lower() in MANAGEMENT_ROOM_ONLY and not in_management_room:
                # dead letters hold other people's messages
                await self.reply(room_id, f"Send `{command.lower()}` in your management room.")
                return
        handler = {
            "help": self._help,
            "version": self._version,
            "ping": self._ping,
            "list": self._list,
            "login": self._login,
            "logout": self._logout,
            "cancel": self._cancel,
            "bridge": self._bridge,
            "dead-letters": self._dead_letters,
            "retry": self._retry,
            "drop": self._drop,
            "relogin": self._login,
            **self._portal_commands.handlers(),
            **self._contact_commands.handlers(),
        }.get(command.lower())
        if handler is None:
            await self.reply(room_id, f"Unknown command `{command}`. Send `help` for the list.")
            return
        try:
            await handler(room_id, sender, args.strip())
        except BridgeError as err:
            await self.reply(room_id, err.user_message)

    async def reply(self, room_id: str, markdown: str) -> None:
        from mautrix.util.markdown import render

        content = {
            "msgtype": "m.notice",
            "body": markdown,
            "format": "org.matrix.custom.html",
            "formatted_body": render(markdown),
        }
        await self._matrix.send(self._matrix.bot_mxid, room_id, content)

    async def _invited(self, room_id: str, sender: str, is_direct: bool) -> None:
        await self._matrix.join(room_id)
        if self._permissions.level(sender) < Permissions.USER:
            self._log.info("Refused invite to %s from %s: not permitted", room_id, sender)
            await self.reply(room_id, REFUSAL.format(mxid=sender))
            await self._matrix.leave(room_id, "not permitted to use this bridge")
            return
        if not is_direct:
            await self.reply(
                room_id,
                f"Hello! To bridge this room, send `{self._prefix} bridge <network> <chat>`.",
            )
            return
        await self._store.save_user(BridgeUser(mxid=sender, management_room=room_id))
        self._log.info("Management room for %s is %s", sender, room_id)
        await self.reply(room_id, "Hello! I am the Pontis bridge bot. " + self._help_text())

    def _help_text(self) -> str:
        networks = ", ".join(f"`{n}` ({c.info.display_name})" for n, c in self._connectors.items())
        return HELP.format(networks=networks or "none enabled", prefix=self._prefix)

    async def _help(self, room_id: str, sender: str, args: str) -> None:
        await self.reply(room_id, self._help_text())

    async def _version(self, room_id: str, sender: str, args: str) -> None:
        await self.reply(room_id, f"Pontis {__version__}")

    async def _ping(self, room_id: str, sender: str, args: str) -> None:
        start = time.monotonic()
        try:
            await self._matrix.ping_homeserver()
            lines = [
                f"- homeserver: reachable, round trip {(time.monotonic() - start) * 1000:.0f} ms"
            ]
        except Exception as err:
            lines = [f"- homeserver: **not reachable** ({err})"]
        for (network, login_id), loaded in sorted(self._router.clients.items()):
            if loaded.user_mxid not in (None, sender):
                continue
            who = "shared" if loaded.user_mxid is None else f"your login {login_id}"
            state = "connected" if loaded.connected else f"**{loaded.state_message}**"
            lines.append(f"- {network} ({who}): {state}")
        await self.reply(room_id, "\n".join(lines))

    async def _list(self, room_id: str, sender: str, args: str) -> None:
        logins = await self._store.list_logins(user_mxid=sender)
        lines = ["**Logins**"] + [
            f"- {login.network}: {login.remote_name or login.login_id}" for login in logins
        ]
        if not logins:
            lines.append("- none")
        lines.append("**Portals**")
        portals = await self._store.list_portals_for_user(sender)
        lines += [f"- {p.network}: {p.name or p.remote_id} ({p.mxid})" for p in portals]
        if not portals:
            lines.append("- none")
        await self.reply(room_id, "\n".join(lines))

    def _connector(self, network: str) -> NetworkConnector:
        return connector_named(self._connectors, network)

    async def _login(self, room_id: str, sender: str, args: str) -> None:
        connector = self._connector(args)
        flows = connector.login_flows()
        if not flows:
            await self.reply(
                room_id,
                f"{connector.info.display_name} needs no personal login: "
                "the bridge's shared account carries your messages.",
            )
            return
        process = await connector.start_login(sender, flows[0].id)
        await self._login_answer(
            room_id, sender, _PendingLogin(connector.info.id, process, False), None
        )

    async def _login_answer(
        self, room_id: str, sender: str, pending: _PendingLogin, answer: str | None
    ) -> None:
        try:
            step = await pending.process.submit(answer)
        except PermanentError as err:  # trying again cannot help (a policy refusal)
            self._pending.pop(sender, None)
            await self.reply(room_id, err.user_message)
            return
        except BridgeError as err:
            await self.reply(room_id, f"{err.user_message} Try again, or send `cancel`.")
            return
        if step.kind == "user_input":
            pending.secret = step.secret
            self._pending[sender] = pending
            await self.reply(room_id, step.instructions)
            return
        self._pending.pop(sender, None)
        if step.login is not None:
            await finish_login(step.login, actor=sender, origin=f"room {room_id}", store=self._store, audit=AuditLog(self._store), load_login=self._load_login)  # fmt: skip
        await self.reply(room_id, step.instructions)

    async def _bridge(self, room_id: str, sender: str, args: str) -> None:
        network, _, remote_id = args.partition(" ")
        remote_id = remote_id.strip()
        if not remote_id:
            self._connector(network)  # an unknown network is named before the usage
            await self.reply(room_id, f"Usage: `{self._prefix} bridge {network} <chat>`")
            return
        portal = await self._router.bridging.bridge_command(room_id, sender, network, remote_id)
        name = self._connectors[portal.network].info.display_name
        await self.reply(room_id, f"This room is now bridged to {name} `{portal.remote_id}`.")

    async def _cancel(self, room_id: str, sender: str, args: str) -> None:
        pending = self._pending.pop(sender, None)
        if pending is None:
            await self.reply(room_id, "Nothing to cancel.")
            return
        await pending.process.cancel()
        await self.reply(room_id, "Login cancelled.")

    async def _logout(self, room_id: str, sender: str, args: str) -> None:
        connector = self._connector(args)
        logins = await self._store.list_logins(network=connector.info.id, user_mxid=sender)
        if not logins:
            await self.reply(room_id, f"You are not logged in to {connector.info.display_name}.")
            return
        for login in logins:
            loaded = self._router.remove_client(login.network, login.login_id)
            if loaded is not None:
                if isinstance(loaded.client, SupportsLogout):
                    await loaded.client.logout_remote()
                await loaded.client.disconnect()
            await self._store.delete_login(login.network, login.login_id)
            await AuditLog(self._store).record(actor=sender, action="logout", target=f"{login.network} {login.login_id}", outcome="ok", origin=f"room {room_id}")  # fmt: skip
        await self.reply(room_id, f"Logged out of {connector.info.display_name}.")

    # --- dead letters (admins) ------------------------------------------------------------------

    async def _dead_letters(self, room_id: str, sender: str, args: str) -> None:
        await AuditLog(self._store).record(actor=sender, action="dead-letters.list", target="", outcome="ok", origin=f"management-room {room_id}")  # fmt: skip
        scope = self._permissions.admin_scope(sender)
        letters, total = await AgencyView(self._store).letters(scope, LISTED)
        if not letters:
            await self.reply(room_id, "No dead letters: everything was bridged.")
            return
        shown = f"; the newest {len(letters)} shown" if total > len(letters) else ""
        head = f"**Dead letters** ({total}{shown})"
        body = "\n".join(line(letter).replace("`", "'") for letter in letters)
        await self.reply(
            room_id,
            f"{head}\n\n```\n{body}\n```\n\n`retry <id>|all` sends one again, "
            "`drop <id>|all` deletes it.",
        )

    def _letter_id(self, args: str, command: str) -> int | None:
        """The id in ``args``, None for ``all``; raises a usage error otherwise."""
        if args.lower() == "all":
            return None
        if args.isascii() and args.isdigit() and len(args) < 18:
            return int(args)
        raise BridgeError(f"bad {command} argument", user_message=f"Usage: `{command} <id>|all`")

    async def _retry(self, room_id: str, sender: str, args: str) -> None:
        letter_id = self._letter_id(args, "retry")
        dead, view = self._store.dead_letters, AgencyView(self._store)
        scope = self._permissions.admin_scope(sender)
        if letter_id is None:
            ids = await view.letter_ids(scope)
            results = await dead.retry_all() if ids is None else [await dead.retry(i) for i in ids]
        elif await view.has_letter(scope, letter_id):
            results = [await dead.retry(letter_id)]
        else:
            results = [Retried(letter_id, "missing")]  # another agency's is none of theirs
        # Here the bridge itself moved them: no need to wait for the next look at the tables.
        self._router.notify_inbox()
        await self._router.remote.poll()
        self._log.info("%s retried dead letters %s", sender, args)
        await AuditLog(self._store).record(actor=sender, action="dead-letters.retry", target=args, outcome=retried(letter_id, results)[0], origin=f"management-room {room_id}", detail=retried(letter_id, results)[1])  # fmt: skip
        await self.reply(room_id, retry_summary(results))

    async def _drop(self, room_id: str, sender: str, args: str) -> None:
        letter_id = self._letter_id(args, "drop")
        dead, view = self._store.dead_letters, AgencyView(self._store)
        scope = self._permissions.admin_scope(sender)
        if letter_id is None:
            ids = await view.letter_ids(scope)
            count = await dead.drop_all() if ids is None else sum([await dead.drop(i) for i in ids])
            text = f"Dropped {count} dead letter{'s' if count != 1 else ''}."
        elif await view.has_letter(scope, letter_id) and await dead.drop(letter_id):
            text = f"Dropped dead letter {letter_id}."
        else:
            text = f"There is no dead letter {letter_id}."
        self._log.info("%s dropped dead letters %s", sender, args)
        await AuditLog(self._store).record(actor=sender, action="dead-letters.drop", target=args, outcome="failed" if text.startswith("There is no") else "ok", origin=f"management-room {room_id}", detail=text)  # fmt: skip
        await self.reply(room_id, text)
