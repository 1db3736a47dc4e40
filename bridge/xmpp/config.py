"""The ``connectors.xmpp`` section: defaults and types (validated by the core)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
# Domain on which Matrix rooms are offered as MUCs (reserved; not served yet).
rooms_domain: rooms.xmpp.example.org
# XEP-0363 upload service used to send files from Matrix, e.g. upload.xmpp.example.org.
# Empty: files from Matrix are refused with a notice.
upload_service: ""
# Nickname of the bridge's listener in bridged MUCs.
muc_nick: Matrix bridge
# Messages of MUC history requested on every (re)join, to catch up after an outage.
history_on_join: 50
# Largest file the bridge downloads from XMPP (MiB).
max_file_mib: 50
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
        )

    @property
    def listener_jid(self) -> str:
        """The bridge's own occupant in bridged MUCs. No escaped mxid can equal it (those
        always contain ``\\3a``)."""
        return f"bridge@{self.jid}"
