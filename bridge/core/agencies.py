"""Agencies: who administers which part of the hub.

A national hub serves several agencies, each with its own people, accounts and IT team. An
agency is configured under ``bridge.agencies``::

    finance:
        matrix: [finance.gouv.example, "@minister:gouv.example"]   # Matrix ids, servers, *.suffix
        admins: ["@it:finance.gouv.example"]
        networks:                        # its accounts on the networks: remote domains, tenants
            xmpp: [xmpp.finance.gouv.example]
            email: [finance.gouv.example]
            teams: ["<tenant id>"]

What belongs to an agency:

- a **portal** when one of its Matrix users is the agency's (the people the bridge invited or
  who bridged or joined it through the bridge), or its remote chat is at one of the agency's
  domains (a MUC service, a mail domain);
- a **login** when its Matrix user is the agency's, or its remote account is at one of the
  agency's domains (or, for Teams, in its tenant);
- a **dead letter** when its portal is the agency's.

Bridge admins (the ``admin`` level) manage everything. An agency admin manages only what
belongs to their agencies: ``list-portals all``, ``delete-portal``, ``list-logins all``, the
dead letters, and the same through the provisioning API; anything else is "not found" to them,
so they cannot learn what another agency has.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.core.federation import ANY, matches_pattern, remote_domain, server_of


@dataclass(frozen=True, slots=True)
class Agency:
    name: str
    matrix: tuple[str, ...] = ()
    """Matrix ids (``@a:b``) and server-name patterns."""
    admins: frozenset[str] = frozenset()
    networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per connector: the remote domains (or Teams tenant ids) that are the agency's."""

    def has_user(self, mxid: str) -> bool:
        if mxid in self.matrix:
            return True
        server = server_of(mxid)
        return any(not p.startswith("@") and matches_pattern(p, server) for p in self.matrix)

    def has_remote(self, network: str, remote: str) -> bool:
        """Whether ``remote`` (an address, a JID, a tenant id) is one of the agency's."""
        patterns = self.networks.get(network, ())
        if not patterns or not remote:
            return False
        return remote.lower() in patterns or any(
            matches_pattern(p, remote_domain(remote)) for p in patterns if p != ANY
        )


@dataclass(frozen=True, slots=True)
class Scope:
    """What one Matrix user may administer."""

    everything: bool = False
    """A bridge admin."""
    agencies: tuple[Agency, ...] = ()
    """The agencies this user is an admin of."""

    def __bool__(self) -> bool:
        return self.everything or bool(self.agencies)

    def covers_portal(
        self, network: str, remote_id: str, users: Iterable[str], owner: str | None = None
    ) -> bool:
        """A portal of ``network`` chat ``remote_id``, with its Matrix ``users`` and the
        Matrix user of the login it is seen through (``owner``)."""
        if self.everything:
            return True
        people = [*users, *([owner] if owner else [])]
        return any(
            agency.has_remote(network, remote_id) or any(agency.has_user(u) for u in people)
            for agency in self.agencies
        )

    def covers_login(self, network: str, user_mxid: str, *remote: str | None) -> bool:
        """A login of ``user_mxid`` to the ``remote`` account (its id, its name)."""
        if self.everything:
            return True
        return any(
            agency.has_user(user_mxid) or any(agency.has_remote(network, r or "") for r in remote)
            for agency in self.agencies
        )

    def describe(self) -> str:
        if self.everything:
            return "the whole hub"
        names = ", ".join(a.name for a in self.agencies)
        return f"agenc{'y' if len(self.agencies) == 1 else 'ies'} {names}"


NOBODY = Scope()
EVERYTHING = Scope(everything=True)


def parse_agencies(raw: Mapping[str, Any] | None) -> tuple[Agency, ...]:
    """The agencies of ``bridge.agencies`` (already checked by :func:`check_agencies`)."""
    agencies: list[Agency] = []
    for name, section in (raw or {}).items():
        networks = section.get("networks") or {}
        agencies.append(
            Agency(
                name=str(name),
                matrix=tuple(_names(section.get("matrix"))),
                admins=frozenset(str(a) for a in section.get("admins") or ()),
                networks={str(n): tuple(_names(v)) for n, v in networks.items()},
            )
        )
    return tuple(agencies)


def _names(values: Iterable[Any] | None) -> list[str]:
    return [str(v).strip().lower() if not str(v).startswith("@") else str(v) for v in values or ()]


def check_agencies(raw: Any, path: str = "bridge.agencies") -> list[tuple[str, str]]:
    """(key path, problem) for each mistake in the configured agencies."""
    if raw is None or raw == {}:
        return []
    if not isinstance(raw, Mapping):
        return [(path, "expected a mapping of agency names to their sections")]
    problems: list[tuple[str, str]] = []
    for name, section in raw.items():
        where = f"{path}.{name}"
        if not isinstance(section, Mapping):
            problems.append((where, "expected a mapping with matrix, admins and networks"))
            continue
        for key in set(section) - {"matrix", "admins", "networks"}:
            problems.append((f"{where}.{key}", "unknown key (expected matrix, admins, networks)"))
        problems += _check_list(section.get("matrix"), f"{where}.matrix", mxids=True)
        problems += _check_list(section.get("admins"), f"{where}.admins", mxids=True)
        for admin in section.get("admins") or ():
            if isinstance(admin, str) and not _is_mxid(admin):
                problems.append((f"{where}.admins", f"{admin!r} is not a Matrix id (@user:server)"))
        networks = section.get("networks")
        if networks is None:
            continue
        if not isinstance(networks, Mapping):
            problems.append((f"{where}.networks", "expected a mapping of connector names to lists"))
            continue
        for network, names in networks.items():
            problems += _check_list(names, f"{where}.networks.{network}", mxids=False)
    return problems


def _check_list(values: Any, where: str, *, mxids: bool) -> list[tuple[str, str]]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        return [(where, "expected a list of names")]
    bad = [v for v in values if " " in v.strip() or (v.startswith("@") and not mxids)]
    bad += [v for v in values if v.startswith("@") and not _is_mxid(v)]
    return [(where, f"{v!r} is not a valid name") for v in bad]


def _is_mxid(value: str) -> bool:
    local, _, server = value[1:].partition(":")
    return value.startswith("@") and bool(local) and bool(server)


def admin_scope(mxid: str, agencies: Collection[Agency], *, bridge_admin: bool) -> Scope:
    if bridge_admin:
        return EVERYTHING
    mine = tuple(a for a in agencies if mxid in a.admins)
    return Scope(agencies=mine) if mine else NOBODY
