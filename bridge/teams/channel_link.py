"""The links Teams gives for a channel ("Get link to channel") and a team ("Get link to
team"), read strictly.

    https://teams.microsoft.com/l/channel/19%3A…%40thread.tacv2/General?groupId=<team>&tenantId=<tenant>
    https://teams.microsoft.com/l/team/19%3A…%40thread.tacv2/conversations?groupId=<team>&tenantId=<tenant>

The channel id comes percent-encoded in the path, the team (its group) and the tenant as GUIDs
in the query. Anything else — another host, a message or chat link, a missing or malformed
part, a second value for a key, a link longer than any Teams writes — is refused with a
sentence the user can act on; nothing is read from Graph before the link has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

HOSTS = frozenset(
    {
        "teams.microsoft.com",
        "teams.cloud.microsoft",
        "teams.microsoft.us",  # GCC High
        "dod.teams.microsoft.us",
        "teams.microsoftonline.cn",  # operated by 21Vianet
    }
)
MAX_LENGTH = 2048
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_CHANNEL_ID = re.compile(r"^19:[A-Za-z0-9_.-]{1,200}@thread\.(?:tacv2|skype)$")

HOW = (
    "Use the link Teams gives under the channel's ⋯ menu, “Get link to channel”: "
    "https://teams.microsoft.com/l/channel/19%3A…%40thread.tacv2/Name?groupId=…&tenantId=…"
)

TEAM_HOW = (
    "Use the link Teams gives under the team's ⋯ menu, “Get link to team”: "
    "https://teams.microsoft.com/l/team/19%3A…%40thread.tacv2/conversations?groupId=…&tenantId=…"
    ", or the team's id alone"
)


class BadChannelLink(ValueError):
    """The text is not a Teams channel link; ``str()`` says why, for the user."""


@dataclass(frozen=True, slots=True)
class ChannelLink:
    team_id: str
    """The team's (Microsoft 365 group's) id, lowercase."""
    channel_id: str
    """``19:…@thread.tacv2``."""
    tenant_id: str
    """The tenant's id, lowercase."""
    name: str
    """The channel name the link shows (only a hint: Graph's name is used)."""


@dataclass(frozen=True, slots=True)
class TeamLink:
    team_id: str
    """The team's (Microsoft 365 group's) id, lowercase."""
    tenant_id: str | None
    """The tenant's id, lowercase; ``None`` for a bare team id (the user's own tenant)."""


def parse_channel_link(text: str) -> ChannelLink:
    """The channel a Teams channel link names; raises :class:`BadChannelLink`."""
    parts, query = _teams_link(text, HOW)
    if len(parts) not in (4, 5) or parts[:3] != ["", "l", "channel"]:
        if parts[:3] == ["", "l", "team"]:
            raise BadChannelLink(
                "That is a team's link, not a channel's: send `bridge-team teams <team link>` to"
                " the bridge bot to bridge every channel of the team, each in a room of its own."
            )
        raise BadChannelLink(f"That Teams link is not a channel's. {HOW}")
    channel_id = unquote(parts[3])
    if not _CHANNEL_ID.match(channel_id):
        raise BadChannelLink(f"The channel id in that link is not one Teams writes. {HOW}")
    team = _single_guid(query, "groupId", HOW)
    tenant = _single_guid(query, "tenantId", HOW)
    name = unquote(parts[4]) if len(parts) == 5 else ""
    return ChannelLink(team, channel_id, tenant, name[:100])


def parse_team_link(text: str) -> TeamLink:
    """The team a Teams team link (or a bare team id) names; raises :class:`BadChannelLink`."""
    text = text.strip().strip("<>")
    if _GUID.match(text):
        return TeamLink(text.lower(), None)
    parts, query = _teams_link(text, TEAM_HOW)
    if len(parts) not in (4, 5) or parts[:3] != ["", "l", "team"]:
        raise BadChannelLink(f"That Teams link is not a team's. {TEAM_HOW}")
    if not _CHANNEL_ID.match(unquote(parts[3])):
        raise BadChannelLink(
            f"The team's thread id in that link is not one Teams writes. {TEAM_HOW}"
        )
    return TeamLink(
        _single_guid(query, "groupId", TEAM_HOW), _single_guid(query, "tenantId", TEAM_HOW)
    )


def _teams_link(text: str, how: str) -> tuple[list[str], dict[str, list[str]]]:
    """The path parts and query of a link to teams.microsoft.com (or a sovereign cloud's)."""
    text = text.strip().strip("<>")
    if len(text) > MAX_LENGTH:
        raise BadChannelLink(f"That is longer than any Teams link. {how}")
    try:
        url = urlsplit(text)
    except ValueError as err:
        raise BadChannelLink(f"That is not a link ({err}). {how}") from None
    if url.scheme != "https" or url.username or url.password or url.port is not None:
        raise BadChannelLink(f"A Teams link starts with https://teams.microsoft.com. {how}")
    if (url.hostname or "") not in HOSTS:
        raise BadChannelLink(f"{url.hostname or 'That'} is not Microsoft Teams. {how}")
    try:
        query = parse_qs(url.query, strict_parsing=True, max_num_fields=8)
    except ValueError:
        raise BadChannelLink(f"That link's query is malformed. {how}") from None
    return url.path.split("/"), query


def _single_guid(query: dict[str, list[str]], key: str, how: str) -> str:
    values = query.get(key, [])
    if len(values) != 1 or not _GUID.match(values[0]):
        raise BadChannelLink(f"That link has no single valid {key}. {how}")
    return values[0].lower()
