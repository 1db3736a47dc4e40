"""A small Matrix client for end-to-end tests: plain client-server API calls over aiohttp.

Every :class:`MatrixUser` has its own HTTP session and, after ``start_sync()``, a background
``/sync`` loop that records every timeline event (``events``), ephemeral event (``ephemeral``)
and invite (``invites``) it sees, so tests can wait for something to arrive *or* assert that
it never did (``seen``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

SYNC_FILTER = json.dumps(
    # No event is filtered out; the limit only keeps bursts of events from being cut into
    # "limited" timelines, which would silently drop events between two syncs.
    {"room": {"timeline": {"limit": 500}}, "presence": {"types": []}}
)


def _q(value: str) -> str:
    return quote(value, safe="")


class MatrixRequestError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"{method} {path} -> {status}: {body}")


class MatrixUser:
    """A logged-in Matrix user: ``MatrixUser(mxid, access_token, homeserver_base_url)``."""

    def __init__(self, mxid: str, token: str, base_url: str) -> None:
        self.mxid = mxid
        self.token = token
        self.base_url = base_url.rstrip("/")
        self.events: list[Event] = []
        self.ephemeral: list[Event] = []
        self.invites: list[tuple[str, list[Event]]] = []
        self._invites_taken: set[int] = set()
        self.next_batch: str | None = None
        self.sync_error: BaseException | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._changed: asyncio.Condition | None = None
        self._txn = itertools.count()
        self._txn_prefix = uuid.uuid4().hex[:8]

    def __repr__(self) -> str:
        return f"MatrixUser({self.mxid!r})"

    @property
    def localpart(self) -> str:
        return self.mxid[1:].split(":", 1)[0]

    # -- HTTP ---------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        return self._session

    def txn_id(self) -> str:
        return f"{self._txn_prefix}-{next(self._txn)}"

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Call the homeserver; ``path`` is relative to the base URL, e.g.
        ``/_matrix/client/v3/account/whoami``. Raises :class:`MatrixRequestError` on non-2xx."""
        url = self.base_url + path
        for _ in range(10):
            async with self._http().request(
                method,
                url,
                json=body if data is None else None,
                data=data,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                try:
                    result = json.loads(raw) if raw else {}
                except ValueError:
                    result = raw.decode(errors="replace")
                if resp.status == 429 and isinstance(result, dict):
                    await asyncio.sleep(result.get("retry_after_ms", 200) / 1000)
                    continue
                if resp.status >= 300:
                    raise MatrixRequestError(method, path, resp.status, result)
                return result
        raise MatrixRequestError(method, path, 429, result)

    async def _client(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return await self.request(method, "/_matrix/client/v3" + path, body, **kw)

    # -- rooms --------------------------------------------------------------------------------

    async def create_room(
        self,
        invite: list[str] | None = None,
        is_direct: bool = False,
        name: str | None = None,
        *,
        preset: str | None = None,
        **extra: Any,
    ) -> str:
        body: dict[str, Any] = {
            "invite": list(invite or []),
            "is_direct": is_direct,
            "preset": preset or ("trusted_private_chat" if is_direct else "private_chat"),
            **extra,
        }
        if name is not None:
            body["name"] = name
        result = await self._client("POST", "/createRoom", body)
        return str(result["room_id"])

    async def join(self, room_id_or_alias: str) -> str:
        result = await self._client("POST", f"/join/{_q(room_id_or_alias)}", {})
        return str(result["room_id"])

    async def leave(self, room_id: str) -> None:
        await self._client("POST", f"/rooms/{_q(room_id)}/leave", {})

    async def invite(self, room_id: str, user_id: str) -> None:
        await self._client("POST", f"/rooms/{_q(room_id)}/invite", {"user_id": user_id})

    async def kick(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        body = {"user_id": user_id} | ({"reason": reason} if reason else {})
        await self._client("POST", f"/rooms/{_q(room_id)}/kick", body)

    # -- sending ------------------------------------------------------------------------------

    async def send_event(self, room_id: str, type: str, content: dict[str, Any]) -> str:
        path = f"/rooms/{_q(room_id)}/send/{_q(type)}/{self.txn_id()}"
        result = await self._client("PUT", path, content)
        return str(result["event_id"])

    async def send_state(
        self, room_id: str, type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        path = f"/rooms/{_q(room_id)}/state/{_q(type)}/{_q(state_key)}"
        result = await self._client("PUT", path, content)
        return str(result["event_id"])

    async def send_text(
        self,
        room_id: str,
        body: str,
        *,
        html: str | None = None,
        reply_to: str | None = None,
        thread_root: str | None = None,
        msgtype: str = "m.text",
    ) -> str:
        content: dict[str, Any] = {"msgtype": msgtype, "body": body}
        if html is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = html
        if thread_root is not None:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread_root,
                "is_falling_back": reply_to is None,
                "m.in_reply_to": {"event_id": reply_to or thread_root},
            }
        elif reply_to is not None:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await self.send_event(room_id, "m.room.message", content)

    async def edit(self, room_id: str, event_id: str, new_body: str) -> str:
        content = {
            "msgtype": "m.text",
            "body": f"* {new_body}",
            "m.new_content": {"msgtype": "m.text", "body": new_body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
        }
        return await self.send_event(room_id, "m.room.message", content)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send_event(room_id, "m.reaction", content)

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> str:
        path = f"/rooms/{_q(room_id)}/redact/{_q(event_id)}/{self.txn_id()}"
        result = await self._client("PUT", path, {"reason": reason} if reason else {})
        return str(result["event_id"])

    async def typing(self, room_id: str, typing: bool, timeout_ms: int = 30000) -> None:
        body: dict[str, Any] = {"typing": typing}
        if typing:
            body["timeout"] = timeout_ms
        await self._client("PUT", f"/rooms/{_q(room_id)}/typing/{_q(self.mxid)}", body)

    async def read_receipt(self, room_id: str, event_id: str) -> None:
        await self._client("POST", f"/rooms/{_q(room_id)}/receipt/m.read/{_q(event_id)}", {})

    async def set_displayname(self, displayname: str) -> None:
        path = f"/profile/{_q(self.mxid)}/displayname"
        await self._client("PUT", path, {"displayname": displayname})

    # -- media --------------------------------------------------------------------------------

    async def upload(
        self, data: bytes, content_type: str = "application/octet-stream", filename: str = "file"
    ) -> str:
        result = await self.request(
            "POST",
            "/_matrix/media/v3/upload",
            data=data,
            params={"filename": filename},
            headers={"Content-Type": content_type},
        )
        return str(result["content_uri"])

    async def download(self, mxc: str) -> bytes:
        if not mxc.startswith("mxc://"):
            raise ValueError(f"not an mxc URI: {mxc!r}")
        server, media_id = mxc[len("mxc://") :].split("/", 1)
        url = f"{self.base_url}/_matrix/client/v1/media/download/{_q(server)}/{_q(media_id)}"
        async with self._http().get(url) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise MatrixRequestError("GET", url, resp.status, data[:500])
            return data

    # -- reading ------------------------------------------------------------------------------

    async def get_state(self, room_id: str, type: str, state_key: str = "") -> dict[str, Any]:
        path = f"/rooms/{_q(room_id)}/state/{_q(type)}/{_q(state_key)}"
        return dict(await self._client("GET", path))

    async def get_full_state(self, room_id: str) -> list[Event]:
        return list(await self._client("GET", f"/rooms/{_q(room_id)}/state"))

    async def joined_members(self, room_id: str) -> dict[str, dict[str, Any]]:
        result = await self._client("GET", f"/rooms/{_q(room_id)}/joined_members")
        return dict(result["joined"])

    async def joined_rooms(self) -> list[str]:
        return list((await self._client("GET", "/joined_rooms"))["joined_rooms"])

    async def get_profile(self, mxid: str) -> dict[str, Any]:
        return dict(await self._client("GET", f"/profile/{_q(mxid)}"))

    async def get_event(self, room_id: str, event_id: str) -> Event:
        return dict(await self._client("GET", f"/rooms/{_q(room_id)}/event/{_q(event_id)}"))

    async def whoami(self) -> dict[str, Any]:
        return dict(await self._client("GET", "/account/whoami"))

    async def upload_device_keys(self) -> None:
        """Publish keys for this login's device, as any client that sets up encryption does
        (the keys are random: nobody encrypts to them here)."""
        device = (await self.whoami())["device_id"]
        mine = await self._client("POST", "/keys/query", {"device_keys": {self.mxid: [device]}})
        if mine.get("device_keys", {}).get(self.mxid, {}).get(device):
            return
        keys = {
            f"{algorithm}:{device}": base64.b64encode(os.urandom(32)).decode().rstrip("=")
            for algorithm in ("curve25519", "ed25519")
        }
        await self._client("POST", "/keys/upload", {"device_keys": {
            "user_id": self.mxid, "device_id": device, "keys": keys,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "signatures": {self.mxid: {f"ed25519:{device}": "unchecked"}},
        }})  # fmt: skip

    # -- sync ---------------------------------------------------------------------------------

    async def start_sync(self) -> None:
        """Do a first ``/sync`` (recording what it returns) and keep syncing in the background."""
        if self._sync_task is not None:
            return
        self._changed = asyncio.Condition()
        await self._sync_once(timeout_ms=0)
        self._sync_task = asyncio.create_task(self._sync_loop(), name=f"sync {self.mxid}")

    async def _sync_once(self, timeout_ms: int) -> None:
        params = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if self.next_batch is not None:
            params["since"] = self.next_batch
        result = await self._client("GET", "/sync", params=params, timeout=timeout_ms / 1000 + 30)
        self._absorb(result)
        self.next_batch = result["next_batch"]
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _absorb(self, sync: dict[str, Any]) -> None:
        rooms = sync.get("rooms", {})
        for section in ("join", "leave"):
            for room_id, room in rooms.get(section, {}).items():
                for event in room.get("timeline", {}).get("events", []):
                    self.events.append({**event, "room_id": room_id})
                for event in room.get("ephemeral", {}).get("events", []):
                    self.ephemeral.append({**event, "room_id": room_id})
        for room_id, room in rooms.get("invite", {}).items():
            state = room.get("invite_state", {}).get("events", [])
            self.invites.append((room_id, state))

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self._sync_once(timeout_ms=1000)
                self.sync_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.sync_error = e
                await asyncio.sleep(0.5)

    async def _wait(
        self, check: Callable[[], Any], timeout: float, describe: Callable[[], str]
    ) -> Any:
        if self._changed is None:
            raise RuntimeError(f"{self.mxid}: call start_sync() before waiting for events")
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                found = check()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = f"\nlast sync error: {self.sync_error!r}" if self.sync_error else ""
                    raise AssertionError(f"{self.mxid}: {describe()}{error}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    @staticmethod
    def _format(events: list[Event]) -> str:
        lines = []
        for e in events:
            content = json.dumps(e.get("content", {}), ensure_ascii=False)
            if len(content) > 300:
                content = content[:300] + "…"
            key = f" [{e['state_key']}]" if "state_key" in e else ""
            lines.append(
                f"  {e.get('room_id')} {e.get('type')}{key} from {e.get('sender')}: {content}"
            )
        return "\n".join(lines) or "  (none)"

    def mark(self) -> int:
        """Position in ``events`` now; pass it as ``after=`` to wait only for newer events."""
        return len(self.events)

    def seen(self, predicate: Predicate, room_id: str | None = None) -> list[Event]:
        """Every timeline event seen so far that matches (optionally only in ``room_id``)."""
        return [
            e for e in self.events if (room_id is None or e["room_id"] == room_id) and predicate(e)
        ]

    async def wait_for(
        self,
        predicate: Predicate,
        timeout: float = 15.0,
        room_id: str | None = None,
        *,
        after: int = 0,
    ) -> Event:
        """The first timeline event (since the client started syncing, or since ``after``)
        that matches; raises AssertionError listing the last events seen on timeout."""

        def check() -> Event | None:
            for e in self.events[after:]:
                if (room_id is None or e["room_id"] == room_id) and predicate(e):
                    return e
            return None

        def describe() -> str:
            where = f" in {room_id}" if room_id else ""
            recent = [e for e in self.events if room_id is None or e["room_id"] == room_id]
            return (
                f"no matching timeline event{where} within {timeout} s; "
                f"last {min(10, len(recent))} of {len(recent)} seen:\n" + self._format(recent[-10:])
            )

        return dict(await self._wait(check, timeout, describe))

    async def wait_for_ephemeral(
        self, predicate: Predicate, timeout: float = 15.0, room_id: str | None = None
    ) -> Event:
        """The first ephemeral event (m.typing, m.receipt) that matches."""

        def check() -> Event | None:
            for e in self.ephemeral:
                if (room_id is None or e["room_id"] == room_id) and predicate(e):
                    return e
            return None

        def describe() -> str:
            return (
                f"no matching ephemeral event within {timeout} s; last 10 seen:\n"
                + self._format(self.ephemeral[-10:])
            )

        return dict(await self._wait(check, timeout, describe))

    async def wait_for_invite(self, timeout: float = 15.0, *, inviter: str | None = None) -> str:
        """The room id of the next invite not yet returned by this method (oldest first),
        optionally only invites sent by ``inviter``."""

        def invited_by(state: list[Event]) -> str | None:
            for e in state:
                if e.get("type") == "m.room.member" and e.get("state_key") == self.mxid:
                    return e.get("sender")
            return None

        def check() -> str | None:
            for i, (room_id, state) in enumerate(self.invites):
                if i not in self._invites_taken and (
                    inviter is None or invited_by(state) == inviter
                ):
                    self._invites_taken.add(i)
                    return room_id
            return None

        def describe() -> str:
            rooms = [(r, invited_by(s)) for r, s in self.invites]
            return f"no new invite within {timeout} s; all invites seen: {rooms}"

        return str(await self._wait(check, timeout, describe))

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
            self._sync_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
