"""Teams profile photos as ghost avatars: ``GET /users/{id}/photo`` names the photo (its
``@odata.mediaEtag`` changes with the picture) and ``/photo/$value`` is the picture.

The picture is downloaded only when its etag differs from the one the ghost's avatar came
from, and each person is looked at once per ``recheck`` seconds at most (a message is no
reason to ask Graph again). A person without a photo (404), a photo Graph cannot give (403:
the app lacks ``ProfilePhoto.Read.All`` / ``User.ReadBasic.All``), one larger than
``max_bytes`` or one that is not a JPEG, PNG, GIF or WebP picture leaves the avatar as it is:
an avatar is never worth failing a message for.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from msgraph import GraphServiceClient

from bridge.core import Media, RemoteUserID
from bridge.portal import NetworkStore
from bridge.teams.errors import graph_call

MAX_BYTES = 2 * 1024 * 1024
RECHECK = 3600.0
CACHE = 10_000

_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
)


def picture_type(data: bytes) -> tuple[str, str] | None:
    """(MIME type, file extension) of a picture, read from its first bytes, not from what
    the server claims; ``None`` for anything else."""
    for magic, mimetype, ext in _MAGIC:
        if data.startswith(magic):
            return mimetype, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


class Photos:
    """One tenant's photos, read with its app token."""

    def __init__(
        self,
        app: GraphServiceClient,
        store: NetworkStore,
        log: logging.Logger,
        *,
        max_bytes: int = MAX_BYTES,
        recheck: float = RECHECK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self._store = store
        self._log = log
        self._max = max_bytes
        self._recheck = recheck
        self._clock = clock
        self._checked: OrderedDict[str, float] = OrderedDict()

    async def changed(self, person: RemoteUserID) -> Media | None:
        """The person's photo as a new avatar, or ``None`` when it is unchanged, was looked
        at recently, or cannot be used (the ghost keeps what it has)."""
        now = self._clock()
        last = self._checked.get(person)
        if last is not None and now - last < self._recheck:
            return None
        self._checked[person] = now
        self._checked.move_to_end(person)
        while len(self._checked) > CACHE:
            self._checked.popitem(last=False)
        user = self._app.users.by_user_id(person)
        try:
            meta = await graph_call(f"read the photo of {person}", user.photo.get(), reading=True)
        except Exception as err:  # 404: no photo; anything else: try at the next recheck
            self._log.debug("No Teams photo for %s: %s", person, err)
            return None
        extra = (meta.additional_data or {}) if meta is not None else {}
        etag = str(extra.get("@odata.mediaEtag") or (meta.id if meta is not None else "") or "")
        if not etag:
            return None
        avatar_id = f"teams-photo:{etag}"
        ghost = await self._store.get_ghost(person)
        if ghost is not None and ghost.avatar_id == avatar_id:
            return None
        try:
            data = await graph_call(
                f"download the photo of {person}", user.photo.content.get(), reading=True
            )
        except Exception as err:
            self._log.info("Could not download the Teams photo of %s: %s", person, err)
            return None
        if not data or len(data) > self._max:
            self._log.warning(
                "Teams photo of %s refused: %d bytes (limit %d)",
                person,
                len(data or b""),
                self._max,
            )
            return None
        kind = picture_type(data)
        if kind is None:
            self._log.warning("Teams photo of %s refused: not a JPEG/PNG/GIF/WebP picture", person)
            return None
        mimetype, ext = kind
        return Media(
            mimetype=mimetype,
            filename=f"avatar.{ext}",
            size=len(data),
            data=data,
            avatar_id=avatar_id,
        )
