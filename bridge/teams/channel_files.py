"""Files in team channels, both ways, where Teams keeps them: the channel's folder in its
team's SharePoint library (``GET /teams/{team}/channels/{channel}/filesFolder``).

Matrix → channel (:func:`share_to_channel`): the file is uploaded into that folder with the
acting account's token (the Matrix user's own, or the relay's) and carried as a ``reference``
attachment. No sharing link is made: the team's members read its library already.

Teams → Matrix (:class:`ChannelFiles`): a file is copied to Matrix only if it is in the channel's
own folder (its driveItem's ``parentReference`` names the drive of the channel's files folder
and a path in that folder): the app may read every library of the tenant, so a message linking
a file of another team, another channel, a private channel or someone's OneDrive brings a
notice, not the file.
"""

from __future__ import annotations

import aiohttp
from msgraph import GraphServiceClient
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment
from msgraph.generated.models.drive_item import DriveItem

from bridge.core import (
    Media,
    MessagePart,
    NotFound,
    NotSupported,
    PermanentError,
    TransientError,
)
from bridge.teams.errors import graph_call
from bridge.teams.files import (
    Call,
    FilesToMatrix,
    Uploads,
    read_within,
    reference,
    root_path,
    safe_name,
    upload_once,
)
from bridge.teams.tenant import TenantLink

REFUSED = (
    "The channel's files library refused the file, so it was not sent to Teams. The sending"
    " account must be a member of the team, and the bridge's app needs the delegated"
    " Files.ReadWrite.All consent: ask an administrator."
)


async def share_to_channel(
    graph: GraphServiceClient,
    call: Call,
    team_id: str,
    channel_id: str,
    media: Media,
    max_bytes: int,
    uploads: Uploads | None = None,
    marker: str | None = None,
) -> tuple[str, ChatMessageAttachment]:
    """Upload ``media`` into the channel's files folder; the body placeholder and attachment
    of a message carrying it. ``marker`` (the Matrix event id) names the upload in
    ``uploads``: a retry (posting the message failed) reuses it instead of a second copy."""
    data = await read_within(media, max_bytes)
    try:
        item = await _upload(graph, call, team_id, channel_id, media, data, uploads, marker)
    except PermanentError as err:
        if isinstance(err, NotSupported):
            raise
        raise PermanentError(str(err), user_message=REFUSED) from err
    return reference(item)


async def _upload(
    graph: GraphServiceClient,
    call: Call,
    team_id: str,
    channel_id: str,
    media: Media,
    data: bytes,
    uploads: Uploads | None,
    marker: str | None,
) -> DriveItem:
    channel = graph.teams.by_team_id(team_id).channels.by_channel_id(channel_id)
    folder = await call(f"find the files folder of {channel_id}", channel.files_folder.get())
    drive_id = folder.parent_reference.drive_id if folder and folder.parent_reference else None
    if folder is None or not folder.id or not drive_id:
        raise PermanentError(f"Graph answered the files folder of {channel_id} without a drive")
    items = graph.drives.by_drive_id(drive_id).items
    name = safe_name(media.filename, media.mimetype)
    item, name = await upload_once(
        graph, call, items, name, data, f"{folder.id}:", uploads, marker, "SharePoint"
    )
    item.name = item.name or name
    return item


class ChannelFiles:
    """The files of channel messages as Matrix parts; remembers each channel's library."""

    LIBRARIES_KEPT = 1000

    def __init__(self, max_bytes: int, http: aiohttp.ClientSession | None = None) -> None:
        self._files = FilesToMatrix(max_bytes, http)  # http: downloads stop at max_bytes
        self._libraries: dict[tuple[str, str], tuple[str, str]] = {}
        """(team, channel) → the drive id of its files folder and the folder's path in it."""

    async def parts(
        self, link: TenantLink, channel: tuple[str, str], msg: ChatMessage, sender: str
    ) -> list[MessagePart]:
        async def library() -> tuple[str, str] | None:
            return await self._library(link, *channel)

        return await self._files.parts(link, msg, sender, library)

    async def _library(
        self, link: TenantLink, team_id: str, channel_id: str
    ) -> tuple[str, str] | None:
        key = (team_id, channel_id)
        if key in self._libraries:
            return self._libraries[key]
        builder = link.app.teams.by_team_id(team_id).channels.by_channel_id(channel_id)
        try:
            folder = await graph_call(
                f"find the files folder of {channel_id}", builder.files_folder.get(), reading=True
            )
        except TransientError:
            raise
        except (NotFound, PermanentError):
            folder = None  # no library, or the app may not see it: no file is copied
        parent = folder.parent_reference if folder is not None else None
        above = root_path(parent.path) if parent is not None else None
        if folder is None or parent is None or not parent.drive_id or not folder.name:
            return None  # a refusal is asked again next time: consent may be granted meanwhile
        # The library's root folder has no parent path: the folder is then at the root.
        where = (parent.drive_id, f"{above}/{folder.name}".strip("/") if above else folder.name)
        if len(self._libraries) >= self.LIBRARIES_KEPT:
            self._libraries.clear()
        self._libraries[key] = where
        return where
