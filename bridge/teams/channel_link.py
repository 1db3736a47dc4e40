"""The link Teams gives for a channel ("Get link to channel"), read strictly.

    https://teams.microsoft.com/l/channel/19%3A…%40thread.tacv2/General?groupId=<team>&tenantId=<tenant>

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


def parse_channel_link(text: str) -> ChannelLink:
    """The channel a Teams channel link names; raises :class:`BadChannelLink`."""
    text = text.strip().strip("<>")
    if len(text) > MAX_LENGTH:
        raise BadChannelLink(f"That is longer than any Teams link. {HOW}")
    try:
        url = urlsplit(text)
    except ValueError as err:
        raise BadChannelLink(f"That is not a link ({err}). {HOW}") from None
    if url.scheme != "https" or url.username or url.password or url.port is not None:
        raise BadChannelLink(f"A Teams channel link starts with https://teams.microsoft.com. {HOW}")
    if (url.hostname or "") not in HOSTS:
        raise BadChannelLink(f"{url.hostname or 'That'} is not Microsoft Teams. {HOW}")
    parts = url.path.split("/")
    if len(parts) not in (4, 5) or parts[:3] != ["", "l", "channel"]:
        raise BadChannelLink(f"That Teams link is not a channel's. {HOW}")
    channel_id = unquote(parts[3])
    if not _CHANNEL_ID.match(channel_id):
        raise BadChannelLink(f"The channel id in that link is not one Teams writes. {HOW}")
    try:
        query = parse_qs(url.query, strict_parsing=True, max_num_fields=8)
    except ValueError:
        raise BadChannelLink(f"That link's query is malformed. {HOW}") from None
    team = _single_guid(query, "groupId")
    tenant = _single_guid(query, "tenantId")
    name = unquote(parts[4]) if len(parts) == 5 else ""
    return ChannelLink(team, channel_id, tenant, name[:100])


def _single_guid(query: dict[str, list[str]], key: str) -> str:
    values = query.get(key, [])
    if len(values) != 1 or not _GUID.match(values[0]):
        raise BadChannelLink(f"That link has no single valid {key}. {HOW}")
    return values[0].lower()
