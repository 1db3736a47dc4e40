"""Ghost user names: which Matrix user stands for which remote person, per connector.

DESIGN §3 fixes the default: the ghost of remote user ``alice@xmpp.example`` on connector
``xmpp`` is ``@xmpp_alice=40xmpp.example:<domain>``. An operator may change the fixed text around
the escaped id per connector with ``connectors.<network>.ghost_username_template`` (default
``"<network>_{id}"``), so that two hubs can share one homeserver: hub B sets
``hubb_xmpp_{id}`` and neither hub claims, parses or answers for the other's ghosts.

:class:`GhostNames` is built once from the config (:meth:`GhostNames.from_config`) and handed to
everything that makes or recognises ghosts; the registration's user namespaces come from it too,
so the homeserver routes exactly these names to the bridge. :func:`check_templates` is the
config validation of the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bridge.core.ids import NetworkID, RemoteUserID, escape_localpart, unescape_localpart
from bridge.core.shown import shown

if TYPE_CHECKING:
    from bridge.core.config import Config

TEMPLATE_KEY = "ghost_username_template"
"""The key of every connector section (core-level, like ``enabled``)."""

ID_FIELD = "{id}"
"""Stands for the escaped remote id (:func:`bridge.core.ids.escape_localpart`) in a template."""

_FIXED_RE = re.compile(r"[a-z0-9._=/+-]*")
"""What a template may hold besides ``{id}``: Matrix user-id localpart characters."""

_ESCAPED_RE = re.compile(r"[a-z0-9._=/-]+")
"""What :func:`bridge.core.ids.escape_localpart` writes for a non-empty id."""


def default_template(network: str) -> str:
    """DESIGN §3: ``<network>_{id}``."""
    return _joined(_default_parts(network))


def _default_parts(network: str) -> tuple[str, str]:
    return f"{network}_", ""


def split_template(template: object) -> tuple[str, str]:
    """(prefix, suffix) around ``{id}`` in ``template``. Raises ``ValueError`` saying what is
    wrong (the message completes ``connectors.<network>.ghost_username_template: ...``)."""
    example = "such as 'hubb_xmpp_{id}'"
    if not isinstance(template, str):
        raise ValueError(f"expected a string {example}, got {shown(template)}")
    if template.count(ID_FIELD) != 1:
        raise ValueError(
            f"expected {ID_FIELD} exactly once (it stands for the escaped remote id), {example}; "
            f"got {shown(template)}"
        )
    prefix, suffix = template.split(ID_FIELD)
    if not _FIXED_RE.fullmatch(prefix + suffix):
        raise ValueError(
            f"expected only lowercase letters, digits and ._=-/+ besides {ID_FIELD}, {example}; "
            f"got {shown(template)}"
        )
    if not prefix + suffix:
        raise ValueError(
            f"expected fixed text besides {ID_FIELD}, {example}: {ID_FIELD} alone would claim "
            "every user of the homeserver"
        )
    return prefix, suffix


class GhostNames:
    """The ghost names of every connector of one hub on one homeserver ``domain``.

    ``templates`` maps a network id to its ``ghost_username_template``; a network left out
    uses :func:`default_template`. Raises ``ValueError`` on a template :func:`split_template`
    refuses (config validation has reported it before a hub gets this far).
    """

    def __init__(self, domain: str, templates: Mapping[str, str] | None = None) -> None:
        self.domain = domain
        self._parts = {network: split_template(t) for network, t in (templates or {}).items()}

    @classmethod
    def from_config(cls, config: Config) -> GhostNames:
        """The templates of every section under ``connectors`` (enabled or not)."""
        return cls(config.domain, configured_templates(config["connectors"]))

    def _split(self, network: str) -> tuple[str, str]:
        return self._parts.get(network) or _default_parts(network)

    def localpart(self, network: NetworkID, remote_user: RemoteUserID) -> str:
        """The localpart of the ghost of ``remote_user``: the template, ``{id}`` replaced by
        the escaped id."""
        prefix, suffix = self._split(network)
        return f"{prefix}{escape_localpart(remote_user)}{suffix}"

    def mxid(self, network: NetworkID, remote_user: RemoteUserID) -> str:
        return f"@{self.localpart(network, remote_user)}:{self.domain}"

    def owns(self, network: str, mxid: str) -> bool:
        """Whether ``mxid`` lies in ``network``'s ghost namespace (what :meth:`regex` claims),
        whether or not it names a remote user."""
        return self._middle(network, mxid) is not None

    def parse(self, network: NetworkID, mxid: str) -> RemoteUserID | None:
        """The remote user behind a ghost mxid of ``network``; ``None`` if it is not one (another
        connector's or hub's ghost, a Matrix user, an empty id, or a name :meth:`localpart`
        would not write, such as a bad or needless escape)."""
        middle = self._middle(network, mxid)
        if middle is None or not _ESCAPED_RE.fullmatch(middle):
            return None
        try:
            remote_user = unescape_localpart(middle)
        except (ValueError, UnicodeDecodeError):
            return None
        # One remote user, one ghost: ``@xmpp_=61lice`` is not a second name of ``@xmpp_alice``.
        return RemoteUserID(remote_user) if escape_localpart(remote_user) == middle else None

    def _middle(self, network: str, mxid: str) -> str | None:
        prefix, suffix = self._split(network)
        server = f":{self.domain}"
        if not (mxid.startswith("@") and mxid.endswith(server)):
            return None
        localpart = mxid[1 : -len(server)]
        if len(localpart) < len(prefix) + len(suffix):
            return None
        if not (localpart.startswith(prefix) and localpart.endswith(suffix)):
            return None
        return localpart[len(prefix) : len(localpart) - len(suffix)]

    def regex(self, network: str) -> str:
        """The anchored user-namespace regex of the registration for ``network``'s ghosts."""
        prefix, suffix = self._split(network)
        return f"^@{re.escape(prefix)}.*{re.escape(suffix)}:{re.escape(self.domain)}$"


def configured_templates(connectors: Any) -> dict[str, str]:
    """``ghost_username_template`` of each section under ``connectors`` that sets it."""
    if not isinstance(connectors, Mapping):
        return {}
    return {
        str(network): section[TEMPLATE_KEY]
        for network, section in connectors.items()
        if isinstance(section, Mapping) and TEMPLATE_KEY in section
    }


def check_templates(
    connectors: Any, bot_username: Any, builtin: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Problems (key path, message) of the templates under ``connectors``.

    Each must be valid (:func:`split_template`); no two connectors' names may overlap (one's
    fixed text able to produce the other's names), a section without the key and the
    ``builtin`` connectors (claimed by the registration even without a section) counting with
    the default; and none may produce the bot's user name.
    """
    if not isinstance(connectors, Mapping):
        return []
    problems: list[tuple[str, str]] = []
    configured = configured_templates(connectors)
    # Defaults first, then the templates set in file order: a clash names the key set later.
    networks = [*builtin, *(network for network in connectors if isinstance(network, str))]
    parts = {network: _default_parts(network) for network in networks if network not in configured}
    for network, template in configured.items():
        try:
            parts[network] = split_template(template)
        except ValueError as err:
            parts.pop(network, None)
            problems.append((_path(network), str(err)))
    networks = list(parts)
    for i, network in enumerate(networks):
        for other in networks[:i]:
            if clash := _overlap(parts[other], parts[network]):
                problems.append(
                    (
                        _path(network),
                        f"overlaps {_path(other)} ({shown(_joined(parts[other]))}): both "
                        f"would name @{clash}; give each connector fixed text the other's "
                        "names cannot contain",
                    )
                )
        if isinstance(bot_username, str) and _produces(parts[network], bot_username):
            problems.append(
                (
                    _path(network),
                    f"would name the bridge bot (appservice.bot_username is "
                    f"{shown(bot_username)}); change one of them",
                )
            )
    return problems


def _overlap(a: tuple[str, str], b: tuple[str, str]) -> str | None:
    """A localpart both templates produce, or ``None``. Two templates can share names when one's
    prefix starts the other's and one's suffix ends the other's (otherwise they never do)."""
    (pa, sa), (pb, sb) = a, b
    if not (pa.startswith(pb) or pb.startswith(pa)) or not (sa.endswith(sb) or sb.endswith(sa)):
        return None
    return f"{max(pa, pb, key=len)}example{max(sa, sb, key=len)}"


def _produces(parts: tuple[str, str], localpart: str) -> bool:
    prefix, suffix = parts
    return (
        len(localpart) >= len(prefix) + len(suffix)
        and localpart.startswith(prefix)
        and localpart.endswith(suffix)
    )


def _joined(parts: tuple[str, str]) -> str:
    return parts[0] + ID_FIELD + parts[1]


def _path(network: str) -> str:
    return f"connectors.{network}.{TEMPLATE_KEY}"
