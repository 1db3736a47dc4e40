"""Who may use the bridge, and how far.

Levels come from ``bridge.permissions``: an mxid beats its domain beats ``*``.

- ``relay``: may talk in portals, but only through relay mode: the bot sends the message with
  the sender's name in front, and only if ``bridge.relay.enabled`` is on *and* the portal's
  relay is on (``set-relay``). Nothing else: no logins, no bridging, no adding people to chats.
- ``user``: logs in, bridges rooms (with the power level to change the room's state), starts
  chats, adds people to chats, manages the portals they are in.
- ``admin``: ``user`` plus the administration commands (dead letters, every portal and login).

Two operator choices travel with the levels: whether relay mode exists at all
(``bridge.relay.enabled``) and whether portals may be joined by anyone through their alias
(``bridge.portals.public``). So do the agencies (``bridge.agencies``, :mod:`bridge.core.agencies`):
an agency's admins administer what belongs to it, with the ``user`` level otherwise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from bridge.core.agencies import Agency, Scope, admin_scope, parse_agencies
from bridge.core.errors import PermanentError

if TYPE_CHECKING:
    from bridge.core.config import Config

RELAY_OFF_IN_CONFIG = (
    "Your Matrix account may only reach this network through relay mode, and this hub has "
    "relay mode turned off (`bridge.relay.enabled`). Ask its operator to turn it on."
)
RELAY_OFF_IN_PORTAL = (
    "Your Matrix account may only reach this network through relay mode, and relay mode is "
    "off in this room. Someone who may use the bridge can turn it on with `set-relay`."
)


class Permissions:
    NONE, RELAY, USER, ADMIN = 0, 1, 2, 3
    LEVELS = {"relay": RELAY, "user": USER, "admin": ADMIN}
    NAMES = {NONE: "none", RELAY: "relay", USER: "user", ADMIN: "admin"}

    def __init__(
        self,
        rules: Mapping[str, str],
        *,
        relay_enabled: bool = False,
        public_portals: bool = False,
        agencies: Collection[Agency] = (),
    ) -> None:
        self._rules = {key: self.LEVELS[value] for key, value in rules.items()}
        self.agencies = tuple(agencies)
        self.relay_enabled = relay_enabled
        """``bridge.relay.enabled``: without it no message is ever relayed."""
        self.public_portals = public_portals
        """``bridge.portals.public``: portals may be created for (and joined by) anyone who
        asks for a room alias in a network's namespace. Otherwise portals are invite only."""

    def level(self, mxid: str) -> int:
        if mxid in self._rules:
            return self._rules[mxid]
        domain = mxid.split(":", 1)[1] if ":" in mxid else ""
        if domain in self._rules:
            return self._rules[domain]
        return self._rules.get("*", self.NONE)

    @classmethod
    def from_config(cls, cfg: Config) -> Permissions:
        bridge = cfg.section("bridge")
        return cls(
            cfg.permissions,
            relay_enabled=cfg.relay_enabled,
            public_portals=bool(bridge["portals"]["public"]),
            agencies=parse_agencies(bridge.get("agencies")),
        )

    def admin_scope(self, mxid: str) -> Scope:
        """What ``mxid`` administers: everything (the ``admin`` level), the agencies they are
        an admin of (with at least the ``user`` level), or nothing (falsy)."""
        if self.level(mxid) < self.USER:
            return admin_scope(mxid, (), bridge_admin=False)
        return admin_scope(mxid, self.agencies, bridge_admin=self.level(mxid) >= self.ADMIN)

    def relay_only(self, mxid: str) -> bool:
        """Whether ``mxid`` reaches networks only through relay mode."""
        return self.level(mxid) == self.RELAY

    def check_relay(self, mxid: str, portal_relay_on: bool) -> None:
        """Raise the "not delivered" reason if a relay-level ``mxid`` may not be relayed."""
        if not self.relay_enabled:
            raise PermanentError(f"{mxid} is relay-level and relay is off in the config",
                                 user_message=RELAY_OFF_IN_CONFIG)  # fmt: skip
        if not portal_relay_on:
            raise PermanentError(f"{mxid} is relay-level and relay is off in the portal",
                                 user_message=RELAY_OFF_IN_PORTAL)  # fmt: skip


def may_send_state(
    power_levels: Mapping[str, Any],
    mxid: str,
    event_type: str,
    creators: Collection[str] = (),
) -> bool:
    """Whether ``mxid`` may send the state event ``event_type`` under ``power_levels`` (the
    content of ``m.room.power_levels``, as the spec reads it); ``creators`` have unlimited
    power (room version 12 and later, :func:`privileged_creators`). Malformed levels mean no."""
    if mxid in creators:
        return True
    try:
        users = power_levels.get("users") or {}
        events = power_levels.get("events") or {}
        if not isinstance(users, Mapping) or not isinstance(events, Mapping):
            return False
        have = int(users.get(mxid, power_levels.get("users_default", 0)))
        need = int(events.get(event_type, power_levels.get("state_default", 50)))
    except (TypeError, ValueError):
        return False
    return have >= need


def privileged_creators(create: Mapping[str, Any], sender: str) -> list[str]:
    """The creators of a room whose version gives them unlimited power, which the power levels
    then do not list (MSC4289: room version 12 and later); ``[]`` for older rooms.
    ``create`` is the content of ``m.room.create``, sent by ``sender``."""
    version = str(create.get("room_version") or "1")
    if not ((version.isdigit() and int(version) >= 12) or version == "org.matrix.hydra.11"):
        return []
    extra = create.get("additional_creators")
    return (
        [sender, *(u for u in extra if isinstance(u, str))] if isinstance(extra, list) else [sender]
    )
