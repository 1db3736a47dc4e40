"""OneDrive for Business as Teams uses it for files in chats: records, access and shapes.

Each user has one drive (made when first used) whose items live under SharePoint web URLs of
the tenant (``https://contoso-my.sharepoint.com/personal/adele_contoso_onmicrosoft_com/…``).
Who may read an item is what Graph enforces: its owner; the people a sharing link
(``createLink`` with ``scope: users`` and ``recipients``) names; everyone of the tenant for an
``organization`` link; and an app-only token of the tenant with ``Files.Read.All`` (or more).
A delegated ``Files.Read.All`` reads what its user can read, no more.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .odata import bad_request, forbidden, iso, new_guid, not_found
from .state import Channel, EmulatorState, Team, TokenGrant, User

CHAT_FILES = "Microsoft Teams Chat Files"
SIMPLE_UPLOAD_LIMIT = 250 * 1024 * 1024
"""Graph's limit for ``PUT …/content`` (larger files need an upload session)."""
_FORBIDDEN_NAME = re.compile(r'["*:<>?/\\|]')


@dataclass(slots=True)
class DriveItem:
    id: str
    drive_id: str
    name: str
    parent_path: str
    """The folder's path below the root, ``""`` for the root's children."""
    created: datetime
    modified: datetime
    creator_id: str
    content: bytes = b""
    mime_type: str = "application/octet-stream"
    folder: bool = False
    version: int = 1
    etag_guid: str = field(default_factory=lambda: new_guid().upper())
    shared_with: set[str] = field(default_factory=set)
    organization_link: bool = False


@dataclass(slots=True)
class UploadSession:
    """A large upload under way: chunks arrive in order at its URL, without a token."""

    id: str
    path: str
    creator_id: str
    expires: datetime
    received: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class Drive:
    id: str
    owner_id: str
    tenant_id: str
    web_url: str
    created: datetime
    root: DriveItem
    items: dict[str, DriveItem] = field(default_factory=dict)
    sessions: dict[str, UploadSession] = field(default_factory=dict)
    team_id: str | None = None
    """A team's document library (its SharePoint site's), not a person's OneDrive."""
    members: dict[str, list[str]] | None = None
    """A team library's readers and writers: the team's member table itself."""


def sharepoint_host(state: EmulatorState, tenant_id: str, personal: bool = True) -> str:
    """``contoso-my.sharepoint.com`` (OneDrive) or ``contoso.sharepoint.com`` (sites)."""
    tenant = state.tenants.get(tenant_id)
    prefix = (tenant.domain if tenant else "tenant").split(".")[0].lower()
    return f"{prefix}-my.sharepoint.com" if personal else f"{prefix}.sharepoint.com"


def drive_of(state: EmulatorState, user: User) -> Drive:
    """The user's OneDrive, made on first use."""
    for drive in state.drives.values():
        if drive.owner_id == user.id:
            return drive
    now = state.now()
    drive_id = "b!" + base64.urlsafe_b64encode(new_guid().encode()).decode().rstrip("=")[:40]
    personal = re.sub(r"[^a-z0-9]", "_", user.user_principal_name.lower())
    web_url = f"https://{sharepoint_host(state, user.tenant_id)}/personal/{personal}/Documents"
    root = DriveItem(new_guid(), drive_id, "root", "", now, now, user.id, folder=True)
    drive = Drive(drive_id, user.id, user.tenant_id, web_url, now, root)
    state.drives[drive_id] = drive
    return drive


def team_drive(state: EmulatorState, team: Team) -> Drive:
    """The document library of the team's SharePoint site, made on first use."""
    for drive in state.drives.values():
        if drive.team_id == team.id:
            return drive
    now = state.now()
    drive_id = "b!" + base64.urlsafe_b64encode(new_guid().encode()).decode().rstrip("=")[:40]
    site = re.sub(r"[^A-Za-z0-9]", "", team.display_name) or "Team"
    host = sharepoint_host(state, team.tenant_id, personal=False)
    taken = {d.web_url for d in state.drives.values()}
    web = f"https://{host}/sites/{site}/Shared%20Documents"
    for n in range(2, 1000):
        if web not in taken:
            break
        web = f"https://{host}/sites/{site}{n}/Shared%20Documents"
    root = DriveItem(new_guid(), drive_id, "root", "", now, now, "", folder=True)
    drive = Drive(drive_id, "", team.tenant_id, web, now, root, team_id=team.id)
    drive.members = team.members
    state.drives[drive_id] = drive
    return drive


def channel_folder(state: EmulatorState, channel: Channel) -> tuple[Drive, DriveItem]:
    """A standard channel's folder (named as the channel) in its team's library."""
    drive = team_drive(state, state.team(channel.team_id))
    name = _FORBIDDEN_NAME.sub("_", channel.display_name) or "Channel"
    for item in drive.items.values():
        if item.folder and not item.parent_path and item.name == name:
            return drive, item
    now = state.now()
    folder = DriveItem(new_guid(), drive.id, name, "", now, now, "", folder=True)
    drive.items[folder.id] = folder
    return drive, folder


def item_path(item: DriveItem) -> str:
    return f"{item.parent_path}/{item.name}".lstrip("/") if item.parent_path else item.name


def web_url(drive: Drive, item: DriveItem) -> str:
    if item is drive.root:
        return drive.web_url
    return f"{drive.web_url}/{quote(item_path(item))}"


def find_drive(state: EmulatorState, drive_id: str) -> Drive:
    drive = state.drives.get(drive_id)
    if drive is None:
        raise not_found("The resource could not be found.")
    return drive


def key_path(drive: Drive, key: str) -> str | None:
    """The path below the root that a path key names (``root:/folder/name:``, or below a
    folder's id: ``{folder-id}:/name:``); ``None`` for a key that is an id."""
    head, colon, rest = key.partition(":")
    if not colon:
        return None
    relative = rest.rstrip(":").strip("/")
    if head == "root":
        return relative
    folder = drive.items.get(head)
    if folder is None or not folder.folder:
        raise not_found("Item not found")
    return f"{item_path(folder)}/{relative}".strip("/")


def find_item(drive: Drive, key: str) -> DriveItem:
    """An item by id, ``root``, or path (``root:/folder/name:``, ``{folder-id}:/name:``)."""
    if key == "root":
        return drive.root
    path = key_path(drive, key)
    if path is not None:
        for item in drive.items.values():
            if item_path(item).lower() == path.lower():
                return item
        raise not_found("The resource could not be found.")
    found = drive.items.get(key)
    if found is None:
        raise not_found("Item not found")
    return found


def valid_name(name: str) -> str:
    """Graph refuses names with characters OneDrive does not allow (400 ``invalidRequest``)."""
    if not name or name.strip() != name or name in (".", "..") or _FORBIDDEN_NAME.search(name):
        raise bad_request(f"The provided name '{name}' is not valid.", "invalidRequest")
    if any(ord(c) < 32 for c in name):
        raise bad_request(f"The provided name '{name}' is not valid.", "invalidRequest")
    return name


def put_content(
    state: EmulatorState,
    drive: Drive,
    path: str,
    data: bytes,
    creator: str,
    mime: str,
    limit: int = SIMPLE_UPLOAD_LIMIT,
) -> tuple[DriveItem, bool]:
    """Write the file at ``path`` (folders made as needed); returns it and whether it is new."""
    if len(data) > limit:
        raise bad_request("The request body is too large for a simple upload.", "requestTooLarge")
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts:
        raise bad_request("The item path is empty.", "invalidRequest")
    for part in parts:
        valid_name(part)
    parent = ""
    for folder in parts[:-1]:
        key = f"root:/{parent}/{folder}:" if parent else f"root:/{folder}:"
        try:
            find_item(drive, key)
        except Exception:
            now = state.now()
            made = DriveItem(new_guid(), drive.id, folder, parent, now, now, creator, folder=True)
            drive.items[made.id] = made
        parent = f"{parent}/{folder}".lstrip("/")
    now = state.now()
    try:
        item = find_item(drive, f"root:/{'/'.join(parts)}:")
    except Exception:
        item = DriveItem(new_guid(), drive.id, parts[-1], parent, now, now, creator)
        drive.items[item.id] = item
        item.content, item.mime_type = data, mime
        return item, True
    if item.folder:
        raise bad_request("The item is a folder.", "invalidRequest")
    item.content, item.mime_type, item.modified = data, mime, now
    item.version += 1
    return item, False


def can_read(state: EmulatorState, grant: TokenGrant, drive: Drive, item: DriveItem) -> bool:
    if grant.tenant_id != drive.tenant_id:
        return False
    if grant.user_id is None:
        return bool(grant.scopes & {"Files.Read.All", "Files.ReadWrite.All", "Sites.Read.All"})
    if drive.members is not None:
        return grant.user_id in drive.members  # the team's library: its members, no one else
    if grant.user_id == drive.owner_id:
        return True
    return grant.user_id in item.shared_with or item.organization_link


def require_read(state: EmulatorState, grant: TokenGrant, drive: Drive, item: DriveItem) -> None:
    if not can_read(state, grant, drive, item):
        raise forbidden("Access denied")


def require_owner(grant: TokenGrant, drive: Drive) -> None:
    """Writing and sharing: the drive's owner, or an app with ``Files.ReadWrite.All``; in a
    team's library a member whose token may write beyond their own OneDrive."""
    if grant.tenant_id != drive.tenant_id:
        raise forbidden("Access denied")
    if grant.user_id is None and "Files.ReadWrite.All" in grant.scopes:
        return
    if drive.members is not None:
        if grant.user_id not in drive.members:
            raise forbidden("Access denied")
        if not grant.scopes & {"Files.ReadWrite.All", "Sites.ReadWrite.All"}:
            raise forbidden("Either scp or roles claim need to be present in the token.")
        return
    if grant.user_id != drive.owner_id:
        raise forbidden("Access denied")


def by_share_id(state: EmulatorState, share_id: str) -> tuple[Drive, DriveItem]:
    """The item a ``u!``-encoded sharing URL (base64url of the URL, no padding) names."""
    if not share_id.startswith("u!"):
        raise bad_request("Invalid shares key.", "invalidRequest")
    raw = share_id[2:]
    try:
        url = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise bad_request("Invalid shares key.", "invalidRequest") from exc
    for drive in state.drives.values():
        for item in drive.items.values():
            if web_url(drive, item) == url:
                return drive, item
    raise not_found(
        "The sharing link no longer exists, or you do not have permission to access it."
    )


def drive_json(state: EmulatorState, drive: Drive) -> dict[str, Any]:
    owner = state.users.get(drive.owner_id)
    if drive.team_id is not None:
        team = state.teams.get(drive.team_id)
        group = {"id": drive.team_id, "displayName": team.display_name if team else None}
        return {
            "id": drive.id, "driveType": "documentLibrary", "name": "Documents",
            "description": "", "webUrl": drive.web_url,
            "createdDateTime": iso(drive.created), "lastModifiedDateTime": iso(drive.created),
            "owner": {"group": group},
        }  # fmt: skip
    return {
        "id": drive.id,
        "driveType": "business",
        "name": "OneDrive",
        "description": "",
        "webUrl": drive.web_url,
        "createdDateTime": iso(drive.created),
        "lastModifiedDateTime": iso(drive.created),
        "owner": {"user": {"id": drive.owner_id, "displayName": owner.display_name if owner else None}},
        "quota": {"deleted": 0, "remaining": 1099511627776, "state": "normal", "total": 1099511627776,
                  "used": sum(len(i.content) for i in drive.items.values())},
    }  # fmt: skip


def item_json(state: EmulatorState, drive: Drive, item: DriveItem, base: str) -> dict[str, Any]:
    creator = state.users.get(item.creator_id)
    who = {"user": {"id": item.creator_id, "displayName": creator.display_name if creator else None,
                    "email": creator.mail if creator else None}}  # fmt: skip
    data: dict[str, Any] = {
        "@odata.context": f"{base}/$metadata#drives('{drive.id}')/items/$entity",
        "id": item.id,
        "name": item.name,
        "eTag": f'"{{{item.etag_guid}}},{item.version}"',
        "cTag": f'"c:{{{item.etag_guid}}},{item.version}"',
        "createdDateTime": iso(item.created),
        "lastModifiedDateTime": iso(item.modified),
        "webUrl": web_url(drive, item),
        "size": sum(len(i.content) for i in drive.items.values())
        if item.folder
        else len(item.content),
        "createdBy": who,
        "lastModifiedBy": who,
        "parentReference": {
            "driveType": "documentLibrary" if drive.team_id else "business",
            "driveId": drive.id,
            "id": None if item is drive.root else _parent_id(drive, item),
            "path": None if item is drive.root else f"/drive/root:/{item.parent_path}".rstrip("/"),
        },
    }
    if item.folder:
        children = [
            i for i in drive.items.values() if i.parent_path == item_path(item) and i is not item
        ]
        data["folder"] = {"childCount": len(children)}
        if item is drive.root:
            data["root"] = {}
    else:
        data["file"] = {"mimeType": item.mime_type, "hashes": None}
        data["@microsoft.graph.downloadUrl"] = f"{base}/drives/{drive.id}/items/{item.id}/content"
    return data


def _parent_id(drive: Drive, item: DriveItem) -> str:
    if not item.parent_path:
        return drive.root.id
    try:
        return find_item(drive, f"root:/{item.parent_path}:").id
    except Exception:
        return drive.root.id


def permission_json(item: DriveItem, link_url: str, scope: str, kind: str) -> dict[str, Any]:
    return {
        "id": new_guid(),
        "roles": ["write" if kind == "edit" else "read"],
        "hasPassword": False,
        "link": {"type": kind, "scope": scope, "webUrl": link_url, "preventsDownload": False},
        "shareId": "u!" + base64.urlsafe_b64encode(link_url.encode()).decode().rstrip("="),
    }


def check_attachment_placeholders(content: str, attachments: list[dict[str, object]]) -> None:
    """Graph refuses a message whose attachment has no ``<attachment id="…">`` in the body."""
    for attachment in attachments:
        wanted = f'<attachment id="{attachment.get("id")}">'
        if wanted not in content:
            raise bad_request(
                f"Attachment with id '{attachment.get('id')}' was not found in the message body."
            )
