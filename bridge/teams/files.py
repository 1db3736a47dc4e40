"""Files in Teams chats, both ways, as Teams itself carries them: in OneDrive.

Matrix → Teams (:func:`share_to_chat`): the file goes into the acting account's OneDrive (the
Matrix user's own, or the relay account's for users without a login) under "Microsoft Teams
Chat Files", is shared with the chat's members by a link scoped to exactly those people, and
the message carries it as a ``reference`` attachment, as Teams' own clients do.

Teams → Matrix (:class:`FilesToMatrix`): a ``reference`` attachment names the file by its
SharePoint URL. Only URLs on the tenant's own SharePoint hosts are looked up (learned from the
sender's OneDrive); the file is read through ``/shares/u!…`` with the tenant's app token
(``Files.Read.All``) and arrives in Matrix as its content, up to ``max_file_mb``. A file that
is too big, not readable or not the tenant's arrives as a notice with its link.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp
from kiota_abstractions.api_error import APIError
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph import GraphServiceClient
from msgraph.generated.drives.item.items.item.create_link.create_link_post_request_body import (
    CreateLinkPostRequestBody,
)
from msgraph.generated.drives.item.items.item.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment
from msgraph.generated.models.drive import Drive
from msgraph.generated.models.drive_item import DriveItem
from msgraph.generated.models.drive_item_uploadable_properties import (
    DriveItemUploadableProperties,
)
from msgraph.generated.models.drive_recipient import DriveRecipient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from bridge.core import (
    Media,
    MessagePart,
    NotFound,
    NotSupported,
    PartID,
    PermanentError,
    TransientError,
)
from bridge.teams.errors import graph_call
from bridge.teams.tenant import TenantLink

T = TypeVar("T")
Library = Callable[[], Awaitable[tuple[str, str] | None]]
"""The drive a message's files must be in and the folder of it (its path from the drive's root),
read when first needed."""

CHAT_FILES = "Microsoft Teams Chat Files"
"""The OneDrive folder Teams keeps files shared in chats in."""
SIMPLE_UPLOAD_BYTES = 4 * 1024 * 1024
"""Up to this size one ``PUT …/content`` uploads a file (Graph's documented simple upload);
larger files go through an upload session, in chunks."""
CHUNK_BYTES = 10 * 320 * 1024
"""An upload session's chunks: a multiple of 320 KiB, as Graph asks."""
MB = 1024 * 1024
NAME_LIMIT = 120
CONFLICT = "@microsoft.graph.conflictBehavior"
_UNSAFE = set('"*:<>?/\\|#%')


class Uploads(Protocol):
    """Where an upload is remembered per Matrix event (the store's key-value table)."""

    async def kv_get(self, key: str) -> str | None: ...
    async def kv_set(self, key: str, value: str) -> None: ...


class Call(Protocol):
    """How the acting client calls Graph (its error mapping and bookkeeping)."""

    def __call__(self, what: str, call: Awaitable[T]) -> Awaitable[T]: ...


def safe_name(name: str | None, mimetype: str = "") -> str:
    """A file name OneDrive and Matrix clients take as it is: no path separators or characters
    OneDrive refuses, no invisible or direction-changing characters (a right-to-left override
    makes ``cod.exe`` look like ``exe.doc``), no leading dots, at most ``NAME_LIMIT``
    characters with the extension kept."""
    kept = "".join(
        "_" if c in _UNSAFE else c
        for c in (name or "")
        if unicodedata.category(c)[0] != "C"  # controls, format (RTL override), unassigned
    )
    kept = " ".join(kept.split()).strip(" .")
    if not kept:
        kept = "file" + (mimetypes.guess_extension(mimetype or "") or "")
    if len(kept) > NAME_LIMIT:
        stem, dot, ext = kept.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            kept = stem[: NAME_LIMIT - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            kept = kept[:NAME_LIMIT].rstrip(" .")
    return kept


def share_id(url: str) -> str:
    """Graph's key for an item named by its URL: ``u!`` and the URL in unpadded base64url."""
    return "u!" + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def attachment_id(item: DriveItem) -> str:
    """Teams names a file attachment by the GUID in its driveItem's eTag (``"{GUID},1"``)."""
    etag = (item.e_tag or "").strip('"')
    guid = etag.split(",", 1)[0].strip("{}").lower()
    if not guid:
        raise PermanentError("OneDrive answered an upload without an eTag")
    return guid


def _numbered(name: str, n: int | str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem} ({n}).{ext}" if dot and stem else f"{name} ({n})"


# --- Matrix → Teams ---------------------------------------------------------------------


async def share_to_chat(
    graph: GraphServiceClient,
    call: Call,
    chat_id: str,
    media: Media,
    max_bytes: int,
    uploads: Uploads | None = None,
    marker: str | None = None,
) -> tuple[str, ChatMessageAttachment]:
    """Upload ``media`` to the acting account's OneDrive, share it with the members of
    ``chat_id`` and return the body placeholder and attachment of a message carrying it.
    ``marker`` (the Matrix event id) names the upload in ``uploads``: a retry reuses it."""
    data = await read_within(media, max_bytes)
    try:
        item = await _upload_and_share(graph, call, chat_id, media, data, uploads, marker)
    except PermanentError as err:
        if isinstance(err, NotSupported):
            raise
        raise PermanentError(str(err), user_message=REFUSED) from err
    return reference(item)


async def read_within(media: Media, max_bytes: int) -> bytes:
    """The file's bytes; a file over ``max_file_mb`` is refused before anything is uploaded,
    and before it is downloaded when its size is known (a Matrix event's ``info.size``)."""
    if media.data is None and media.size is not None and media.size > max_bytes:
        data = b""
        size = media.size
    else:
        data = await media.read()
        size = len(data)
    if size > max_bytes:
        raise NotSupported(
            f"file of {size} bytes to Teams",
            user_message=f"Files larger than {max_bytes // MB} MB are not sent to Teams by this"
            " bridge (max_file_mb); share it as a link instead.",
        )
    return data


def reference(item: DriveItem) -> tuple[str, ChatMessageAttachment]:
    """The body placeholder and ``reference`` attachment of a message carrying ``item``."""
    guid = attachment_id(item)
    attachment = ChatMessageAttachment(
        id=guid, content_type="reference", content_url=item.web_url, name=item.name
    )
    return f'<attachment id="{html.escape(guid)}"></attachment>', attachment


REFUSED = (
    "OneDrive refused the file, so it was not sent to Teams. The sending account may have no"
    " OneDrive, or the bridge's app lacks the Files.ReadWrite consent: ask an administrator."
)


async def uploaded_before(
    call: Call, items: Any, uploads: Uploads | None, marker: str | None
) -> DriveItem | None:
    """The file an earlier attempt to send the same Matrix event uploaded (it failed after
    the upload: sharing it, or posting the message), so a retry posts it, not a copy."""
    if uploads is None or not marker:
        return None
    known = await uploads.kv_get(upload_key(marker))
    if not known:
        return None
    try:
        item: DriveItem | None = await call(
            "read the file uploaded before", items.by_drive_item_id(known).get()
        )
    except NotFound:
        return None  # removed from OneDrive since: uploaded again
    return item if item is not None and item.id and item.web_url else None


def upload_key(marker: str) -> str:
    """The OneDrive item a Matrix event's file was uploaded as (pruned by age)."""
    return f"teams-upload:{marker}"


async def upload_once(
    graph: GraphServiceClient, call: Call, items: Any, name: str, data: bytes, folder: str,
    uploads: Uploads | None, marker: str | None, where: str,
) -> tuple[DriveItem, str]:  # fmt: skip
    """The file a Matrix event's ``data`` is in ``folder``: the one an earlier attempt
    uploaded (``marker``), else a new upload, recorded for the next attempt; and its name."""
    item = await uploaded_before(call, items, uploads, marker)
    if item is not None:
        return item, name
    item, name = await upload_new(graph, call, items, name, data, folder)
    if item is None or not item.id or not item.web_url:
        raise PermanentError(f"{where} answered the upload of {name} without an id or URL")
    if uploads is not None and marker:
        await uploads.kv_set(upload_key(marker), item.id)
    return item, name


async def _upload_and_share(
    graph: GraphServiceClient,
    call: Call,
    chat_id: str,
    media: Media,
    data: bytes,
    uploads: Uploads | None = None,
    marker: str | None = None,
) -> DriveItem:
    drive = await call("read the OneDrive", graph.me.drive.get())
    if drive is None or not drive.id:
        raise PermanentError("Graph answered GET /me/drive without an id")
    items = graph.drives.by_drive_id(drive.id).items
    name = safe_name(media.filename, media.mimetype)
    item, name = await upload_once(
        graph, call, items, name, data, f"root:/{CHAT_FILES}", uploads, marker, "OneDrive"
    )
    assert item.id is not None
    owner = _user_id(item)
    recipients = [
        DriveRecipient(object_id=member)
        for member in await _member_ids(graph, call, chat_id)
        if member != owner
    ]
    if recipients:
        body = CreateLinkPostRequestBody(type="view", scope="users", recipients=recipients)
        await call(
            f"share {name} with {chat_id}", items.by_drive_item_id(item.id).create_link.post(body)
        )
    item.name = item.name or name
    return item


async def upload(
    graph: GraphServiceClient, call: Call, builder: Any, data: bytes, name: str
) -> DriveItem | None:
    errors: dict[str, Any] = {"XXX": ODataError}
    if len(data) <= SIMPLE_UPLOAD_BYTES:
        # Never replace a file of that name: it may be shared in another chat.
        put = builder.content.to_put_request_information(data)
        put.url_template = f"{put.url_template}?{CONFLICT}=fail"  # the base URL comes later
        sent_whole = graph.request_adapter.send_async(put, DriveItem, errors)
        item: DriveItem | None = await call(f"upload {name}", sent_whole)
        return item
    properties = DriveItemUploadableProperties(additional_data={CONFLICT: "fail"})
    body = CreateUploadSessionPostRequestBody(item=properties)
    session = await call(f"start uploading {name}", builder.create_upload_session.post(body))
    if session is None or not session.upload_url:
        raise PermanentError(f"OneDrive opened no upload session for {name}")
    item = None
    for start in range(0, len(data), CHUNK_BYTES):
        chunk = data[start : start + CHUNK_BYTES]
        info = RequestInformation(Method.PUT)
        info.url = session.upload_url  # not Graph's host: the token is not sent there
        info.headers.try_add("Content-Range", f"bytes {start}-{start + len(chunk) - 1}/{len(data)}")
        info.set_stream_content(chunk)
        sent = graph.request_adapter.send_async(info, DriveItem, errors)
        item = await call(f"upload {name} ({start // MB} MB sent)", sent)
    return item


async def free_name(items: Any, call: Call, name: str, folder: str = f"root:/{CHAT_FILES}") -> str:
    """``name``, or ``name (2)`` …: an upload by path replaces a file of the same name, which
    may be shared in another chat. ``folder``: a path key (``root:/…`` or ``{folder-id}:``)."""
    tries = [name, *(_numbered(name, n) for n in range(2, 5))]
    tries += [_numbered(name, secrets.token_hex(4)) for _ in range(3)]  # a name in heavy use
    for candidate in tries:
        try:
            await call("look for a file", items.by_drive_item_id(f"{folder}/{candidate}:").get())
        except NotFound:
            return candidate
    raise PermanentError(f"no free name for {name} in {folder}")


async def upload_new(
    graph: GraphServiceClient, call: Call, items: Any, name: str, data: bytes, folder: str
) -> tuple[DriveItem | None, str]:
    """Upload ``data`` as a new file of ``folder`` (a path key: ``root:/…`` or
    ``{folder-id}:``) named ``name`` or, if that is taken, ``name (2)`` …; the item and the
    name it got. The name is looked for first, and OneDrive refuses a name taken meanwhile
    (``conflictBehavior=fail``: another upload won the race), then the next is tried."""
    first = await free_name(items, call, name, folder)
    for candidate in [first, *(_numbered(name, secrets.token_hex(4)) for _ in range(3))]:
        key = f"{folder}/{candidate}:"
        try:
            return await upload(
                graph, call, items.by_drive_item_id(key), data, candidate
            ), candidate
        except PermanentError as err:
            if not _name_taken(err):
                raise
    raise PermanentError(f"no free name for {name} in {folder}")


def _name_taken(err: Exception) -> bool:
    cause = err.__cause__
    return isinstance(cause, APIError) and cause.response_status_code == 409


def _user_id(item: DriveItem) -> str | None:
    who = item.created_by.user if item.created_by is not None else None
    return str(who.id).lower() if who is not None and who.id else None


async def _member_ids(graph: GraphServiceClient, call: Call, chat_id: str) -> list[str]:
    page = await call(
        f"read the members of {chat_id}", graph.chats.by_chat_id(chat_id).members.get()
    )
    found = []
    for member in (page.value if page is not None else None) or []:
        account = getattr(member, "user_id", None) or (member.additional_data or {}).get("userId")
        if account:
            found.append(str(account).lower())
    return found


# --- Teams → Matrix ---------------------------------------------------------------------


class FilesToMatrix:
    """The files of Teams messages as Matrix parts. Knows each tenant's SharePoint hosts and
    the OneDrive of each sender it has seen."""

    DRIVES_KEPT = 1000

    def __init__(self, max_bytes: int, http: aiohttp.ClientSession | None = None) -> None:
        self.max_bytes = max_bytes
        self._http = http
        """Streams downloads, stopped past ``max_bytes``; without it the SDK reads them whole."""
        self._hosts: dict[str, set[str]] = {}
        self._drives: dict[str, str] = {}
        """AAD user id → the id of their OneDrive."""

    async def parts(
        self,
        link: TenantLink,
        msg: ChatMessage,
        sender: str | None,
        library: Library | None = None,
    ) -> list[MessagePart]:
        """One part per ``reference`` attachment: the file, or a notice with its link.
        ``library``: the one drive the files must be in (a channel's team library), read only
        if the message has files; without it, the sender's own OneDrive."""
        out: list[MessagePart] = []
        files = [
            a for a in msg.attachments or [] if a.content_type == "reference" and a.content_url
        ]
        for index, attachment in enumerate(files):
            assert attachment.content_url is not None
            part_id = PartID(f"file{index}")
            name = safe_name(attachment.name)
            url = attachment.content_url
            why = await self._refusal(link, url, sender)
            item: DriveItem | None = None
            if why is None and sender is not None:
                item, why = await self._item(link, url, sender, library)
            if item is None or why is not None:
                out.append(_notice(part_id, name, url, why or "it could not be read"))
                continue
            media = self._media(link, url, item, name)
            # Too big for the homeserver, or grown past the limit since: the link, as a notice.
            fallback = _notice(part_id, name, url, "it could not be copied")
            out.append(MessagePart(part_id=part_id, media=media, fallback=fallback))
        return out

    async def _refusal(self, link: TenantLink, url: str, sender: str | None) -> str | None:
        """Why ``url`` is not looked up: only the tenant's own SharePoint is asked for a file,
        so a message cannot make the bridge knock on other hosts with its tokens."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        outside = "it is not stored in this Teams organisation's own SharePoint"
        if parts.scheme != "https" or parts.username or parts.password or parts.port:
            return outside
        hosts = await self._tenant_hosts(link, sender)
        if hosts is None:
            return "the bridge may not read files in Teams (Files.Read.All)"
        return None if host in hosts else outside

    async def _tenant_hosts(self, link: TenantLink, sender: str | None) -> set[str] | None:
        """The tenant's SharePoint hosts, from the OneDrive of the sender or, for a guest
        (whose drive is in another tenant), of the relay account. ``None``: the app may not
        read OneDrives (no ``Files.Read.All``)."""
        known = self._hosts.get(link.id)
        if known is not None:
            return known
        for account in dict.fromkeys(a for a in (sender, link.relay_user_id) if a):
            drive = await self._drive(link, account)
            if drive is None:
                return None
            host = (urlsplit(drive.web_url or "").hostname or "").lower()
            if ".sharepoint." in host:
                hosts = {host, host.replace("-my.", ".", 1)}
                self._hosts[link.id] = hosts
                return hosts
        return set()

    async def _drive(self, link: TenantLink, user: str) -> Drive | None:
        """``user``'s OneDrive (an empty one if they have none here, e.g. a guest); ``None``
        if the app may not read it."""
        try:
            drive = await graph_call(
                f"read the OneDrive of {user}",
                link.app.users.by_user_id(user).drive.get(),
                reading=True,
            )
        except TransientError:
            raise
        except NotFound:
            return Drive()
        except Exception:
            return None
        if drive is not None and drive.id:
            if len(self._drives) >= self.DRIVES_KEPT:
                self._drives.clear()
            self._drives[user] = drive.id
        return drive or Drive()

    async def _item(
        self, link: TenantLink, url: str, sender: str, library: Library | None = None
    ) -> tuple[DriveItem | None, str | None]:
        """The file, if it is in the sender's own OneDrive: the app may read every file of
        the tenant, so a message linking a file its sender may not open (someone else's, a
        site's) must not bring that file to Matrix. Teams keeps files shared in a chat in the
        sender's OneDrive."""
        shared = link.app.shares.by_shared_drive_item_id(share_id(url)).drive_item
        try:
            item = await graph_call("look up a shared file", shared.get(), reading=True)
        except (NotFound, PermanentError):
            return None, "the bridge may not read it"
        if item is None or item.file is None:
            return None, "it is not a file"
        owner = item.parent_reference.drive_id if item.parent_reference else None
        if library is not None:
            where = await library()
            if where is None or owner != where[0] or not in_folder(item, where[1]):
                return None, "it is not in this channel's files"
        else:
            if sender not in self._drives:
                await self._drive(link, sender)
            if owner is None or owner != self._drives.get(sender):
                return None, "it is not in the sender's own OneDrive"
        if (item.size or 0) > self.max_bytes:
            size = (item.size or 0) / (1024 * 1024)
            limit = self.max_bytes // (1024 * 1024)
            return None, f"it is {size:.1f} MB, more than the {limit} MB the bridge copies"
        return item, None

    def _media(self, link: TenantLink, url: str, item: DriveItem, name: str) -> Media:
        file_name = safe_name(item.name or name)
        mimetype = (item.file.mime_type if item.file else None) or (
            mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        )
        media = Media(mimetype=mimetype, filename=file_name, size=item.size)
        content = link.app.shares.by_shared_drive_item_id(share_id(url)).drive_item.content
        fetch: Callable[[], Awaitable[bytes]] = self._fetcher(content, file_name)
        if self._http is not None:
            fetch = self._streamer(link, url, file_name, self._http)
        media.fetch = fetch
        return media

    def _streamer(
        self, link: TenantLink, url: str, name: str, http: aiohttp.ClientSession
    ) -> Callable[[], Awaitable[bytes]]:
        """Reads the file in chunks and stops past ``max_bytes``: the size Graph gave when the
        message was read may be another file's by now (replaced by one of many gigabytes)."""
        target = f"{link.graph_url.rstrip('/')}/shares/{share_id(url)}/driveItem/content"

        async def fetch() -> bytes:
            what = f"download {name}"
            headers = {"Authorization": f"Bearer {await link.app_tokens.token()}"}
            try:
                async with http.get(target, headers=headers, allow_redirects=False) as resp:
                    location = resp.headers.get("Location")
                    if resp.status not in (301, 302, 303, 307, 308) or not location:
                        _check(resp.status, what)
                        return await _read_capped(resp, what, self.max_bytes)
                # Graph sends the file's pre-authenticated download URL: the token stays Graph's.
                return await _capped(http, location, what, self.max_bytes)
            except aiohttp.ClientError as err:
                raise TransientError(f"{what}: Graph unreachable: {err}") from err

        return fetch

    def _fetcher(self, content: Any, name: str) -> Callable[[], Awaitable[bytes]]:
        async def fetch() -> bytes:
            data = await graph_call(f"download {name}", content.get(), reading=True)
            if data is not None and len(data) > self.max_bytes:
                raise PermanentError(f"{name} grew past max_file_mb while it was copied")
            return data or b""

        return fetch


async def _capped(http: aiohttp.ClientSession, url: str, what: str, max_bytes: int) -> bytes:
    async with http.get(url) as resp:
        _check(resp.status, what)
        return await _read_capped(resp, what, max_bytes)


def _check(status: int, what: str) -> None:
    if status == 404:
        raise NotFound(f"{what}: Graph answered 404")
    if status == 429 or status >= 500:
        raise TransientError(f"{what}: Graph answered {status}")
    if status != 200:
        raise PermanentError(f"{what}: Graph answered {status}")


async def _read_capped(resp: aiohttp.ClientResponse, what: str, max_bytes: int) -> bytes:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(256 * 1024):
        data += chunk
        if len(data) > max_bytes:
            raise PermanentError(f"{what}: grew past max_file_mb while it was copied")
    return bytes(data)


def _notice(part_id: PartID, name: str, url: str, why: str) -> MessagePart:
    text = f"📎 {name} was not copied to Matrix: {why}. Open it in Teams: {url}"
    link = f'<a href="{html.escape(url)}">{html.escape(name)}</a>'
    return MessagePart(
        part_id=part_id,
        notice=True,
        text=text,
        html=f"📎 {link} was not copied to Matrix: {html.escape(why)}. Open it in Teams.",
    )


def root_path(path: str | None) -> str | None:
    """A ``parentReference.path`` (``/drive/root:/General``, ``/drives/{id}/root:/A%20B``) as
    the path from the drive's root (``General``, ``A B``); None if it names no root."""
    if not path or "root:" not in path:
        return None
    return unquote(path.split("root:", 1)[1]).strip("/")


def in_folder(item: DriveItem, folder: str) -> bool:
    """Whether ``item`` is in ``folder`` (a path from its drive's root) or below it; SharePoint
    compares names without case."""
    where = root_path(item.parent_reference.path if item.parent_reference else None)
    if where is None:
        return False
    where, folder = where.casefold(), folder.casefold()
    return where == folder or where.startswith(folder + "/")
