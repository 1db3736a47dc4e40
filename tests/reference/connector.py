"""The reference connector: the smallest complete implementation of the connector contract.

It doubles as the tutorial for connector authors and as the fixture for the core's end-to-end
tests. Its network is :mod:`tests.reference.remote`, run by the test itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

import aiohttp

from bridge.core import (
    Capabilities,
    ChatInfo,
    ConnectorContext,
    LoginFlow,
    LoginID,
    LoginStep,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixReactionRemove,
    MatrixReceipt,
    MatrixRedaction,
    MatrixTyping,
    Media,
    MessagePart,
    NetworkID,
    NetworkInfo,
    NotFound,
    PermanentError,
    PortalKey,
    RemoteChatID,
    RemoteEdit,
    RemoteEvent,
    RemoteKick,
    RemoteMessage,
    RemoteMessageID,
    RemoteReaction,
    RemoteReactionRemove,
    RemoteReceipt,
    RemoteRedaction,
    RemoteTyping,
    RemoteUserID,
    TransientError,
    UserInfo,
)
from bridge.portal.models import Login, RemoteInput

NETWORK = NetworkID("reference")

EXAMPLE_CONFIG = """\
enabled: false
# Base URL of the reference network's server.
url: http://127.0.0.1:8999
"""


class ReferenceConnector:
    info = NetworkInfo(id=NETWORK, display_name="Reference network")
    example_config = EXAMPLE_CONFIG

    def __init__(self) -> None:
        self._ctx: ConnectorContext | None = None
        self._shared: ReferenceClient | None = None

    def capabilities(self) -> Capabilities:
        return Capabilities(replies=True, threads=True, media=True, html=True)

    async def start(self, ctx: ConnectorContext) -> None:
        self._ctx = ctx
        self._shared = ReferenceClient(ctx, LoginID(""), listen=True)
        ctx.add_client(self._shared)
        ctx.background(self._shared.connect(), name="shared-client")

    async def stop(self) -> None:
        if self._shared is not None:
            await self._shared.disconnect()

    def login_flows(self) -> list[LoginFlow]:
        return [LoginFlow(id="name", name="User name", description="Log in with a user name")]

    async def start_login(self, user_mxid: str, flow_id: str) -> NameLogin:
        return NameLogin(user_mxid)

    async def load_login(self, login: Login) -> ReferenceClient:
        assert self._ctx is not None
        return ReferenceClient(self._ctx, login.login_id, listen=False)


class NameLogin:
    def __init__(self, user_mxid: str) -> None:
        self._user = user_mxid

    async def submit(self, answer: str | None) -> LoginStep:
        if answer is None:
            return LoginStep(
                kind="user_input", instructions="Send your reference network user name."
            )
        login = Login(
            network=NETWORK,
            login_id=LoginID(f"user:{answer}"),
            user_mxid=self._user,
            remote_name=answer,
        )
        return LoginStep(
            kind="complete",
            instructions=f"Logged in to the reference network as {answer}.",
            login=login,
        )

    async def cancel(self) -> None:
        return None


class ReferenceClient:
    def __init__(self, ctx: ConnectorContext, login_id: LoginID, *, listen: bool) -> None:
        self.login_id = login_id
        self._ctx = ctx
        self._listen = listen
        self._url = str(ctx.config["url"]).rstrip("/")
        self._stopped = asyncio.Event()

    # --- connection ------------------------------------------------------------------------------

    async def connect(self) -> None:
        if not self._listen:
            self._ctx.set_client_state(self.login_id, connected=True)
            return
        delay = 0.2
        while not self._stopped.is_set():
            try:
                async with self._ctx.http.ws_connect(f"{self._url}/stream", heartbeat=5) as ws:
                    self._ctx.set_client_state(self.login_id, connected=True)
                    delay = 0.2
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await self._received(msg.json())
            except (aiohttp.ClientError, OSError) as err:
                self._ctx.set_client_state(self.login_id, connected=False, message=str(err))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
            delay = min(delay * 2, 5)

    async def disconnect(self) -> None:
        self._stopped.set()

    async def _received(self, data: dict[str, Any]) -> None:
        """Typing and receipts are fleeting: straight to the portal. Everything else is kept
        durably first (the network could be acknowledged after this) and converted later."""
        if data.get("kind") in ("typing", "read"):
            await self._ctx.queue_remote_event(self._to_event(data))
            return
        dedupe = (
            f"{data.get('kind')}:{data.get('id') or data.get('target')}:{data.get('emoji', '')}"
        )
        await self._ctx.accept_remote(
            RemoteInput(
                portal=PortalKey(NETWORK, RemoteChatID(data["chat"])), kind="event",
                payload=data, dedupe_id=dedupe if data.get("kind") == "message" else None,
            )
        )  # fmt: skip

    async def convert_remote(self, item: RemoteInput) -> list[RemoteEvent]:
        return [self._to_event(item.payload)]

    def _to_event(self, data: dict[str, Any]) -> RemoteEvent:
        common: dict[str, Any] = {
            "portal": PortalKey(NETWORK, RemoteChatID(data["chat"])),
            "sender": RemoteUserID(data["sender"]) if data.get("sender") else None,
            "timestamp": data.get("ts"),
        }
        kind = data["kind"]
        if kind == "message":
            media = None
            if "media" in data:
                raw = base64.b64decode(data["media"]["data"])
                media = Media(
                    data=raw, mimetype=data["media"]["mimetype"], filename=data["media"]["filename"]
                )
            part = MessagePart(text=data.get("text", ""), html=data.get("html"), media=media)
            return RemoteMessage(
                **common,
                id=RemoteMessageID(data["id"]),
                parts=[part],
                reply_to=data.get("reply_to"),
                thread_root=data.get("thread_root"),
            )
        if kind == "edit":
            part = MessagePart(text=data["text"], html=data.get("html"))
            return RemoteEdit(**common, target=RemoteMessageID(data["target"]), parts=[part])
        if kind == "redact":
            return RemoteRedaction(**common, target=RemoteMessageID(data["target"]))
        if kind == "react":
            return RemoteReaction(
                **common, target=RemoteMessageID(data["target"]), emoji=data["emoji"]
            )
        if kind == "unreact":
            return RemoteReactionRemove(
                **common, target=RemoteMessageID(data["target"]), emoji=data["emoji"]
            )
        if kind == "typing":
            return RemoteTyping(**common, typing=bool(data.get("typing", True)))
        if kind == "read":
            return RemoteReceipt(**common, up_to=RemoteMessageID(data["up_to"]))
        if kind == "kick":  # a Matrix user's own account removed from the chat
            return RemoteKick(
                portal=common["portal"], target=RemoteUserID(data["target"]),
                reason=data.get("reason", ""), matrix_user=data.get("matrix_user", ""),
            )  # fmt: skip
        raise ValueError(f"unknown reference event kind {kind!r}")

    # --- lookups -------------------------------------------------------------------------------

    async def _get(self, path: str) -> dict[str, Any]:
        async with self._ctx.http.get(f"{self._url}{path}") as resp:
            if resp.status == 404:
                raise NotFound(f"{path} not found on the reference network")
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        chat = await self._get(f"/chats/{portal.remote_id}")
        return ChatInfo(
            name=chat.get("name"),
            topic=chat.get("topic"),
            is_direct=chat.get("is_direct", False),
            matrix_users=chat.get("matrix_users"),
            members=chat.get("members"),
        )

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        profile = await self._get(f"/users/{user}")
        return UserInfo(name=profile.get("name"))

    async def start_direct_chat(self, user: RemoteUserID, matrix_user: str) -> PortalKey:
        await self.get_user_info(user)  # raises NotFound for people who do not exist
        return PortalKey(NETWORK, RemoteChatID(f"dm:{user}"), LoginID(matrix_user))

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        key = PortalKey(NETWORK, RemoteChatID(remote_id))
        return key, await self.get_chat_info(key)

    # --- Matrix → network ----------------------------------------------------------------------

    async def _post(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._ctx.http.post(f"{self._url}/actions/{kind}", json=body) as resp:
                if resp.status >= 500:
                    raise TransientError(f"reference network answered {resp.status}")
                if resp.status >= 400:
                    reason = (await resp.json()).get("error", "")
                    raise PermanentError(
                        f"reference network refused {kind}: {reason}",
                        user_message=f"The reference network refused it: {reason}.",
                    )
                result: dict[str, Any] = await resp.json()
                return result
        except aiohttp.ClientConnectionError as err:
            raise TransientError(f"reference network unreachable: {err}") from err

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        body: dict[str, Any] = {
            "chat": msg.portal.remote_id,
            "sender": msg.sender,
            "sender_name": msg.sender_name,
            "body": msg.body,
            "html": msg.html,
            "idempotency_key": msg.event_id,
            "reply_to": msg.reply_to.remote_id if msg.reply_to else None,
            "thread_root": msg.thread_root.remote_id if msg.thread_root else None,
            "login": self.login_id,
        }
        if msg.media is not None:
            data = await msg.media.read()
            body["media"] = {
                "data": base64.b64encode(data).decode(),
                "mimetype": msg.media.mimetype,
                "filename": msg.media.filename,
            }
        result = await self._post("send", body)
        return RemoteMessageID(result["id"])

    async def handle_matrix_edit(self, edit: MatrixEdit) -> None:
        await self._post(
            "edit",
            {
                "chat": edit.portal.remote_id,
                "target": edit.target.remote_id,
                "body": edit.body,
                "sender": edit.sender,
            },
        )

    async def handle_matrix_redaction(self, redaction: MatrixRedaction) -> None:
        await self._post(
            "redact",
            {
                "chat": redaction.portal.remote_id,
                "target": redaction.target.remote_id,
                "sender": redaction.sender,
            },
        )

    async def handle_matrix_reaction(self, reaction: MatrixReaction) -> None:
        await self._post(
            "react",
            {
                "chat": reaction.portal.remote_id,
                "target": reaction.target.remote_id,
                "emoji": reaction.emoji,
                "sender": reaction.sender,
            },
        )

    async def handle_matrix_reaction_remove(self, removal: MatrixReactionRemove) -> None:
        await self._post(
            "unreact",
            {
                "chat": removal.portal.remote_id,
                "target": removal.target.message_id,
                "emoji": removal.target.emoji,
                "sender": removal.sender,
            },
        )

    async def handle_matrix_typing(self, typing: MatrixTyping) -> None:
        await self._post(
            "typing",
            {"chat": typing.portal.remote_id, "sender": typing.sender, "typing": typing.typing},
        )

    async def handle_matrix_receipt(self, receipt: MatrixReceipt) -> None:
        await self._post(
            "read",
            {
                "chat": receipt.portal.remote_id,
                "sender": receipt.sender,
                "up_to": receipt.target.remote_id,
            },
        )
