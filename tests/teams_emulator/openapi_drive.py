"""The drive part of ``openapi_check.record``: OneDrive uploads, sharing links and ``/shares``,
successes and refusals, recorded in the same exchange format."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import aiohttp

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def recorded(
    exchanges: list[dict[str, Any]], method: str, path: str, pattern: str,
    response: aiohttp.ClientResponse,
) -> Any:  # fmt: skip
    """Keep one exchange for the OpenAPI check; its JSON body, if any."""
    raw = await response.read()
    exchanges.append(
        {
            "method": method,
            "path": path.split("?")[0],
            "query": path.split("?")[1] if "?" in path else "",
            "status": response.status,
            "contentType": response.content_type,
            "body": raw.decode("utf-8", "replace"),
            "raw": base64.b64encode(raw).decode(),
            "pattern": pattern,
        }
    )
    return json.loads(raw) if raw and response.content_type.endswith("json") else None


def share_id(url: str) -> str:
    return "u!" + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


async def record_drive(
    session: aiohttp.ClientSession,
    base: str,
    exchanges: list[dict[str, Any]],
    tokens: dict[str, str],
    users: dict[str, dict[str, Any]],
    channel: tuple[str, str] | None = None,
) -> None:
    """``tokens``: ``app``, ``adele`` and ``megan``'s access tokens; ``channel``: (team,
    channel) of a team Adele is in and Megan is not."""

    async def call(
        method: str, path: str, token: str, body: object = None, pattern: str = ""
    ) -> Any:
        raw_body = body if isinstance(body, bytes) else None
        async with session.request(
            method,
            f"{base}/v1.0{path}",
            data=raw_body,
            json=None if raw_body is not None else body,
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            return await recorded(exchanges, method, path, pattern, r)

    adele, megan, app = tokens["adele"], tokens["megan"], tokens["app"]

    def session_put(url: str, data: bytes, headers: dict[str, str]) -> Any:
        return session.put(url, data=data, headers=headers)

    drive = await call("GET", "/me/drive", adele)
    await call("GET", f"/users/{users['Adele']['id']}/drive", app)
    await call("GET", f"/users/{users['Megan']['id']}/drive", adele, None, "error")
    await call("GET", f"/drives/{drive['id']}/root", adele)
    item = await call("PUT", "/me/drive/root:/plan.pdf:/content", adele, PDF)
    by_path = quote("root:/Microsoft Teams Chat Files/notes.pdf:", safe="")
    other = await call("PUT", f"/drives/{drive['id']}/items/{by_path}/content", adele, PDF)
    await call("PUT", f"/drives/{drive['id']}/items/{other['id']}/content", adele, PDF + b"%")
    await call("PUT", f"/drives/{drive['id']}/items/{by_path}/content", megan, PDF, "error")
    bad = quote("root:/Microsoft Teams Chat Files/a<b>.pdf:", safe="")
    await call("PUT", f"/drives/{drive['id']}/items/{bad}/content", adele, PDF, "error")
    await call("GET", f"/drives/{drive['id']}/items/{item['id']}", adele)
    await call("GET", f"/drives/{drive['id']}/items/{by_path}", adele)
    await call("GET", f"/drives/{drive['id']}/items/{item['id']}/content", adele)
    shared = f"/shares/{share_id(item['webUrl'])}/driveItem"
    await call("GET", shared, megan, None, "error")  # not shared with her yet
    await call(
        "POST",
        f"/drives/{drive['id']}/items/{item['id']}/createLink",
        adele,
        {"type": "view", "scope": "users", "recipients": [{"objectId": users["Megan"]["id"]}]},
    )
    await call(
        "POST",
        f"/drives/{drive['id']}/items/{item['id']}/createLink",
        adele,
        {"type": "view", "scope": "anonymous"},
        "error",
    )
    await call("GET", shared, megan)
    await call("GET", shared + "/content", megan)
    await call("GET", shared + "/content", app)
    await call("GET", "/shares/u!bm9wZQ/driveItem", app, None, "error")
    big = quote("root:/Microsoft Teams Chat Files/big.pdf:", safe="")
    upload = f"/drives/{drive['id']}/items/{big}/createUploadSession"
    fail = {"item": {"@microsoft.graph.conflictBehavior": "fail"}}
    opened = await call("POST", upload, adele, fail)
    # The chunks go to SharePoint's upload URL, not to Graph: not described, not recorded.
    headers = {"Content-Range": f"bytes 0-{len(PDF) - 1}/{len(PDF)}"}
    async with session_put(opened["uploadUrl"], PDF, headers) as response:
        assert response.status == 201, await response.text()
    await call("POST", upload, adele, fail, "error")  # the name is taken now
    await call("POST", upload, megan, {}, "error")  # not her drive
    if channel is not None:
        await record_channel_folder(call, channel, adele, megan, app)


async def record_channel_folder(
    call: Any, channel: tuple[str, str], adele: str, megan: str, app: str
) -> None:
    """A channel's files folder in its team's library: found, written to and read by members
    and the app; refused to Megan, who is not in the team."""
    team_id, channel_id = channel
    path = f"/teams/{team_id}/channels/{channel_id}/filesFolder"
    folder = await call("GET", path, adele)
    await call("GET", path, app)
    await call("GET", path, megan, None, "error")
    drive = folder["parentReference"]["driveId"]
    key = quote(f"{folder['id']}:/agenda.pdf:", safe="")
    item = await call("PUT", f"/drives/{drive}/items/{key}/content", adele, PDF)
    await call("GET", f"/drives/{drive}/items/{key}", adele)
    await call("GET", f"/drives/{drive}/items/{item['id']}", megan, None, "error")
    await call("PUT", f"/drives/{drive}/items/{key}/content", megan, PDF, "error")
    shared = f"/shares/{share_id(item['webUrl'])}/driveItem"
    await call("GET", shared, app)
    await call("GET", shared + "/content", adele)
    await call("GET", shared + "/content", megan, None, "error")
