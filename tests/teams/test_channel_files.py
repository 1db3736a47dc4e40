"""Files in team channels both ways (bridge.teams.channel_files), against the Graph emulator
through the unmodified msgraph-sdk. Adele and Alex are in the team; Megan (the relay account
of these tests) is not."""

from __future__ import annotations

from typing import Any

import pytest
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment

from bridge.core import Media, NotSupported, PermanentError
from bridge.teams.channel_files import REFUSED, ChannelFiles, share_to_channel
from bridge.teams.files import share_to_chat
from tests.teams.test_files import LIMIT, PDF, _call, _link, _open, _pdf, _user_graph
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)


async def _team(emu: Emulator, *names: str) -> tuple[str, str]:
    """A new team of these people: (team id, General channel id)."""
    members = [emu.user(n)["id"] for n in names]
    team = await emu.control("POST", "/teams", {"displayName": "Plans", "members": members})
    return str(team["id"]), str(team["channels"][0]["id"])


def _with(*attachments: ChatMessageAttachment) -> ChatMessage:
    return ChatMessage(attachments=list(attachments))


def _id(emu: Emulator, first_name: str) -> str:
    return str(emu.user(first_name)["id"])


# --- Matrix → channel --------------------------------------------------------------------


async def test_a_file_lands_in_the_channel_folder_and_the_team_opens_it(
    emulator: Emulator,  # noqa: F811
) -> None:
    team, channel = await _team(emulator, "adele", "alex")
    adele = _user_graph(emulator, "adele")
    placeholder, attachment = await share_to_channel(adele, _call, team, channel, _pdf(), LIMIT)
    assert attachment.content_type == "reference" and attachment.name == "report.pdf"
    assert placeholder == f'<attachment id="{attachment.id}"></attachment>'
    url = attachment.content_url
    assert url is not None and "/sites/Plans/Shared%20Documents/General/report.pdf" in url
    # The team reads its library without any sharing link; Megan, not in the team, cannot.
    assert await _open(emulator, "alex", url) == (200, PDF)
    assert (await _open(emulator, "megan", url))[0] == 403
    assert emulator.requests("/v1.0/drives/*/createLink") == []


async def test_a_name_with_path_separators_stays_in_the_channel_folder(
    emulator: Emulator,  # noqa: F811
) -> None:
    team, channel = await _team(emulator, "adele", "alex")
    adele = _user_graph(emulator, "adele")
    evil = _pdf("../../Other channel/..\\evil.pdf")
    _, attachment = await share_to_channel(adele, _call, team, channel, evil, LIMIT)
    assert attachment.name == "_.._Other channel_.._evil.pdf"
    assert attachment.content_url is not None
    assert attachment.content_url.endswith("/General/_.._Other%20channel_.._evil.pdf")


async def test_a_second_file_of_the_same_name_does_not_replace_the_first(
    emulator: Emulator,  # noqa: F811
) -> None:
    team, channel = await _team(emulator, "adele", "alex")
    adele = _user_graph(emulator, "adele")
    _, first = await share_to_channel(adele, _call, team, channel, _pdf(), LIMIT)
    _, second = await share_to_channel(adele, _call, team, channel, _pdf(data=PDF + b"2"), LIMIT)
    assert second.name == "report (2).pdf"
    assert first.content_url and second.content_url
    assert await _open(emulator, "alex", first.content_url) == (200, PDF)
    assert await _open(emulator, "alex", second.content_url) == (200, PDF + b"2")


async def test_a_file_over_4_mb_goes_up_through_an_upload_session(
    emulator: Emulator,  # noqa: F811
) -> None:
    team, channel = await _team(emulator, "adele", "alex")
    adele = _user_graph(emulator, "adele")
    data = b"%PDF" + bytes(range(256)) * (5 * 4096)
    _, attachment = await share_to_channel(
        adele, _call, team, channel, _pdf("scan.pdf", data), LIMIT
    )
    assert attachment.content_url is not None
    assert await _open(emulator, "alex", attachment.content_url) == (200, data)
    assert emulator.requests("/v1.0/drives/*/createUploadSession", "POST")


async def test_a_huge_file_is_refused_before_anything_is_uploaded(
    emulator: Emulator,  # noqa: F811
) -> None:
    team, channel = await _team(emulator, "adele", "alex")
    adele = _user_graph(emulator, "adele")
    huge = Media(mimetype="application/zip", filename="dump.zip", data=b"x" * (2 * 1024 * 1024))
    with pytest.raises(NotSupported) as refused:
        await share_to_channel(adele, _call, team, channel, huge, 1024 * 1024)
    assert "larger than 1 MB" in str(refused.value.user_message)
    assert emulator.requests("/v1.0/teams/*/filesFolder") == []
    assert emulator.requests("/v1.0/drives/*") == []


async def test_someone_outside_the_team_cannot_put_a_file_in_its_channel(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: Megan (the relay here) is not in the team: Graph refuses her the folder, and
    she is told what to do."""
    link = _link(emulator)
    assert link.relay is not None
    team, channel = await _team(emulator, "adele", "alex")
    with pytest.raises(PermanentError) as refused:
        await share_to_channel(link.relay, _call, team, channel, _pdf(), LIMIT)
    assert refused.value.user_message == REFUSED
    assert emulator.requests("/v1.0/drives/*/content", "PUT") == []


async def test_a_login_without_the_files_all_scope_is_told_what_to_ask_for(
    emulator: Emulator,  # noqa: F811
) -> None:
    team, channel = await _team(emulator, "adele", "alex")
    old_login = emulator.user_client("alex")  # a login from before channel files
    with pytest.raises(PermanentError) as refused:
        await share_to_channel(old_login, _call, team, channel, _pdf(), LIMIT)
    assert refused.value.user_message == REFUSED


# --- channel → Matrix --------------------------------------------------------------------


async def _in_channel(emu: Emulator, team: str, channel: str, name: str, data: bytes) -> str:
    """Alex, in Teams, puts a file in the channel's folder: its URL."""
    alex = _user_graph(emu, "alex")
    _, attachment = await share_to_channel(alex, _call, team, channel, _pdf(name, data), LIMIT)
    assert attachment.content_url is not None
    return attachment.content_url


def _reference(url: str, name: str = "a.pdf") -> ChatMessageAttachment:
    return ChatMessageAttachment(id="x", content_type="reference", content_url=url, name=name)


async def test_a_file_of_the_channel_arrives_as_its_content(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    team, channel = await _team(emulator, "adele", "alex")
    url = await _in_channel(emulator, team, channel, "plan.pdf", PDF)
    files = ChannelFiles(LIMIT)
    (part,) = await files.parts(
        link, (team, channel), _with(_reference(url)), _id(emulator, "alex")
    )
    assert part.media is not None and not part.notice
    assert (part.media.filename, part.media.mimetype) == ("plan.pdf", "application/pdf")
    assert await part.media.read() == PDF
    # The library is looked up once per channel.
    await files.parts(link, (team, channel), _with(_reference(url)), _id(emulator, "alex"))
    assert len(emulator.requests("/v1.0/teams/*/filesFolder")) == 2  # one upload, one lookup


async def test_a_file_of_another_team_does_not_reach_matrix(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: the app reads every library of the tenant. Alex links, in a channel of his
    team, a file of a team he and the channel's readers are not in: a notice, never the file."""
    link = _link(emulator)
    team, channel = await _team(emulator, "adele", "alex")
    secret_team, secret_channel = await _team(emulator, "megan")
    megan = _user_graph(emulator, "megan")
    _, secret = await share_to_channel(
        megan, _call, secret_team, secret_channel, _pdf("salaries.pdf"), LIMIT
    )
    assert secret.content_url is not None
    msg = _with(_reference(secret.content_url, "salaries.pdf"))
    (part,) = await ChannelFiles(LIMIT).parts(link, (team, channel), msg, _id(emulator, "alex"))
    assert part.notice and part.media is None
    assert "not in this channel's files" in part.text and secret.content_url in part.text
    assert emulator.requests("/v1.0/shares/*/driveItem/content") == []


async def test_a_file_in_someones_onedrive_does_not_reach_matrix(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    team, channel = await _team(emulator, "adele", "alex")
    chat = await emulator.control(
        "POST",
        "/chats",
        {"chatType": "group", "members": [_id(emulator, n) for n in ("adele", "megan")]},
    )
    adele = _user_graph(emulator, "adele")
    _, own = await share_to_chat(adele, _call, str(chat["id"]), _pdf("cv.pdf"), LIMIT)
    assert own.content_url is not None
    msg = _with(_reference(own.content_url, "cv.pdf"))
    (part,) = await ChannelFiles(LIMIT).parts(link, (team, channel), msg, _id(emulator, "alex"))
    assert part.notice and "not in this channel's files" in part.text
    assert emulator.requests("/v1.0/shares/*/driveItem/content") == []


async def test_a_link_to_another_host_is_never_looked_up(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    team, channel = await _team(emulator, "adele", "alex")
    for url in (
        "https://fabrikam.sharepoint.com/sites/Plans/Shared%20Documents/General/a.pdf",
        "https://contoso.sharepoint.com.evil.example/sites/x/a.pdf",
        "https://169.254.169.254/latest/meta-data",
    ):
        msg = _with(_reference(url))
        (part,) = await ChannelFiles(LIMIT).parts(link, (team, channel), msg, _id(emulator, "alex"))
        assert part.notice and "own SharePoint" in part.text and url in part.text
    assert emulator.requests("/v1.0/shares/*") == []


async def test_a_channel_file_over_the_limit_arrives_as_a_notice(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    team, channel = await _team(emulator, "adele", "alex")
    url = await _in_channel(emulator, team, channel, "big.pdf", PDF * 100)
    msg = _with(_reference(url, "big.pdf"))
    (part,) = await ChannelFiles(len(PDF)).parts(link, (team, channel), msg, _id(emulator, "alex"))
    assert part.notice and part.media is None and "more than the 0 MB" in part.text
    assert emulator.requests("/v1.0/shares/*/driveItem/content") == []


async def test_a_file_of_another_channel_of_the_same_team_does_not_reach_matrix(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: both channels' folders are in the team's one library. A file of the team's
    "Board" channel linked in General (whose room may hold other people) is a notice."""
    link = _link(emulator)
    team, general = await _team(emulator, "adele", "alex")
    board = await emulator.control("POST", f"/teams/{team}/channels", {"displayName": "Board"})
    url = await _in_channel(emulator, team, str(board["id"]), "minutes.pdf", PDF)
    msg = _with(_reference(url, "minutes.pdf"))
    (part,) = await ChannelFiles(LIMIT).parts(link, (team, general), msg, _id(emulator, "alex"))
    assert part.notice and part.media is None
    assert "not in this channel's files" in part.text
    # The same file linked in its own channel arrives.
    (part,) = await ChannelFiles(LIMIT).parts(
        link, (team, str(board["id"])), msg, _id(emulator, "alex")
    )
    assert part.media is not None and await part.media.read() == PDF


def test_a_folder_whose_name_starts_like_the_channels_is_not_its() -> None:
    from msgraph.generated.models.drive_item import DriveItem
    from msgraph.generated.models.item_reference import ItemReference

    from bridge.teams.files import in_folder

    def item(path: str) -> DriveItem:
        return DriveItem(parent_reference=ItemReference(path=path))

    assert in_folder(item("/drives/b!x/root:/General"), "General")
    assert in_folder(item("/drive/root:/general/Sub%20Folder"), "General")
    assert not in_folder(item("/drive/root:/General%20Stuff"), "General")
    assert not in_folder(item("/drive/root:"), "General")
    assert not in_folder(DriveItem(), "General")


async def test_a_retried_send_posts_the_file_uploaded_before_not_a_copy(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile outage: the upload worked, posting the message failed; the core retries the
    same Matrix event. The channel folder must not fill with copies."""
    team, channel = await _team(emulator, "adele", "alex")
    alex = _user_graph(emulator, "alex")

    class KV(dict[str, str]):
        async def kv_get(self, key: str) -> str | None:
            return self.get(key)

        async def kv_set(self, key: str, value: str) -> None:
            self[key] = value

    kv = KV()
    _, first = await share_to_channel(alex, _call, team, channel, _pdf(), LIMIT, kv, "$ev1")
    _, again = await share_to_channel(alex, _call, team, channel, _pdf(), LIMIT, kv, "$ev1")
    assert first.content_url == again.content_url
    assert len(emulator.requests("/v1.0/drives/*/content", "PUT")) == 1


async def test_a_huge_picture_is_refused_by_its_size_before_it_is_downloaded() -> None:
    """Hostile: a Matrix picture of 2 GB (``info.size``) sent to a channel is refused at once,
    not read into memory to learn it is too big."""
    from types import SimpleNamespace

    from bridge.core import MatrixMessage, PortalKey, RemoteChatID
    from bridge.teams.channels import send_to_channel
    from bridge.teams.ids import NETWORK

    async def never() -> bytes:
        raise AssertionError("the picture was downloaded")

    picture = Media(mimetype="image/png", filename="a.png", size=2 * 1024**3, fetch=never)
    portal = PortalKey(NETWORK, RemoteChatID("channel:7c1f0000-0000-0000-0000-000000000001:19:a"))
    msg = MatrixMessage(
        portal=portal, sender="@anna:hub", sender_name="Anna", timestamp=0, event_id="$e",
        body="", media=picture,
    )  # fmt: skip
    net: Any = SimpleNamespace(cfg=SimpleNamespace(max_file_mb=1))
    with pytest.raises(NotSupported):
        await send_to_channel(net, None, False, msg, _call)  # type: ignore[arg-type]
