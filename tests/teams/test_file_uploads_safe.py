"""Hostile: files from Matrix never replace another chat's file, a retry posts the same file
rather than a copy, and a file's announced size is refused before anything is downloaded
(bridge.teams.files), against the Graph emulator through the unmodified msgraph-sdk."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from bridge.core import Media, NotFound, NotSupported, PermanentError
from bridge.teams.files import FilesToMatrix, share_to_chat
from tests.teams.test_files import (
    LIMIT,
    PDF,
    _alex,
    _call,
    _chat,
    _link,
    _open,
    _pdf,
    _shared_by_alex,
)
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

T = TypeVar("T")


class _KV:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def kv_get(self, key: str) -> str | None:
        return self.values.get(key)

    async def kv_set(self, key: str, value: str) -> None:
        self.values[key] = value


def _racing(emu: Emulator, link: Any, data: bytes) -> Any:
    """A call that, right after the bridge found a name free, lets another upload take it
    (the relay's other chat sharing a file of the same name at that moment)."""
    raced: list[str] = []

    async def call(what: str, coro: Awaitable[T]) -> T:
        try:
            return await _call(what, coro)
        except NotFound:
            if what == "look for a file" and not raced:
                raced.append(what)
                drive = await link.relay.me.drive.get()
                path = "root:/Microsoft Teams Chat Files/report.pdf:"
                await (
                    link.relay.drives.by_drive_id(drive.id)
                    .items.by_drive_item_id(path)
                    .content.put(data)
                )
            raise

    return call


@pytest.mark.parametrize("size", [len(PDF), 5 * 1024 * 1024])  # simple upload, upload session
async def test_a_name_taken_between_the_look_and_the_upload_is_not_replaced(
    emulator: Emulator,  # noqa: F811
    size: int,
) -> None:
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    other = b"%PDF other chat's file"
    data = PDF + b"0" * (size - len(PDF))
    call = _racing(emulator, link, other)
    _, attachment = await share_to_chat(link.relay, call, chat, _pdf(data=data), LIMIT * 2)
    assert attachment.name != "report.pdf" and attachment.name and "report (" in attachment.name
    state = emulator.services.state
    files = {i.name: i.content for d in state.drives.values() for i in d.items.values()}
    assert files["report.pdf"] == other  # the other chat's file is as it was
    assert attachment.content_url is not None
    assert await _open(emulator, "alex", attachment.content_url) == (200, data)


async def test_a_retry_after_the_post_failed_reuses_the_upload(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    kv = _KV()
    first = await share_to_chat(link.relay, _call, chat, _pdf(), LIMIT, kv, "$event")
    again = await share_to_chat(link.relay, _call, chat, _pdf(), LIMIT, kv, "$event")
    assert (again[1].content_url, again[1].name) == (first[1].content_url, first[1].name)
    state = emulator.services.state
    names = [i.name for d in state.drives.values() for i in d.items.values() if not i.folder]
    assert names == ["report.pdf"]
    other = await share_to_chat(link.relay, _call, chat, _pdf(), LIMIT, kv, "$other")
    assert other[1].name == "report (2).pdf"  # another event is another file


async def test_a_file_announced_over_the_limit_is_not_downloaded(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: a Matrix event says its file has 5 GB: nothing is downloaded or uploaded."""
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")

    async def never() -> bytes:
        raise AssertionError("downloaded")

    huge = Media(mimetype="application/pdf", filename="huge.pdf", size=5 * 2**30, fetch=never)
    with pytest.raises(NotSupported):
        await share_to_chat(link.relay, _call, chat, huge, LIMIT)
    assert emulator.requests("/v1.0/drives/*", "PUT") == []


async def test_the_emulator_refuses_a_taken_name_when_asked_to(emulator: Emulator) -> None:  # noqa: F811
    link = _link(emulator)
    assert link.relay is not None
    chat = await _chat(emulator, "megan", "alex")
    await share_to_chat(link.relay, _call, chat, _pdf(), LIMIT)
    drive = await link.relay.me.drive.get()
    assert drive is not None and drive.id
    path = "root:/Microsoft Teams Chat Files/report.pdf:"
    builder = link.relay.drives.by_drive_id(drive.id).items.by_drive_item_id(path).content
    info = builder.to_put_request_information(b"x")
    info.url = f"{info.url}?@microsoft.graph.conflictBehavior=fail"
    with pytest.raises(PermanentError, match="409"):
        await _call("upload", link.relay.request_adapter.send_async(info, type(drive), {}))


async def test_a_teams_file_replaced_by_a_bigger_one_is_not_read_past_the_limit(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: the file is small when its message is read, and many times the limit when it
    is downloaded: the download stops at the limit and the room gets the link instead."""
    link = _link(emulator)
    chat = await _chat(emulator, "megan", "alex")
    msg = await _shared_by_alex(emulator, chat)
    files = FilesToMatrix(64 * 1024, emulator.session)
    (part,) = await files.parts(link, msg, _alex(emulator))
    assert part.media is not None and part.fallback is not None
    state = emulator.services.state
    [item] = [i for d in state.drives.values() for i in d.items.values() if i.name == "plan.pdf"]
    item.content = b"%PDF" + b"0" * (1024 * 1024)
    with pytest.raises(PermanentError, match="max_file_mb"):
        await part.media.read()
    assert part.fallback.notice and msg.attachments[0].content_url in part.fallback.text


async def test_a_teams_file_streams_in_when_it_is_within_the_limit(
    emulator: Emulator,  # noqa: F811
) -> None:
    link = _link(emulator)
    chat = await _chat(emulator, "megan", "alex")
    msg = await _shared_by_alex(emulator, chat)
    (part,) = await FilesToMatrix(LIMIT, emulator.session).parts(link, msg, _alex(emulator))
    assert part.media is not None and await part.media.read() == PDF
