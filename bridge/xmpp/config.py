"""The ``connectors.xmpp`` section: defaults and types (validated by the core)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.core.config import ConfigError, ConfigProblem
from bridge.core.remote_files import AllowedAddress, parse_allowed

EXAMPLE_CONFIG = """\
enabled: false
component:
    # The component's domain (XEP-0114). Matrix users appear on XMPP as
    # <escaped mxid>@<jid>, e.g. alice\\3ahub.example@matrix.xmpp.example.org.
    jid: matrix.xmpp.example.org
    # Where the XMPP server accepts component connections (keep it on loopback or a
    # private network: XEP-0114 has no TLS).
    host: 127.0.0.1
    port: 5347
    # component_secret of this component in the XMPP server's config.
    secret: generate
# Domain on which Matrix rooms are offered as MUCs (a second component, same secret).
rooms_domain: rooms.xmpp.example.org
# XEP-0363 upload service used to send files from Matrix, e.g. upload.xmpp.example.org.
# Empty: files from Matrix are refused with a notice.
upload_service: ""
# Nickname of the bridge's listener in bridged MUCs.
muc_nick: Matrix bridge
# After an outage the bridge catches up on bridged MUCs from their archive (XEP-0313), without
# a limit. For rooms without an archive, and rooms the bridge has no record of, it asks for at
# most this many messages of MUC history on (re)join. Also the messages of Matrix history an
# XMPP person gets on first joining a room the bridge hosts.
history_on_join: 50
# Every this many minutes the bridge checks that it is still in each bridged MUC (XEP-0410
# self-ping) and rejoins if not. 0: only kicks and errors the room reports trigger a rejoin.
self_ping_minutes: 5
# Largest file the bridge downloads from XMPP (MiB).
max_file_mib: 50
# Files from XMPP arrive as links (XEP-0066, XEP-0363) that the bridge downloads. Links to
# loopback, private, link-local, multicast or reserved addresses are refused, so that a
# stranger's link cannot reach services inside your network. List the addresses your own
# upload service uses, as precisely as you can: "10.1.2.3:5281", "[fd00::5]:443",
# "10.1.0.0/16:443", or a network without a port ("10.1.0.0/16").
fetch_allow_private: []
"""


@dataclass(frozen=True, slots=True)
class XmppConfig:
    jid: str
    host: str
    port: int
    secret: str
    rooms_domain: str
    upload_service: str
    muc_nick: str
    history_on_join: int
    max_file_bytes: int
    fetch_allow_private: tuple[AllowedAddress, ...] = ()
    self_ping_minutes: float = 5.0

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> XmppConfig:
        component = section["component"]
        return cls(
            jid=str(component["jid"]).lower(),
            host=str(component["host"]),
            port=int(component["port"]),
            secret=str(component["secret"]),
            rooms_domain=str(section["rooms_domain"]).lower(),
            upload_service=str(section["upload_service"]),
            muc_nick=str(section["muc_nick"]),
            history_on_join=int(section["history_on_join"]),
            max_file_bytes=int(section["max_file_mib"]) * 1024 * 1024,
            fetch_allow_private=_allowed(section.get("fetch_allow_private") or []),
            self_ping_minutes=_minutes(section.get("self_ping_minutes", 5)),
        )

    @property
    def listener_jid(self) -> str:
        """The bridge's own occupant in bridged MUCs. No escaped mxid can equal it (those
        always contain ``\\3a``)."""
        return f"bridge@{self.jid}"


def _minutes(value: Any) -> float:
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        minutes = -1.0
    if not minutes >= 0:  # also NaN
        raise ConfigError(
            [ConfigProblem("connectors.xmpp.self_ping_minutes", "expected 0 or more minutes")]
        )
    return minutes


def _allowed(entries: list[Any]) -> tuple[AllowedAddress, ...]:
    allowed, problems = [], []
    for index, entry in enumerate(entries):
        try:
            allowed.append(parse_allowed(entry))
        except ValueError as err:
            problems.append(
                ConfigProblem(f"connectors.xmpp.fetch_allow_private[{index}]", str(err))
            )
    if problems:
        raise ConfigError(problems)
    return tuple(allowed)
