"""``bridge-team <network> <group>``: every chat of a remote group, each in a new room.

A Teams team is the group, its channels the chats. The connector says which chats of the group
the user may read (:class:`SupportsGroupBridging`); each is then bridged exactly as ``bridge
<network> <chat>`` would bridge it (:meth:`SupportsRoomBridging.bridge_room`), but into a new
invite-only room the bridge creates and invites the user to, under the group's space. A chat
that has a portal already is left as it is (its room may be someone else's): running the
command again bridges only what is new. At most :data:`LIMIT` chats are bridged at a time.

One chat failing (the network away halfway, a chat that refuses) stops nothing: the chats
bridged before and after it stay bridged, and the answer names the ones that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import cast

from bridge.core.adopt import Refused
from bridge.core.audit import AuditLog
from bridge.core.clients import ClientRegistry
from bridge.core.connector import (
    GroupChat,
    NetworkConnector,
    SupportsGroupBridging,
    SupportsPolicyDomain,
    SupportsRoomBridging,
)
from bridge.core.errors import BridgeError, NotSupported
from bridge.core.federation import FederationPolicy, remote_domain
from bridge.core.ids import LoginID
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.models import Portal
from bridge.portal.store import Store

LIMIT = 50
"""Chats one command tries to bridge (chats bridged already do not count); the rest are
named as left out, and the next run starts with them."""


@dataclass(slots=True)
class GroupBridged:
    """What one ``bridge-team`` did, for the user's answer."""

    bridged: list[tuple[GroupChat, Portal]] = field(default_factory=list)
    already: list[tuple[GroupChat, Portal]] = field(default_factory=list)
    failed: list[tuple[GroupChat, str]] = field(default_factory=list)
    """Each with the sentence the network gave the user."""
    left_out: list[GroupChat] = field(default_factory=list)
    """Over :data:`LIMIT`."""

    def answer(self, network: str) -> str:
        lines: list[str] = []
        if self.bridged:
            n = len(self.bridged)
            each = "each in a new invite-only room" if n > 1 else "in a new invite-only room"
            lines.append(f"Bridged {n} {_chats(n)}, {each} you are invited to:")
            lines += [f"- {_plain(chat.name)}: {portal.mxid}" for chat, portal in self.bridged]
        if self.already:
            lines.append("Already bridged, left as they are:")
            lines += [
                f"- {_plain(chat.name)}: {portal.mxid}" for chat, portal in self.already[:LIMIT]
            ]
            if len(self.already) > LIMIT:
                lines.append(f"- … and {len(self.already) - LIMIT} more")
        if self.failed:
            lines.append("Not bridged (send the command again to retry them):")
            lines += [f"- {_plain(chat.name)}: {why}" for chat, why in self.failed]
        if self.left_out:  # not so long that the answer would not be read
            names = ", ".join(_plain(chat.name) for chat in self.left_out[:10])
            more = f" and {len(self.left_out) - 10} more" if len(self.left_out) > 10 else ""
            lines.append(
                f"Only the first {LIMIT} are bridged at a time; left out: {names}{more}. Send"
                f" the command again for them, or bridge one with `bridge {network} <link>`."
            )
        return "\n".join(lines) or "There is nothing in it you can read to bridge."


def _plain(name: str) -> str:
    """A remote chat's name as plain text in the Markdown answer: a channel called
    ``[Click](https://…)`` or ``<b>`` shows as written, not as a link or markup."""
    return _MARKDOWN.sub(r"\\\1", " ".join(name.split()))


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~&])")


def _chats(n: int) -> str:
    return "chat" if n == 1 else "chats"


async def bridge_group(
    group: str,
    sender: str,
    *,
    connector: NetworkConnector,
    permissions: Permissions,
    federation: FederationPolicy,
    clients: ClientRegistry,
    portals: PortalManager,
    store: Store,
    log: logging.Logger,
    origin: str,
    lock: asyncio.Lock | None = None,
) -> GroupBridged:
    """``sender`` ran ``bridge-team <network> <group>`` (in ``origin``, for the audit log).
    :class:`Refused` (audited, nothing created) if they may not or the network refuses them
    the group. ``lock`` is the one ``bridge`` holds while it gives a chat its room
    (:attr:`RoomBridging.lock`): a chat never gets two."""
    audit = AuditLog(store)
    target = f"{connector.info.id} {group}"
    try:
        if permissions.level(sender) < Permissions.USER:
            raise Refused(f"{sender} may not bridge", user_message="You may not bridge chats here.")
        # A network whose ids do not name the remote side checks the policy itself (the
        # group's organisation is known only once it is parsed).
        if not isinstance(connector, SupportsPolicyDomain) and (
            refused := federation.refusal(
                connector.info.id, remote_domain(group), sender, entry="bridge-team command"
            )
        ):
            raise Refused(str(refused), user_message=refused.user_message)
        loaded = clients.client_for(connector.info.id, LoginID(""), sender)
        if not (loaded.features.room_bridging and isinstance(loaded.client, SupportsGroupBridging)):
            name = connector.info.display_name
            raise Refused(
                f"{connector.info.id} has no group bridging",
                user_message=f"{name} has no groups of chats to bridge at once.",
            )
        chats = await loaded.client.group_chats(group, sender)
    except NotSupported as err:
        await audit.record(actor=sender, action="bridge-team", target=target, outcome="refused", origin=origin, detail=str(err))  # fmt: skip
        raise
    client = cast(SupportsRoomBridging, loaded.client)
    done = GroupBridged()
    for chat in chats:
        existing = await portals.find_portal(chat.key)
        if existing is not None and existing.mxid:
            done.already.append((chat, existing))
            continue
        if len(done.bridged) + len(done.failed) >= LIMIT:
            done.left_out.append(chat)  # the next run starts with them
            continue
        try:
            key, info = await client.bridge_room(chat.bridge_id, sender)
            if key != chat.key:
                raise BridgeError(f"{chat.bridge_id} answered with {key}, listed as {chat.key}")
            info.matrix_users = list(dict.fromkeys([*(info.matrix_users or []), sender]))
            async with lock or contextlib.nullcontext():  # as `bridge` picks a chat's room
                # A `bridge` of this chat while the network was asked: theirs, left as it is.
                existing = await portals.find_portal(chat.key)
                if existing is not None and existing.mxid:
                    done.already.append((chat, existing))
                    continue
                portal = await portals.ensure_portal(key, loaded.client, info)
        except BridgeError as err:
            log.warning("bridge-team by %s: %s not bridged: %s", sender, chat.key, err)
            done.failed.append((chat, err.user_message))
            continue
        done.bridged.append((chat, portal))
    log.info("%s bridged %d chats of %s (%d already, %d failed, %d left out)", sender,
             len(done.bridged), target, len(done.already), len(done.failed), len(done.left_out))  # fmt: skip
    await audit.record(actor=sender, action="bridge-team", target=target, outcome="failed" if done.failed else "ok", origin=origin, detail=", ".join(p.mxid or "" for _, p in done.bridged))  # fmt: skip
    return done
