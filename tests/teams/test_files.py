"""Files in Teams chats both ways (bridge.teams.files), against the Graph emulator through the
unmodified msgraph-sdk. Megan Bowen plays the relay account; Alex and Adele are colleagues."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, TypeVar
from unittest.mock import AsyncMock, MagicMock

import httpx
import pytest
from msgraph import GraphServiceClient
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment

from bridge.core import Media, NotSupported
from bridge.teams.config import DELEGATED_SCOPES, TeamsConfig
from bridge.teams.errors import graph_call
from bridge.teams.files import FilesToMatrix, safe_name, share_id, share_to_chat
from bridge.teams.protocol.graph import graph_client
from bridge.teams.protocol.oauth import OAuthTokenProvider
from bridge.teams.tenant import TenantLink
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

T = TypeVar("T")
LIMIT = 25 * 1024 * 1024
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _link(emu: Emulator) -> TenantLink:
    section = {
        "tenants": [
            {
                "tenant_id": emu.tenant_id,
                "client_id": emu.app["clientId"],
                "client_secret": emu.app["clientSecret"],
                "relay_username": emu.user("megan")["userPrincipalName"],
                "relay_password": "megan-pw",
            }
        ],
        "graph_url": emu.graph_url,
        "authority": emu.authority,
        "ca_file": emu.ca_file,
        "webhook": {"public_url": "http://127.0.0.1:1"},
    }
    cfg = TeamsConfig.from_section(section)
    store = MagicMock()
    store.kv_get = AsyncMock(return_value=None)
    store.kv_set = AsyncMock()
    store.sealed_get = AsyncMock(return_value=None)
    store.sealed_set = AsyncMock()
    link = TenantLink(cfg, cfg.tenants[0], emu.session, store, logging.getLogger("test.files"))
    emu._http.extend(link._httpx)
    return link


def _user_graph(emu: Emulator, first_name: str) -> GraphServiceClient:
    """A Teams user's own client, with the scopes the bridge asks a login for."""
    user = emu.user(first_name)
    provider = OAuthTokenProvider.password(
        emu.session, emu.base, emu.tenant_id, emu.app["clientId"], user["userPrincipalName"],
        f"{first_name}-pw", DELEGATED_SCOPES, allowed_hosts=["127.0.0.1"],
    )  # fmt: skip
    http = httpx.AsyncClient()
    emu._http.append(http)
    return graph_client(emu.graph_url, provider, http)


async def _call(what: str, call: Awaitable[T]) -> T:
    return await graph_call(what, call, delegated=True)


async def _chat(emu: Emulator, *names: str) -> str:
    members = [emu.user(n)["id"] for n in names]
    chat = await emu.control("POST", "/chats", {"chatType": "group", "members": members})
    return str(chat["id"])


async def _open(emu: Emulator, first_name: str, url: str) -> tuple[int, bytes]:
    """What ``first_name`` gets when they open the file at ``url`` (their own token)."""
    token = await emu.control(
        "POST", "/tokens", {"clientId": emu.app["clientId"], "user": emu.user(first_name)["id"]}
    )
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    path = f"{emu.graph_url}/shares/{share_id(url)}/driveItem/content"
    async with emu.http.get(path, headers=headers) as response:
        return response.status, await response.read()


def _pdf(name: str = "report.pdf", data: bytes = PDF) -> Media:
    return Media(mimetype="application/pdf", filename=name, data=data)


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("C:\\Users\\x\\a.pdf", "C__Users_x_a.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a right-to-left override
        ("  \n\t ", "file.pdf"),
        ("...", "file.pdf"),
        ("a\x00b.pdf", "ab.pdf"),
    ],
)
def test_a_file_name_cannot_name_a_path_or_hide_its_extension(given: str, expected: str) -> None:
    assert safe_name(given, "application/pdf") == expected


def test_a_long_name_keeps_its_extension() -> None:
    name = safe_name("x" * 500 + ".pdf")
    assert len(name) <= 120 and name.endswith(".pdf")


# --- Matrix → Teams -----------------------------------------------------------------------


async def test_a_pdf_from_matrix_opens_for_the_chats_members_only(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    placeholder, attachment = await share_to_chat(link.relay, _call, chat, _pdf(), LIMIT)
    assert attachment.content_type == "reference" and attachment.name == "report.pdf"
    assert placeholder == f'<attachment id="{attachment.id}"></attachment>'
    assert attachment.content_url is not None
    assert "/Microsoft%20Teams%20Chat%20Files/report.pdf" in attachment.content_url
    # Alex, in the chat, opens it; Adele, who is not, cannot.
    assert await _open(emulator, "alex", attachment.content_url) == (200, PDF)
    assert (await _open(emulator, "adele", attachment.content_url))[0] == 403


async def test_the_shared_file_travels_in_a_message_teams_accepts(emulator: Emulator) -> None:  # noqa: F811
    from bridge.teams.from_matrix import chat_message

    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    file = await share_to_chat(link.relay, _call, chat, _pdf(), LIMIT)
    sent = await link.relay.chats.by_chat_id(chat).messages.post(chat_message("", file=file))
    assert sent is not None and sent.id
    got = await link.app.chats.by_chat_id(chat).messages.by_chat_message_id(sent.id).get()
    assert got is not None and got.attachments
    (seen,) = got.attachments
    assert (seen.content_type, seen.name, seen.content_url) == (
        "reference", "report.pdf", file[1].content_url,
    )  # fmt: skip
    assert f'<attachment id="{seen.id}">' in (got.body.content if got.body else "")


async def test_a_second_file_of_the_same_name_does_not_replace_the_first(
    emulator: Emulator,  # noqa: F811
) -> None:
    link = _link(emulator)
    assert link.relay is not None
    first_chat = await _chat(emulator, "megan", "alex")
    other_chat = await _chat(emulator, "megan", "adele")
    _, first = await share_to_chat(link.relay, _call, first_chat, _pdf(), LIMIT)
    _, second = await share_to_chat(link.relay, _call, other_chat, _pdf(data=PDF + b"2"), LIMIT)
    assert second.name == "report (2).pdf"
    assert first.content_url is not None and second.content_url is not None
    assert await _open(emulator, "alex", first.content_url) == (200, PDF)
    assert (await _open(emulator, "alex", second.content_url))[0] == 403


async def test_a_hostile_file_name_is_uploaded_under_a_safe_one(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    _, attachment = await share_to_chat(
        link.relay, _call, chat, _pdf("../../x\u202efdp.exe"), LIMIT
    )
    assert attachment.name == "_.._xfdp.exe"
    state = emulator.services.state
    names = [i.name for d in state.drives.values() for i in d.items.values() if not i.folder]
    assert names == ["_.._xfdp.exe"]


async def test_a_file_over_max_file_mb_is_refused_before_uploading(
    emulator: Emulator,  # noqa: F811
) -> None:
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    big = _pdf(data=b"%PDF" + b"0" * (2 * 1024 * 1024))
    with pytest.raises(NotSupported) as refused:
        await share_to_chat(link.relay, _call, chat, big, 2 * 1024 * 1024)
    assert "larger than 2 MB" in refused.value.user_message
    assert emulator.requests("/v1.0/drives/*", "PUT") == []
    assert emulator.requests("/v1.0/drives/*/createUploadSession") == []


async def test_a_file_over_4_mb_goes_up_in_chunks_of_an_upload_session(
    emulator: Emulator,  # noqa: F811
) -> None:
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    data = b"%PDF" + bytes(range(256)) * (9 * 4096)  # 9 MiB and 4 bytes: three chunks
    _, attachment = await share_to_chat(link.relay, _call, chat, _pdf("big.pdf", data), LIMIT)
    assert attachment.content_url is not None
    assert await _open(emulator, "alex", attachment.content_url) == (200, data)
    assert len(emulator.requests("/v1.0/drives/*/createUploadSession", "POST")) == 1
    assert [r["status"] for r in emulator.requests("/_upload/*", "PUT")] == [202, 202, 201]
    assert emulator.requests("/v1.0/drives/*/content", "PUT") == []


async def test_an_upload_session_refuses_chunks_out_of_order(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    assert link.relay is not None
    drive = await link.relay.me.drive.get()
    assert drive is not None and drive.id
    item = link.relay.drives.by_drive_id(drive.id).items.by_drive_item_id("root:/x.pdf:")
    from msgraph.generated.drives.item.items.item.create_upload_session.create_upload_session_post_request_body import (
        CreateUploadSessionPostRequestBody,
    )

    session = await item.create_upload_session.post(CreateUploadSessionPostRequestBody())
    assert session is not None and session.upload_url
    headers = {"Content-Range": "bytes 10-19/30"}
    async with emulator.http.put(session.upload_url, data=b"0" * 10, headers=headers) as r:
        assert r.status == 416
    async with emulator.http.put(session.upload_url + "x", data=b"0", headers=headers) as r:
        assert r.status == 404


# --- Teams → Matrix -----------------------------------------------------------------------


async def _shared_by_alex(emu: Emulator, chat: str, name: str = "plan.pdf") -> Any:
    """Alex shares a file in ``chat`` from his Teams client; the message as Graph has it."""
    alex = _user_graph(emu, "alex")
    placeholder, attachment = await share_to_chat(alex, _call, chat, _pdf(name), LIMIT)
    return await _message_with(emu, chat, placeholder, attachment)


async def _message_with(
    emu: Emulator, chat: str, placeholder: str, attachment: ChatMessageAttachment
) -> ChatMessage:
    raw = {
        "id": attachment.id,
        "contentType": "reference",
        "contentUrl": attachment.content_url,
        "name": attachment.name,
    }
    posted = await emu.post_as("alex", chat, f"<p>the plan</p>{placeholder}", attachments=[raw])
    app = emu.app_client()
    got = await app.chats.by_chat_id(chat).messages.by_chat_message_id(posted["id"]).get()
    assert got is not None
    return got


def _alex(emu: Emulator) -> str:
    return str(emu.user("alex")["id"])


async def test_a_teams_file_arrives_as_its_content(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    chat = await _chat(emulator, "megan", "alex", "adele")
    msg = await _shared_by_alex(emulator, chat)
    (part,) = await FilesToMatrix(25 * 1024 * 1024).parts(link, msg, _alex(emulator))
    assert part.media is not None and not part.notice
    assert (part.media.filename, part.media.mimetype) == ("plan.pdf", "application/pdf")
    assert await part.media.read() == PDF


async def test_a_link_outside_the_tenants_sharepoint_is_not_looked_up(
    emulator: Emulator,  # noqa: F811
) -> None:
    link = _link(emulator)
    chat = await _chat(emulator, "megan", "alex")
    for url in (
        "https://evil.example/phish.pdf",
        "http://contoso-my.sharepoint.com/personal/x/a.pdf",
        "https://contoso-my.sharepoint.com.evil.example/a.pdf",
        "https://user@contoso-my.sharepoint.com/a.pdf",
        "https://169.254.169.254/latest/meta-data",
    ):
        attachment = ChatMessageAttachment(
            id="x", content_type="reference", content_url=url, name="a.pdf"
        )
        msg = await _message_with(emulator, chat, "", attachment)
        (part,) = await FilesToMatrix(1 << 20).parts(link, msg, _alex(emulator))
        assert part.notice and part.media is None
        assert (
            "not stored in this Teams organisation's own SharePoint" in part.text
            and url in part.text
        )
    assert emulator.requests("/v1.0/shares/*") == []


async def test_a_file_over_the_limit_arrives_as_a_notice_with_its_link(
    emulator: Emulator,  # noqa: F811
) -> None:
    link = _link(emulator)
    chat = await _chat(emulator, "megan", "alex")
    msg = await _shared_by_alex(emulator, chat)
    (part,) = await FilesToMatrix(10).parts(link, msg, _alex(emulator))
    assert part.notice and part.media is None
    assert "more than the 0 MB" in part.text
    assert msg.attachments[0].content_url in part.text
    assert emulator.requests("/v1.0/shares/*/driveItem/content") == []


async def test_a_file_the_app_may_not_read_arrives_as_a_notice(emulator: Emulator) -> None:  # noqa: F811
    app = emulator.services.state.apps[emulator.app["clientId"]]
    app.application_permissions.discard("Files.Read.All")
    link = _link(emulator)
    chat = await _chat(emulator, "megan", "alex")
    msg = await _shared_by_alex(emulator, chat)
    (part,) = await FilesToMatrix(1 << 20).parts(link, msg, _alex(emulator))
    assert part.notice and part.media is None
    assert "Files.Read.All" in part.text
    assert emulator.requests("/v1.0/shares/*/driveItem/content") == []


async def test_a_deleted_or_unknown_file_arrives_as_a_notice(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    chat = await _chat(emulator, "megan", "alex")
    msg = await _shared_by_alex(emulator, chat)
    assert msg.attachments and msg.attachments[0].content_url
    msg.attachments[0].content_url += "x"  # the tenant's host, no such file
    (part,) = await FilesToMatrix(1 << 20).parts(link, msg, _alex(emulator))
    assert part.notice and "may not read it" in part.text


async def test_a_link_to_someone_elses_file_does_not_bring_it_to_matrix(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: the app may read every file of the tenant; Alex links a file of Adele's that
    was never shared with him (or the chat). It arrives as a notice, its content unread."""
    link = _link(emulator)
    private_chat = await _chat(emulator, "adele", "megan")
    adele = _user_graph(emulator, "adele")
    _, private = await share_to_chat(adele, _call, private_chat, _pdf("salaries.pdf"), LIMIT)
    chat = await _chat(emulator, "megan", "alex")
    msg = await _message_with(
        emulator, chat, f'<attachment id="{private.id}"></attachment>', private
    )
    (part,) = await FilesToMatrix(1 << 20).parts(link, msg, _alex(emulator))
    assert part.notice and part.media is None
    assert "not in the sender's own OneDrive" in part.text
    assert emulator.requests("/v1.0/shares/*/driveItem/content") == []


async def test_an_account_without_files_consent_is_told_what_to_ask_for(
    emulator: Emulator,  # noqa: F811
) -> None:
    from bridge.core import PermanentError
    from bridge.teams.files import REFUSED

    chat = await _chat(emulator, "alex", "megan")
    no_files = emulator.user_client("alex")  # a login from before files: no Files.ReadWrite
    with pytest.raises(PermanentError) as refused:
        await share_to_chat(no_files, _call, chat, _pdf(), LIMIT)
    assert refused.value.user_message == REFUSED
    assert emulator.services.state.drives == {} or not any(
        d.items for d in emulator.services.state.drives.values()
    )
