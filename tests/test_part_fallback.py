"""A file part that cannot reach Matrix for good is shown by its fallback (a notice with the
file's link), not lost with the rest of its message (bridge.core.part_content)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.errors import NotFound, PermanentError
from bridge.core.events import Media, MessagePart
from bridge.core.part_content import part_content


class Homeserver:
    async def upload_for_room(self, *args: Any) -> dict[str, Any]:
        raise PermanentError("homeserver refused with 413 M_TOO_LARGE")


async def test_a_file_over_the_upload_limit_is_shown_by_its_fallback() -> None:
    media = Media(mimetype="application/pdf", filename="big.pdf", data=b"%PDF")
    link = MessagePart(text="📎 big.pdf was not copied: https://contoso/big.pdf", notice=True)
    part = MessagePart(media=media, fallback=link)
    content = await part_content(Homeserver(), "@ghost:hub", "!room:hub", part)  # type: ignore[arg-type]
    assert content["msgtype"] == "m.notice" and "https://contoso/big.pdf" in content["body"]
    assert "url" not in content


async def test_without_a_fallback_the_refusal_stands() -> None:
    part = MessagePart(media=Media(filename="big.pdf", data=b"x"))
    with pytest.raises(PermanentError):
        await part_content(Homeserver(), "@ghost:hub", "!room:hub", part)  # type: ignore[arg-type]


async def test_a_file_gone_before_its_download_is_shown_by_its_fallback() -> None:
    """Deleted on the network between the message and its download: NotFound, not a loss."""

    async def gone() -> bytes:
        raise NotFound("the file was deleted in SharePoint")

    link = MessagePart(text="📎 old.pdf was not copied: https://contoso/old.pdf", notice=True)
    part = MessagePart(media=Media(filename="old.pdf", fetch=gone), fallback=link)
    content = await part_content(Homeserver(), "@ghost:hub", "!room:hub", part)  # type: ignore[arg-type]
    assert content["msgtype"] == "m.notice" and "https://contoso/old.pdf" in content["body"]
