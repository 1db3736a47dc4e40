"""Files in team channels both ways, through a real Synapse, the bridge as a process and the
Graph emulator (the team's SharePoint library, ``filesFolder``, ``/shares``) reached by the
unmodified msgraph-sdk.

A file sent in a bridged channel's room lands in the channel's folder of its team's library
and is attached to the channel message (or thread reply): the team reads it, outsiders do not.
A file of the channel arrives in Matrix as its content; a file anywhere else (another team's
library, another organisation's host) arrives as a notice with its link and is never read.
Every Graph answer of each test is validated against the OpenAPI slice (the autouse fixture of
test_teams_channels).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.test_teams import Teams, ghost
from tests.e2e.test_teams_channels import (  # noqa: F401 (adele, spec, graph_answers_are_valid: fixtures)
    _body,
    adele,
    bridged_channel,
    graph_answers_are_valid,
    new_team,
    post_in_channel,
    spec,
    until_teams_shows,
)
from tests.e2e.test_teams_files import PDF, _graph_as, _reference, _send_file, _share_id

pytestmark = pytest.mark.e2e


async def _put_in_channel(
    hub: Hub, first_name: str, team: str, channel: str, name: str, data: bytes
) -> dict[str, Any]:
    """``first_name``, in Teams, puts a file in the channel's folder: its driveItem."""
    status, raw = await _graph_as(
        hub, first_name, "GET", f"/teams/{team}/channels/{channel}/filesFolder"
    )
    assert status == 200, raw
    folder = json.loads(raw)
    key = quote(f"{folder['id']}:/{name}:", safe="")
    drive = folder["parentReference"]["driveId"]
    status, raw = await _graph_as(
        hub, first_name, "PUT", f"/drives/{drive}/items/{key}/content", data=data
    )
    assert status == 201, raw
    return dict(json.loads(raw))


async def _post_file(hub: Hub, team: str, channel: str, url: str, name: str, **extra: Any) -> str:
    """Alex posts a channel message carrying the file at ``url``."""
    attachment = {"id": "f1", "contentType": "reference", "contentUrl": url, "name": name}
    return await post_in_channel(
        hub, "alex", team, channel, '<p>See attached</p><attachment id="f1"></attachment>',
        attachments=[attachment], **extra,
    )  # fmt: skip


def _is(msgtype: str) -> Any:
    return lambda e: e["content"].get("msgtype") == msgtype


async def test_a_file_from_matrix_lands_in_the_channel_folder_and_the_team_opens_it(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    links = len(hub.graph.requests("/v1.0/drives/*/createLink"))
    await _send_file(adele.user, room_id, "minutes.pdf", PDF, "application/pdf")
    messages = f"/teams/{team}/channels/{channel}/messages"
    message = await until_teams_shows(hub, messages, _reference, "the file")
    attachment = _reference(message)
    assert attachment is not None and attachment["name"] == "minutes.pdf"
    assert message["from"]["user"]["id"] == hub.graph.user("adele")["id"]
    assert f'<attachment id="{attachment["id"]}"></attachment>' in message["body"]["content"]
    assert "/Shared%20Documents/General/minutes.pdf" in attachment["contentUrl"]
    # Alex, in the team, opens it; Nestor, not in it, may not. No sharing link was made.
    shared = f"/shares/{_share_id(attachment['contentUrl'])}/driveItem/content"
    assert await _graph_as(hub, "alex", "GET", shared) == (200, PDF)
    assert (await _graph_as(hub, "nestor", "GET", shared))[0] == 403
    assert len(hub.graph.requests("/v1.0/drives/*/createLink")) == links


async def test_a_relayed_file_in_a_thread_keeps_its_name_inside_the_channel_folder(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    """Hostile name (a path out of the folder) from a Matrix user without a login: it goes
    up as the relay account, into the channel's folder, as a reply in the thread."""
    team, channel, room_id = await bridged_channel(hub, adele)
    root = await post_in_channel(hub, "alex", team, channel, "<p>Send the draft</p>")
    root_event = await adele.user.wait_for(lambda e: _body(e) == "Send the draft", room_id=room_id, timeout=30)  # fmt: skip
    bob = await hub.user("bob")
    await adele.user.invite(room_id, bob.mxid)
    await bob.join(room_id)
    mxc = await bob.upload(PDF, "application/pdf", "draft.pdf")
    await bob.send_event(room_id, "m.room.message", {
        "msgtype": "m.file", "body": "../../Finance/../draft.pdf", "url": mxc,
        "filename": "../../Finance/../draft.pdf",
        "info": {"mimetype": "application/pdf", "size": len(PDF)},
        "m.relates_to": {"rel_type": "m.thread", "event_id": root_event["event_id"]},
    })  # fmt: skip
    replies = f"/teams/{team}/channels/{channel}/messages/{root}/replies"
    reply = await until_teams_shows(hub, replies, _reference, "the file in the thread")
    attachment = _reference(reply)
    assert attachment is not None
    assert reply["from"]["user"]["displayName"] == "Pontis Relay"
    assert bob.mxid in reply["body"]["content"]
    assert attachment["name"] == "_.._Finance_.._draft.pdf"
    assert attachment["contentUrl"].endswith("/General/_.._Finance_.._draft.pdf")
    shared = f"/shares/{_share_id(attachment['contentUrl'])}/driveItem/content"
    assert await _graph_as(hub, "alex", "GET", shared) == (200, PDF)


async def test_a_file_of_the_channel_arrives_in_matrix_as_its_content(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    item = await _put_in_channel(hub, "alex", team, channel, "budget.pdf", PDF)
    mark = adele.user.mark()
    root = await _post_file(hub, team, channel, item["webUrl"], "budget.pdf")
    event = await adele.user.wait_for(_is("m.file"), room_id=room_id, timeout=45, after=mark)
    assert event["sender"] == ghost(hub, "alex")
    content = event["content"]
    assert content["body"] == "budget.pdf"
    assert content["info"] == {"mimetype": "application/pdf", "size": len(PDF)}
    assert await adele.user.download(content["url"]) == PDF
    # A file in a reply arrives in the thread.
    reply_item = await _put_in_channel(hub, "alex", team, channel, "notes.pdf", PDF + b"%")
    mark = adele.user.mark()
    await _post_file(hub, team, channel, reply_item["webUrl"], "notes.pdf", replyToId=root)
    reply = await adele.user.wait_for(
        lambda e: e["content"].get("body") == "notes.pdf", room_id=room_id, timeout=45, after=mark
    )
    assert reply["content"]["m.relates_to"]["rel_type"] == "m.thread"
    assert await adele.user.download(reply["content"]["url"]) == PDF + b"%"


async def test_a_file_of_another_team_or_organisation_arrives_as_a_notice_unread(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    """Hostile: the app may read every library of the tenant. Alex links, in the bridged
    channel, a file of a team neither he nor Adele is in, then a file on another
    organisation's SharePoint: notices with the links; neither file is read."""
    team, channel, room_id = await bridged_channel(hub, adele)
    secret_team, secret_channel = await new_team(hub, "megan")
    secret = await _put_in_channel(hub, "megan", secret_team, secret_channel, "pay.pdf", PDF)
    mark = adele.user.mark()
    await _post_file(hub, team, channel, secret["webUrl"], "pay.pdf")
    notice = await adele.user.wait_for(_is("m.notice"), room_id=room_id, timeout=45, after=mark)
    assert notice["sender"] == ghost(hub, "alex")
    assert "pay.pdf was not copied to Matrix: it is not in this channel's files" in _body(notice)
    assert secret["webUrl"] in _body(notice)
    assert hub.graph.requests(f"/v1.0/shares/{_share_id(secret['webUrl'])}/driveItem/content") == []  # fmt: skip

    foreign = "https://fabrikam.sharepoint.com/sites/Ops/Shared%20Documents/General/plan.pdf"
    mark = adele.user.mark()
    await _post_file(hub, team, channel, foreign, "plan.pdf")
    notice = await adele.user.wait_for(_is("m.notice"), room_id=room_id, timeout=45, after=mark)
    assert "not stored in this Teams organisation's own SharePoint" in _body(notice)
    assert hub.graph.requests(f"/v1.0/shares/{_share_id(foreign)}*") == []
    assert not adele.user.seen(_is("m.file"), room_id=room_id)


async def test_a_channel_file_over_the_limit_arrives_as_a_notice_undownloaded(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    huge = b"\0" * (26 * 1024 * 1024)  # over max_file_mb (25)
    item = await _put_in_channel(hub, "alex", team, channel, "backup.zip", huge)
    mark = adele.user.mark()
    await _post_file(hub, team, channel, item["webUrl"], "backup.zip")
    notice = await adele.user.wait_for(_is("m.notice"), room_id=room_id, timeout=45, after=mark)
    assert "more than the 25 MB" in _body(notice) and item["webUrl"] in _body(notice)
    assert hub.graph.requests(f"/v1.0/shares/{_share_id(item['webUrl'])}/driveItem/content") == []  # fmt: skip
