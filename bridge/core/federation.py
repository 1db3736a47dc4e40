"""Who may reach whom across the hub: one federation policy for every connector.

A rule connects remote people of a network (XMPP domains, mail domains, Teams tenants) with
Matrix users of some servers, in both directions: either side may start a conversation, invite
the other, bridge a room, or relay to it. Anything no rule allows is refused at the entry, with
a clear error to whoever tried, before anything changes::

    bridge:
        federation:
            - network: xmpp                       # a connector, or "*" for all of them
              remote: [agency-a.example, "*.gouv.example"]
              matrix: [local, agency-a.example]   # "local": this homeserver; "*": every server

Without rules the hub behaves as the one rule ``{network: "*", remote: ["*"], matrix:
[local]}``: remote people may reach the local users of this homeserver only, and only they may
use the hub to reach remote people. Opening it wider is the operator's explicit choice.

Patterns are case-insensitive: an exact name, ``*`` for any, or ``*.example.org`` for every
subdomain of example.org (not example.org itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ANY = "*"
LOCAL = "local"
DEFAULT_RULES: list[dict[str, Any]] = [{"network": ANY, "remote": [ANY], "matrix": [LOCAL]}]


def matches_pattern(pattern: str, name: str) -> bool:
    if pattern == ANY:
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


@dataclass(frozen=True, slots=True)
class FederationRule:
    network: str
    remote: tuple[str, ...]
    matrix: tuple[str, ...]
    """Server-name patterns, ``local`` already replaced by the homeserver's name."""

    def covers(self, network: str, remote_domain: str, server: str) -> bool:
        return (
            matches_pattern(self.network, network)
            and any(matches_pattern(p, remote_domain) for p in self.remote)
            and any(matches_pattern(p, server) for p in self.matrix)
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a conversation between ``remote`` (on ``network``) and ``matrix`` is not allowed."""

    network: str
    remote: str
    matrix: str

    def __str__(self) -> str:
        return (
            f"this hub does not connect {self.network} users at {self.remote} with Matrix "
            f"users at {server_of(self.matrix) or self.matrix}"
        )

    @property
    def user_message(self) -> str:
        """The refusal as its Matrix user reads it, with whom to ask."""
        return (
            f"Not allowed by this hub's federation policy: {self}. If you need it, ask the "
            "hub's operator (it is `bridge.federation` in the bridge's config)."
        )


def server_of(mxid_or_server: str) -> str:
    """The server name of a Matrix id (``@a:b`` → ``b``), or the argument if it is one."""
    if mxid_or_server[:1] in "@!#" and ":" in mxid_or_server:
        return mxid_or_server.split(":", 1)[1].lower()
    return mxid_or_server.lower()


def remote_domain(address: str) -> str:
    """The domain of an XMPP JID or mail address (``user@domain/resource`` → ``domain``)."""
    bare = address.split("/", 1)[0]
    return bare.rsplit("@", 1)[-1].strip().lower().rstrip(".")


class FederationPolicy:
    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]] | None,
        local_domain: str,
        on_refusal: Callable[[Refusal, str], None] | None = None,
    ) -> None:
        """``rules`` as in the config (checked by :func:`check_rules`); ``on_refusal`` hears of
        every refusal with the entry that refused it (the audit log)."""
        self.local_domain = local_domain.lower()
        self.rules = [self._rule(raw) for raw in (DEFAULT_RULES if rules is None else rules)]
        self._on_refusal = on_refusal
        self._hosted: set[tuple[str, str]] = set()

    def host(self, network: str, domain: str) -> None:
        """``domain`` is the hub's own on ``network`` (the XMPP rooms it hosts for Matrix
        rooms): its people are checked one by one where they come in (joining a hosted room),
        so a conversation there is never refused as a whole."""
        self._hosted.add((network, domain.lower()))

    def _rule(self, raw: Mapping[str, Any]) -> FederationRule:
        def names(values: Iterable[Any]) -> tuple[str, ...]:
            return tuple(str(v).lower() for v in values)

        matrix = tuple(self.local_domain if p == LOCAL else p for p in names(raw["matrix"]))
        return FederationRule(str(raw.get("network", ANY)).lower(), names(raw["remote"]), matrix)

    def refusal(self, network: str, remote: str, matrix: str, *, entry: str) -> Refusal | None:
        """None if a rule lets ``remote`` (a domain, or a tenant) of ``network`` and ``matrix``
        (a Matrix id or a server name) reach each other; else the refusal, reported as refused
        at ``entry`` (such as ``xmpp direct message``)."""
        if self.allows(network, remote, matrix):
            return None
        refused = Refusal(network, remote.lower(), matrix)
        if self._on_refusal is not None:
            self._on_refusal(refused, entry)
        return refused

    def allows(self, network: str, remote: str, matrix: str) -> bool:
        """:meth:`refusal` without reporting one: for offering only what is allowed."""
        domain, server = remote.lower(), server_of(matrix)
        return (network, domain) in self._hosted or any(
            rule.covers(network, domain, server) for rule in self.rules
        )

    def open_to_every_server(self, network: str, remote: str) -> bool:
        """Whether any Matrix user at all may reach ``remote``: what a room alias query needs,
        since the homeserver does not say who is asking."""
        domain = remote.lower()
        return any(
            matches_pattern(rule.network, network)
            and ANY in rule.matrix
            and any(matches_pattern(p, domain) for p in rule.remote)
            for rule in self.rules
        )


def check_rules(rules: Any, path: str = "bridge.federation") -> list[tuple[str, str]]:
    """(key path, problem) for each mistake in the configured rules."""
    if rules is None:
        return []
    if not isinstance(rules, list):  # the template's check says so
        return []
    problems: list[tuple[str, str]] = []
    for index, rule in enumerate(rules):
        where = f"{path}[{index}]"
        if not isinstance(rule, Mapping):
            problems.append((where, "expected a mapping with network, remote and matrix"))
            continue
        for key in set(rule) - {"network", "remote", "matrix"}:
            problems.append((f"{where}.{key}", "unknown key (expected network, remote, matrix)"))
        network = rule.get("network", ANY)
        if not isinstance(network, str) or not network:
            problems.append((f"{where}.network", "expected a connector name or '*'"))
        for key in ("remote", "matrix"):
            values = rule.get(key)
            if not isinstance(values, list) or not values:
                problems.append((f"{where}.{key}", "expected a non-empty list of names"))
                continue
            for value in values:
                if not _valid_pattern(value, allow_local=key == "matrix"):
                    problems.append((
                        f"{where}.{key}",
                        f"{value!r} is not a name, '*' or '*.domain'"
                        + (" or 'local'" if key == "matrix" else ""),
                    ))  # fmt: skip
    return problems


def _valid_pattern(value: Any, *, allow_local: bool) -> bool:
    if not isinstance(value, str) or not value or value != value.strip():
        return False
    if value == ANY or (allow_local and value == LOCAL):
        return True
    name = value[2:] if value.startswith("*.") else value
    return bool(name) and "*" not in name and "@" not in name and " " not in name
