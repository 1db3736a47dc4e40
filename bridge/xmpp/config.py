"""The ``connectors.xmpp`` section: defaults and types (validated by the core)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bridge.core.config import ConfigError, ConfigProblem
from bridge.core.remote_files import AllowedAddress, parse_allowed
from bridge.xmpp.protocol.escaping import is_valid_jid

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
# Further components, one per agency XMPP domain, each connecting on its own: one that is down
# does not stop the others. The component above is the default: it reaches every XMPP domain
# no entry here lists. Matrix users appear on each as <escaped mxid>@<its jid>.
components: []
#   - jid: matrix.agency-b.example
#     host: 10.2.0.5
#     port: 5347
#     secret: generate            # or secret_file: /etc/pontis/agency-b.secret
#     # Optional: Matrix rooms offered as MUCs on this domain, and its XEP-0363 service.
#     rooms_domain: rooms.agency-b.example
#     upload_service: upload.agency-b.example
#     # The XMPP domains reached through this component: its users and its MUC service.
#     # "*.agency-b.example" also covers every subdomain.
#     domains: [agency-b.example, conference.agency-b.example]
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
    domains: tuple[str, ...] = ()
    """The remote XMPP domains reached through this component (``*.x``: x's subdomains);
    empty on the default component, which reaches every domain no other one lists."""

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


def component_configs(section: dict[str, Any]) -> list[XmppConfig]:
    """The default component (``component:``, ``rooms_domain``, ``upload_service``) followed by
    each entry of ``components:``. Raises :class:`ConfigError` naming every bad key."""
    default = XmppConfig.from_section(section)
    configs, problems = [default], []
    entries = section.get("components") or []
    if not isinstance(entries, list):
        raise ConfigError([ConfigProblem(f"{SECTION}.components", "expected a list")])
    for index, entry in enumerate(entries):
        path = f"{SECTION}.components[{index}]"
        if not isinstance(entry, dict):
            problems.append(ConfigProblem(path, "expected a mapping with jid, secret and domains"))
            continue
        found, wrong = _component(entry, path, default)
        problems += wrong
        if found is not None:
            configs.append(found)
    if problems:
        raise ConfigError(problems)
    problems = _clashes(configs)
    if problems:
        raise ConfigError(problems)
    return configs


SECTION = "connectors.xmpp"
_ENTRY_KEYS = frozenset({"jid", "host", "port", "secret", "rooms_domain", "upload_service",
                         "domains"})  # fmt: skip


def _component(
    entry: dict[str, Any], path: str, default: XmppConfig
) -> tuple[XmppConfig | None, list[ConfigProblem]]:
    problems = [ConfigProblem(f"{path}.{key}", "unknown key") for key in entry
                if key not in _ENTRY_KEYS]  # fmt: skip
    jid = _domain(entry.get("jid"), f"{path}.jid", problems, required=True)
    rooms = _domain(entry.get("rooms_domain") or "", f"{path}.rooms_domain", problems)
    upload = _domain(entry.get("upload_service") or "", f"{path}.upload_service", problems)
    port = entry.get("port", default.port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append(ConfigProblem(f"{path}.port", "expected a port number (1-65535)"))
    secret = entry.get("secret")
    if not isinstance(secret, str) or secret in ("", "generate"):
        problems.append(ConfigProblem(f"{path}.secret", "set the component_secret of this "
                                      "component in the XMPP server's config (or secret_file)"))  # fmt: skip
    raw_domains = entry.get("domains")
    domains: list[str] = []
    if not isinstance(raw_domains, list) or not raw_domains:
        problems.append(ConfigProblem(f"{path}.domains", "list the XMPP domains reached through "
                                      "this component, e.g. [agency.example]"))  # fmt: skip
    else:
        for index, raw in enumerate(raw_domains):
            wild = isinstance(raw, str) and raw.startswith("*.")
            name = _domain(raw[2:] if wild else raw, f"{path}.domains[{index}]", problems,
                           required=True)  # fmt: skip
            domains.append(f"*.{name}" if wild else name)
    if problems:
        return None, problems
    found = replace(default, jid=jid, host=str(entry.get("host", default.host)), port=int(port),
                    secret=str(secret), rooms_domain=rooms, upload_service=upload,
                    domains=tuple(domains))  # fmt: skip
    return found, []


def _domain(value: Any, path: str, problems: list[ConfigProblem], *, required: bool = False) -> str:
    if not isinstance(value, str) or (required and not value):
        problems.append(ConfigProblem(path, "expected a domain name"))
        return ""
    name = value.strip().lower()
    if name and ("@" in name or "/" in name or not is_valid_jid(name)):
        problems.append(ConfigProblem(path, f"expected a domain name, got {value!r}"))
    return name


def _clashes(configs: list[XmppConfig]) -> list[ConfigProblem]:
    """Each jid, rooms domain and routed domain belongs to one component only."""

    def where(index: int, key: str) -> str:
        return f"{SECTION}.component.jid" if (index, key) == (0, "jid") else (
            f"{SECTION}.{key}" if index == 0 else f"{SECTION}.components[{index - 1}].{key}")  # fmt: skip

    owner: dict[str, str] = {}
    problems = []
    for index, cfg in enumerate(configs):
        names = [("jid", cfg.jid), ("rooms_domain", cfg.rooms_domain)]
        names += [(f"domains[{i}]", d) for i, d in enumerate(cfg.domains)]
        for key, name in names:
            if not name:
                continue
            path = where(index, key)
            if name in owner:
                problems.append(ConfigProblem(path, f"{name} is already given at {owner[name]}"))
            else:
                owner[name] = path
    return problems


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
