"""Images a remote message shows inside its text (:attr:`MessagePart.inline`): uploaded and put
in place in the formatted body, or, in an encrypted room, sent as encrypted file events after
the text, which then names them (an image in a formatted body would be an unencrypted upload).
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bridge.core.events import INLINE_URL, Media, MessagePart
from bridge.core.ids import PartID

_PLACEHOLDER = re.compile(re.escape(INLINE_URL) + r"""([^"'\s<>]+)(?=["'])""")
"""An inline image's placeholder URL up to its closing quote: a plain replace of ``…/image1``
would also hit ``…/image10``."""


async def place_inline(
    html: str, images: dict[str, Media], upload: Callable[[Media], Awaitable[str]]
) -> str:
    """``html`` with each placeholder of ``images`` replaced by its uploaded ``mxc://`` URL;
    each image is uploaded once, however often it is shown, and only if it is shown."""
    uploaded: dict[str, str] = {}
    for match in _PLACEHOLDER.finditer(html):
        key = match.group(1)
        if (image := images.get(key)) is not None and key not in uploaded:
            uploaded[key] = await upload(image)
    return _PLACEHOLDER.sub(lambda m: uploaded.get(m.group(1), m.group(0)), html)


def inline_as_files(parts: list[MessagePart]) -> list[MessagePart]:
    """``parts`` with each inline image as a file part after its text, which names it."""
    expanded = []
    for part in parts:
        html = part.html or ""
        for key, image in part.inline.items():
            html = re.sub(rf'<img[^>]*{re.escape(INLINE_URL + key)}["\'][^>]*>',
                          f"[{htmllib.escape(image.filename)}]", html)  # fmt: skip
        expanded.append(replace(part, html=html if part.html is not None else None, inline={}))
        expanded += [
            MessagePart(part_id=PartID(f"{part.part_id or 'text'}.{key}"), media=image)
            for key, image in part.inline.items()
        ]
    return expanded
