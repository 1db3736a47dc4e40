"""Teams profile photos as ghost avatars: ``GET /users/{id}/photo`` names the photo (its
``@odata.mediaEtag`` changes with the picture) and ``/photo/$value`` is the picture.

The picture is downloaded only when its etag differs from the one the ghost's avatar came
from, and each person is looked at once per ``recheck`` seconds at most (a message is no
reason to ask Graph again). A person Graph says has no photo (404) loses the avatar their
ghost has, once. A photo Graph cannot give now (429, 5xx, unreachable: the next recheck asks
again) or at all (403: the app lacks ``ProfilePhoto.Read.All`` / ``User.ReadBasic.All``), one
larger than ``max_bytes`` or one that is not a JPEG, PNG, GIF or WebP picture leaves the
avatar as it is: an avatar is never worth failing a message for.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from msgraph import GraphServiceClient

from bridge.core import Media, NotFound, RemoteUserID, UserInfo
from bridge.portal import NetworkStore
from bridge.teams.errors import graph_call
from bridge.teams.to_matrix import ghost_name

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

    async def profile(self, person: RemoteUserID, name: str | None) -> UserInfo:
        """``name`` and the person's photo as a partial update: a new avatar, the avatar
        removed (Graph says the photo is gone and the ghost still has one), or neither."""
        avatar, removed = await self._look(person)
        return UserInfo(name=name, avatar=avatar, avatar_removed=removed)

    async def sender(self, person: RemoteUserID, name: str | None, agency: str) -> UserInfo | None:
        """A message sender's ghost profile: their name with their agency's, and their photo;
        None for a sender Graph gave no name (their ghost keeps what it has)."""
        return await self.profile(person, ghost_name(name, agency)) if name else None

    async def changed(self, person: RemoteUserID) -> Media | None:
        """The person's photo as a new avatar, or ``None`` when it is unchanged, was looked
        at recently, is gone or cannot be used."""
        return (await self._look(person))[0]

    async def _look(self, person: RemoteUserID) -> tuple[Media | None, bool]:
        """(the new avatar, whether the ghost's avatar is to be removed)."""
        now = self._clock()
        last = self._checked.get(person)
        if last is not None and now - last < self._recheck:
            return None, False
        self._checked[person] = now
        self._checked.move_to_end(person)
        while len(self._checked) > CACHE:
            self._checked.popitem(last=False)
        user = self._app.users.by_user_id(person)
        try:
            meta = await graph_call(f"read the photo of {person}", user.photo.get(), reading=True)
        except NotFound:
            return None, await self._removed(person)
        except Exception as err:  # Graph away or refusing: the ghost keeps its avatar
            self._log.info("Could not read the Teams photo of %s: %s", person, err)
            return None, False
        extra = (meta.additional_data or {}) if meta is not None else {}
        etag = str(extra.get("@odata.mediaEtag") or (meta.id if meta is not None else "") or "")
        if not etag:
            return None, False
        avatar_id = f"teams-photo:{etag}"
        ghost = await self._store.get_ghost(person)
        if ghost is not None and ghost.avatar_id == avatar_id:
            return None, False
        try:
            data = await graph_call(
                f"download the photo of {person}", user.photo.content.get(), reading=True
            )
        except NotFound:  # removed between the two calls
            return None, await self._removed(person)
        except Exception as err:
            self._log.info("Could not download the Teams photo of %s: %s", person, err)
            return None, False
        if not data or len(data) > self._max:
            self._log.warning(
                "Teams photo of %s refused: %d bytes (limit %d)",
                person,
                len(data or b""),
                self._max,
            )
            return None, False
        kind = picture_type(data)
        if kind is None:
            self._log.warning("Teams photo of %s refused: not a JPEG/PNG/GIF/WebP picture", person)
            return None, False
        mimetype, ext = kind
        media = Media(
            mimetype=mimetype,
            filename=f"avatar.{ext}",
            size=len(data),
            data=data,
            avatar_id=avatar_id,
        )
        return media, False

    async def _removed(self, person: RemoteUserID) -> bool:
        """Whether a 404 for the photo removes the ghost's avatar: the ghost has one, and this
        tenant knows the person (a 404 for someone of another tenant says nothing of them)."""
        ghost = await self._store.get_ghost(person)
        if ghost is None or not (ghost.avatar_mxc or ghost.avatar_id):
            return False
        user = self._app.users.by_user_id(person)
        try:
            await graph_call(f"read user {person}", user.get(), reading=True)
        except Exception as err:
            self._log.debug("Keeping the avatar of %s: %s", person, err)
            return False
        self._log.info("The Teams photo of %s is gone; removing their ghost's avatar", person)
        return True
