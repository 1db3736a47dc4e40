"""Files both ways between Matrix and Teams, through a real Synapse, the bridge as a process and
the Graph emulator (OneDrive, sharing links, ``/shares``) reached by the unmodified msgraph-sdk.

A PDF sent in Matrix lands in the sender's OneDrive (the relay account's for a Matrix user
without a login) and is shared with the chat's members only: the Teams recipient opens it with
their own token, someone outside the chat cannot. A file shared in Teams arrives in Matrix as
its content; a link outside the tenant's SharePoint arrives as a notice and is never looked up.
Every Graph answer these tests caused is validated against the OpenAPI slice at the end.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from graph_emulator.recording import RECORDING, Recording
from tests.e2e.conftest import Hub
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_teams import Teams, _portal, _teams_message, ghost, teams_login
from tests.teams_emulator.extract_openapi_slice import SLICE
from tests.teams_emulator.openapi_check import check

pytestmark = pytest.mark.e2e
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest_asyncio.fixture(scope="module")
async def recording(hub: Hub) -> AsyncIterator[Recording]:
    """Every Graph exchange of this module, for the last test."""
    assert hub.graph._server is not None
    kept = hub.graph._server.app[RECORDING]
    kept.exchanges.clear()
    kept.enabled = True
    yield kept
    kept.enabled = False


@pytest_asyncio.fixture(scope="module")
async def adele(hub: Hub, recording: Recording) -> AsyncIterator[Teams]:
    user = await hub.user("adele")
    room = await teams_login(hub, user, "adele")
    yield Teams(user, room)


def _share_id(url: str) -> str:
    return "u!" + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


async def _token(hub: Hub, first_name: str) -> str:
    body = {"clientId": hub.graph.app["clientId"], "user": hub.graph.user(first_name)["id"]}
    return str((await hub.graph.control("POST", "/tokens", body))["access_token"])


async def _graph_as(
    hub: Hub, first_name: str, method: str, path: str, **kwargs: Any
) -> tuple[int, bytes]:
    """A Graph call from ``first_name``'s own Teams client."""
    headers = {"Authorization": f"Bearer {await _token(hub, first_name)}"}
    async with hub.graph.http.request(
        method, hub.graph.graph_url + path, headers=headers, **kwargs
    ) as response:
        return response.status, await response.read()


async def _send_file(user: MatrixUser, room_id: str, name: str, data: bytes, mime: str) -> str:
    mxc = await user.upload(data, mime, name)
    content = {
        "msgtype": "m.file",
        "body": name,
        "filename": name,
        "url": mxc,
        "info": {"mimetype": mime, "size": len(data)},
    }
    return await user.send_event(room_id, "m.room.message", content)


def _reference(message: dict[str, Any]) -> dict[str, Any] | None:
    found = [a for a in message.get("attachments") or [] if a["contentType"] == "reference"]
    return found[0] if found else None


async def test_a_pdf_from_matrix_arrives_in_teams_as_a_file_the_recipient_can_open(
    hub: Hub, adele: Teams
) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    await _send_file(adele.user, room_id, "minutes.pdf", PDF, "application/pdf")
    message = await _teams_message(hub, chat, _reference, "the shared file")
    attachment = _reference(message)
    assert attachment is not None
    assert message["from"]["user"]["id"] == hub.graph.user("adele")["id"]  # as Adele herself
    assert attachment["name"] == "minutes.pdf"
    assert f'<attachment id="{attachment["id"]}"></attachment>' in message["body"]["content"]
    assert (
        "adele" in attachment["contentUrl"]
        and "Microsoft%20Teams%20Chat%20Files" in (attachment["contentUrl"])
    )
    # Alex, the recipient, opens it with his own token; Nestor, not in the chat, may not.
    shared = f"/shares/{_share_id(attachment['contentUrl'])}/driveItem"
    assert await _graph_as(hub, "alex", "GET", shared + "/content") == (200, PDF)
    status, item = await _graph_as(hub, "alex", "GET", shared)
    assert status == 200 and json.loads(item)["file"]["mimeType"] == "application/pdf"
    assert (await _graph_as(hub, "nestor", "GET", shared + "/content"))[0] == 403


async def test_a_file_of_a_matrix_user_without_login_goes_through_the_relay_onedrive(
    hub: Hub, adele: Teams
) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    bob = await hub.user("bob")
    await adele.user.invite(room_id, bob.mxid)
    await bob.join(room_id)
    # Hostile name: a path, and a right-to-left override that would show "exe.pdf".
    await _send_file(bob, room_id, "../../notes\u202efdp.exe", PDF, "application/pdf")
    message = await _teams_message(hub, chat, _reference, "the relayed file")
    attachment = _reference(message)
    assert attachment is not None
    assert message["from"]["user"]["displayName"] == "Pontis Relay"
    assert bob.mxid in message["body"]["content"]  # the relay says who sent it
    assert attachment["name"] == "_.._notesfdp.exe"
    assert "/personal/pontis_relay_" in attachment["contentUrl"]  # the relay's OneDrive
    shared = f"/shares/{_share_id(attachment['contentUrl'])}/driveItem/content"
    assert await _graph_as(hub, "alex", "GET", shared) == (200, PDF)


async def test_a_file_over_4_mb_from_matrix_goes_up_through_an_upload_session(
    hub: Hub, adele: Teams
) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    data = b"%PDF" + bytes(range(256)) * (5 * 4096)  # 5 MiB: more than one simple upload
    await _send_file(adele.user, room_id, "scan.pdf", data, "application/pdf")
    message = await _teams_message(hub, chat, _reference, "the large file")
    attachment = _reference(message)
    assert attachment is not None and attachment["name"] == "scan.pdf"
    shared = f"/shares/{_share_id(attachment['contentUrl'])}/driveItem/content"
    assert await _graph_as(hub, "alex", "GET", shared) == (200, data)
    assert hub.graph.requests("/v1.0/drives/*/createUploadSession", "POST")


async def _share_from_teams(hub: Hub, chat: str, name: str, data: bytes) -> dict[str, Any]:
    """Alex, in Teams, puts a file in his OneDrive, shares it with the chat and sends it."""
    path = quote(f"/Microsoft Teams Chat Files/{name}")
    status, raw = await _graph_as(hub, "alex", "PUT", f"/me/drive/root:{path}:/content", data=data)
    assert status == 201, raw
    item = json.loads(raw)
    members = [{"objectId": hub.graph.user(n)["id"]} for n in ("adele",)]
    status, raw = await _graph_as(
        hub, "alex", "POST",
        f"/drives/{item['parentReference']['driveId']}/items/{item['id']}/createLink",
        json={"type": "view", "scope": "users", "recipients": members},
    )  # fmt: skip
    assert status == 201, raw
    guid = item["eTag"].strip('"').split(",")[0].strip("{}").lower()
    attachment = {
        "id": guid,
        "contentType": "reference",
        "contentUrl": item["webUrl"],
        "name": name,
    }
    content = f'<p>Here it is</p><attachment id="{guid}"></attachment>'
    await hub.graph.post_as("alex", chat, content, attachments=[attachment])
    return attachment


async def test_a_teams_file_arrives_in_matrix_as_its_content(hub: Hub, adele: Teams) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    mark = adele.user.mark()
    await _share_from_teams(hub, chat, "budget.pdf", PDF)
    event = await adele.user.wait_for(
        lambda e: e["content"].get("msgtype") == "m.file", room_id=room_id, timeout=45, after=mark
    )
    assert event["sender"] == ghost(hub, "alex")
    content = event["content"]
    assert content["body"] == "budget.pdf" and content["filename"] == "budget.pdf"
    assert content["info"] == {"mimetype": "application/pdf", "size": len(PDF)}
    assert await adele.user.download(content["url"]) == PDF
    text = adele.user.seen(lambda e: "Here it is" in str(e["content"].get("body")), room_id=room_id)
    assert text and "sharepoint" not in text[0]["content"]["body"]  # the file, not a link


async def test_a_link_outside_the_tenant_arrives_as_a_notice_and_is_never_fetched(
    hub: Hub, adele: Teams
) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    mark = adele.user.mark()
    url = "https://169.254.169.254/latest/meta-data/report.pdf"
    attachment = {"id": "a1", "contentType": "reference", "contentUrl": url, "name": "report.pdf"}
    await hub.graph.post_as(
        "alex", chat, '<attachment id="a1"></attachment>', attachments=[attachment]
    )
    notice = await adele.user.wait_for(
        lambda e: e["content"].get("msgtype") == "m.notice", room_id=room_id, timeout=45, after=mark
    )
    assert notice["sender"] == ghost(hub, "alex")
    assert "report.pdf was not copied to Matrix" in notice["content"]["body"]
    assert url in notice["content"]["body"]
    assert hub.graph.requests(f"/v1.0/shares/{_share_id(url)}*") == []


async def test_a_link_to_a_colleagues_private_file_does_not_bring_it_to_matrix(
    hub: Hub, adele: Teams
) -> None:
    """Hostile: the app may read every file of the tenant. Alex links a file in Megan's
    OneDrive that was never shared with him or the chat: Matrix gets a notice, not the file."""
    chat, _, room_id, _ = await _portal(hub, adele)
    path = quote("/Microsoft Teams Chat Files/salaries.pdf")
    status, raw = await _graph_as(hub, "megan", "PUT", f"/me/drive/root:{path}:/content", data=PDF)
    assert status == 201, raw
    url = json.loads(raw)["webUrl"]
    mark = adele.user.mark()
    attachment = {"id": "s1", "contentType": "reference", "contentUrl": url, "name": "salaries.pdf"}
    await hub.graph.post_as(
        "alex", chat, '<attachment id="s1"></attachment>', attachments=[attachment]
    )
    notice = await adele.user.wait_for(
        lambda e: e["content"].get("msgtype") == "m.notice", room_id=room_id, timeout=45, after=mark
    )
    assert "not in the sender's own OneDrive" in notice["content"]["body"]
    assert hub.graph.requests(f"/v1.0/shares/{_share_id(url)}/driveItem/content") == []
    assert not adele.user.seen(lambda e: e["content"].get("msgtype") == "m.file", room_id=room_id)


async def test_every_graph_answer_of_these_tests_validates_against_the_openapi_description(
    hub: Hub, adele: Teams, recording: Recording
) -> None:
    spec = _slice()
    described = [ex for ex in recording.exchanges if _described(spec, ex)]
    assert {ex["path"].split("/")[1] for ex in described} >= {"me", "drives", "shares", "chats"}
    assert all(ex["body"] for ex in described if ex["method"] == "GET")  # bodies were kept
    results = check(spec, {"exchanges": described, "notifications": []})
    failures = [f"{label}: {'; '.join(problems[:4])}" for label, problems in results if problems]
    assert not failures, "\n".join(failures)


def _slice() -> dict[str, Any]:
    return dict(json.loads(Path(SLICE).read_text()))


def _described(spec: dict[str, Any], exchange: dict[str, Any]) -> bool:
    """Whether Graph's description has the operation (the emulator serves a few it has not:
    ``/me/chats/…``, hostedContents lists); those are checked by tests/teams_emulator."""
    for path, item in spec["paths"].items():
        parts = re.split(r"(\{[^}]*\})", path.replace("()", ""))
        regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        if exchange["method"].lower() in item and re.fullmatch(regex, exchange["path"]):
            return True
    return False
