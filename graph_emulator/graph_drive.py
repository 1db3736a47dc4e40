"""Graph's drive routes: OneDrive items, their content, sharing links and ``/shares``.

What a Teams bridge needs for files in chats: upload into the sender's OneDrive
(``PUT /me/drive/root:/Microsoft Teams Chat Files/{name}:/content``, or by item key under
``/drives/{id}/items/…``), share with the chat's members (``createLink`` scoped to ``users``
with ``recipients``), and read a file named by its URL (``/shares/u!…/driveItem``). Reading is
refused (403) to anyone the item was not shared with (see :mod:`.drives`). Content is answered
in place (Graph redirects to a pre-authenticated URL; the SDK follows either).
"""

from __future__ import annotations

import re
from datetime import timedelta

from aiohttp import web

from . import permissions as perm
from .drives import (
    Drive,
    DriveItem,
    UploadSession,
    by_share_id,
    channel_folder,
    drive_json,
    drive_of,
    find_drive,
    find_item,
    item_json,
    item_path,
    key_path,
    permission_json,
    put_content,
    require_owner,
    require_read,
    valid_name,
    web_url,
)
from .odata import (
    GraphError,
    bad_request,
    error_response,
    forbidden,
    iso,
    json_response,
    new_guid,
    origin,
    read_json,
)
from .services import Services, services
from .state import TokenGrant

_MIME_BY_SUFFIX = {
    "pdf": "application/pdf",
    "txt": "text/plain",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "zip": "application/zip",
}


def _mime(name: str) -> str:
    """OneDrive types a file by its name, not by what the uploader says."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _MIME_BY_SUFFIX.get(suffix, "application/octet-stream")


def _grant(request: web.Request, need: perm.Need) -> tuple[Services, TokenGrant]:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    perm.require(grant, need)
    return svc, grant


def _own_drive(svc: Services, grant: TokenGrant) -> Drive:
    user_id = perm.require_delegated(
        grant, "/me request is only valid with delegated authentication flow."
    )
    return drive_of(svc.state, svc.state.user(user_id))


async def get_my_drive(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.READ_FILES)
    return json_response(drive_json(svc.state, _own_drive(svc, grant)))


async def get_user_drive(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.READ_FILES)
    user = svc.state.user(request.match_info["user_id"], grant.tenant_id)
    if grant.user_id is not None and grant.user_id != user.id:
        raise forbidden("Access denied")
    return json_response(drive_json(svc.state, drive_of(svc.state, user)))


def _item(request: web.Request, svc: Services, grant: TokenGrant) -> tuple[Drive, DriveItem]:
    drive = find_drive(svc.state, request.match_info["drive_id"])
    item = find_item(drive, request.match_info.get("item_id", "root"))
    require_read(svc.state, grant, drive, item)
    return drive, item


async def get_item(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.READ_FILES)
    drive, item = _item(request, svc, grant)
    return json_response(item_json(svc.state, drive, item, svc.graph_base(request)))


def _content(item: DriveItem) -> web.Response:
    if item.folder:
        raise bad_request("The item is a folder and has no content.", "invalidRequest")
    return web.Response(body=item.content, content_type=item.mime_type)


async def get_content(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.READ_FILES)
    return _content(_item(request, svc, grant)[1])


async def _upload(
    request: web.Request, svc: Services, grant: TokenGrant, drive: Drive, path: str
) -> web.Response:
    require_owner(grant, drive)
    data = await request.read()
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if request.query.get("@microsoft.graph.conflictBehavior") == "fail" and any(
        item_path(i).lower() == path.strip("/").lower() for i in drive.items.values()
    ):
        raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
    item, new = put_content(
        svc.state, drive, path, data, grant.user_id or drive.owner_id, _mime(name)
    )
    return json_response(
        item_json(svc.state, drive, item, svc.graph_base(request)), 201 if new else 200
    )


async def put_my_content(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.WRITE_FILES)
    return await _upload(request, svc, grant, _own_drive(svc, grant), request.match_info["path"])


async def put_item_content(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.WRITE_FILES)
    drive = find_drive(svc.state, request.match_info["drive_id"])
    key = request.match_info["item_id"]
    path = key_path(drive, key)
    if path is not None:
        return await _upload(request, svc, grant, drive, path)
    require_owner(grant, drive)
    item = find_item(drive, key)
    if item.folder:
        raise bad_request("The item is a folder.", "invalidRequest")
    item.content, item.modified = await request.read(), svc.state.now()
    item.version += 1
    return json_response(item_json(svc.state, drive, item, svc.graph_base(request)))


async def create_link(request: web.Request) -> web.Response:
    """``type`` view or edit; ``scope`` users (with ``recipients`` by ``objectId`` or
    ``email``) or organization. Anonymous links are off, as in most tenants."""
    svc, grant = _grant(request, perm.WRITE_FILES)
    drive = find_drive(svc.state, request.match_info["drive_id"])
    item = find_item(drive, request.match_info["item_id"])
    require_owner(grant, drive)
    body = await read_json(request)
    kind, scope = body.get("type"), body.get("scope") or "organization"
    if kind not in ("view", "edit"):
        raise bad_request("Invalid link type.", "invalidRequest")
    if scope == "anonymous":
        raise forbidden("Anonymous sharing links are disabled in this tenant.")
    if scope == "organization":
        item.organization_link = True
    elif scope == "users":
        recipients = body.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            raise bad_request("A link scoped to users needs recipients.", "invalidRequest")
        for recipient in recipients:
            key = (
                recipient.get("objectId") or recipient.get("email")
                if isinstance(recipient, dict)
                else None
            )
            user = svc.state.find_user(str(key or ""), drive.tenant_id)
            if user is None:
                raise bad_request(
                    f"Recipient {key!r} is not a user of this organization.", "invalidRequest"
                )
            item.shared_with.add(user.id)
    else:
        raise bad_request(f"Invalid link scope '{scope}'.", "invalidRequest")
    return json_response(permission_json(item, web_url(drive, item), scope, kind), 201)


async def get_shared_item(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.READ_FILES)
    drive, item = by_share_id(svc.state, request.match_info["share_id"])
    require_read(svc.state, grant, drive, item)
    return json_response(item_json(svc.state, drive, item, svc.graph_base(request)))


async def get_shared_content(request: web.Request) -> web.Response:
    svc, grant = _grant(request, perm.READ_FILES)
    drive, item = by_share_id(svc.state, request.match_info["share_id"])
    require_read(svc.state, grant, drive, item)
    return _content(item)


CHUNK_LIMIT = 60 * 1024 * 1024
"""Graph's limit for one chunk of an upload session."""
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


async def create_upload_session(request: web.Request) -> web.Response:
    """By path only (``root:/folder/name:``), as a client uploading a new file does; the item's
    ``@microsoft.graph.conflictBehavior`` ``fail`` refuses a name in use (409)."""
    svc, grant = _grant(request, perm.WRITE_FILES)
    drive = find_drive(svc.state, request.match_info["drive_id"])
    require_owner(grant, drive)
    path = key_path(drive, request.match_info["item_id"])
    if path is None:
        raise bad_request("The emulator opens upload sessions by path (root:/…:, {id}:/…:).")
    for part in path.split("/"):
        valid_name(part)
    body = await read_json(request)
    raw_item = body.get("item")
    item: dict[str, object] = raw_item if isinstance(raw_item, dict) else {}
    exists = any(item_path(i).lower() == path.lower() for i in drive.items.values())
    if exists and item.get("@microsoft.graph.conflictBehavior") == "fail":
        raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
    expires = svc.state.now() + timedelta(days=1)
    session = UploadSession(new_guid(), path, grant.user_id or drive.owner_id, expires)
    drive.sessions[session.id] = session
    url = f"{origin(request, svc.config.public_url)}/_upload/{drive.id}/{session.id}"
    return json_response(
        {"uploadUrl": url, "expirationDateTime": iso(expires), "nextExpectedRanges": ["0-"]}
    )


async def upload_chunk(request: web.Request) -> web.Response:
    """``PUT {uploadUrl}`` with ``Content-Range``: chunks in order; the last one makes the file.
    Not Graph (SharePoint), so no token is asked for: the URL is the credential."""
    try:
        return await _chunk(request)
    except GraphError as exc:
        return error_response(request, exc)


async def _chunk(request: web.Request) -> web.Response:
    svc = services(request)
    drive = svc.state.drives.get(request.match_info["drive_id"])
    session = drive.sessions.get(request.match_info["session_id"]) if drive else None
    if drive is None or session is None or session.expires <= svc.state.now():
        raise GraphError(404, "itemNotFound", "The upload session was not found.")
    found = _RANGE.fullmatch(request.headers.get("Content-Range", ""))
    if found is None:
        raise bad_request("Content-Range is missing or malformed.", "invalidRange")
    start, end, total = (int(v) for v in found.groups())
    data = await request.read()
    if len(data) > CHUNK_LIMIT:
        raise GraphError(413, "requestTooLarge", "A chunk may hold at most 60 MiB.")
    if start != len(session.received) or end - start + 1 != len(data) or end >= total:
        raise GraphError(
            416, "invalidRange", f"Expected the range {len(session.received)}- of {total} bytes."
        )
    session.received += data
    if len(session.received) < total:
        body = {
            "expirationDateTime": iso(session.expires),
            "nextExpectedRanges": [f"{len(session.received)}-"],
        }
        return json_response(body, 202)
    del drive.sessions[session.id]
    name = session.path.rsplit("/", 1)[-1]
    item, _ = put_content(
        svc.state, drive, session.path, bytes(session.received), session.creator_id,
        _mime(name), limit=total,
    )  # fmt: skip
    return json_response(item_json(svc.state, drive, item, svc.graph_base(request)), 201)


FILES_FOLDER = perm.Need(
    ("Files.Read.All", "Files.ReadWrite.All", "Group.Read.All", "Sites.Read.All"),
    ("Files.Read.All", "Files.ReadWrite.All", "Group.Read.All", "Sites.Read.All"),
)


async def get_files_folder(request: web.Request) -> web.Response:
    """A standard channel's folder in its team's library; only the team's members (and the
    tenant's apps) learn where it is."""
    svc, grant = _grant(request, FILES_FOLDER)
    team = svc.state.team(request.match_info["team_id"])
    if team.tenant_id != grant.tenant_id:
        raise forbidden("The caller's tenant does not own this team.")
    if grant.user_id is not None and grant.user_id not in team.members:
        raise forbidden(f"User '{grant.user_id}' is not a member of team '{team.id}'.")
    channel = svc.state.channel(team.id, request.match_info["channel_id"])
    drive, folder = channel_folder(svc.state, channel)
    return json_response(item_json(svc.state, drive, folder, svc.graph_base(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1.0/teams/{team_id}/channels/{channel_id}/filesFolder", get_files_folder)
    app.router.add_post(
        "/v1.0/drives/{drive_id}/items/{item_id}/createUploadSession", create_upload_session
    )
    app.router.add_put("/_upload/{drive_id}/{session_id}", upload_chunk)
    app.router.add_get("/v1.0/me/drive", get_my_drive)
    app.router.add_put("/v1.0/me/drive/root:/{path:.+}:/content", put_my_content)
    app.router.add_get("/v1.0/users/{user_id}/drive", get_user_drive)
    app.router.add_get("/v1.0/drives/{drive_id}/root", get_item)
    app.router.add_get("/v1.0/drives/{drive_id}/items/{item_id}", get_item)
    app.router.add_get("/v1.0/drives/{drive_id}/items/{item_id}/content", get_content)
    app.router.add_put("/v1.0/drives/{drive_id}/items/{item_id}/content", put_item_content)
    app.router.add_post("/v1.0/drives/{drive_id}/items/{item_id}/createLink", create_link)
    app.router.add_get("/v1.0/shares/{share_id}/driveItem", get_shared_item)
    app.router.add_get("/v1.0/shares/{share_id}/driveItem/content", get_shared_content)
