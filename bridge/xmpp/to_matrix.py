"""XMPP stanzas → Remote* events.

A stanza that carries content (:func:`carries_content`) is kept in the remote inbox as its XML
(:func:`stanza_xml`) and converted by :func:`convert` inside the portal's queue, from the stanza
rebuilt with :func:`parse_stanza`; chat states and markers are converted at once.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse
from xml.etree import ElementTree

from slixmpp import ComponentXMPP, Message
from slixmpp.xmlstream import tostring

from bridge.core import (
    BridgeError,
    ChatInfo,
    Media,
    MessagePart,
    NotSupported,
    PermanentError,
    PortalKey,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
    RemoteReactionSync,
    RemoteReceipt,
    RemoteRedaction,
    RemoteTyping,
    RemoteUserID,
    UserInfo,
)
from bridge.core.remote_files import FetchFailed, FetchRefused, FetchTooLarge, RemoteFiles
from bridge.xmpp.ids import message_id
from bridge.xmpp.protocol.styling import styling_to_html

ResolveId = Callable[[str], Awaitable[RemoteMessageID]]
"""Turns an id a stanza refers to (in a MUC, possibly the room's stanza-id) into ours."""


def stanza_xml(msg: Message) -> str:
    """The stanza as XML that :func:`parse_stanza` turns back into the same stanza."""
    return tostring(msg.xml, top_level=True)


def parse_stanza(stream: ComponentXMPP, xml: str) -> Message:
    try:
        return Message(stream=stream, xml=ElementTree.fromstring(xml))
    except ElementTree.ParseError as err:
        raise PermanentError(f"stored stanza is not XML: {err}") from err


def carries_content(msg: Message) -> bool:
    """Whether ``msg`` makes Matrix content (a message, file, correction, retraction or
    reaction), which is kept durably; chat states and markers are fleeting."""
    xml = msg.xml
    return bool(
        msg["body"]
        or xml.find("{urn:xmpp:message-retract:1}retract") is not None
        or xml.find("{urn:xmpp:reactions:0}reactions") is not None
        or (xml.find("{jabber:x:oob}x") is not None and msg["oob"]["url"])
    )


def _timestamp(msg: Message) -> int | None:
    stamp = msg["delay"]["stamp"] if msg.xml.find("{urn:xmpp:delay}delay") is not None else None
    return int(stamp.timestamp() * 1000) if isinstance(stamp, datetime) else None


def shown(url: str) -> str:
    """A file link as logs and dead letters may show it: XEP-0363 download links are
    capabilities (whoever has one reads the file), so no path and no query."""
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "(a file link)"


def fetcher(files: RemoteFiles, url: str) -> Callable[[], Awaitable[bytes]]:
    """Download an OOB URL lazily, under the address policy and size cap of ``files``."""
    where = shown(url)

    async def fetch() -> bytes:
        try:
            return await files.fetch(url)
        except FetchRefused as err:
            raise NotSupported(
                f"refusing to fetch {where}: {err}",
                user_message="A file was not bridged: its link points to a local or private "
                "network address, which the bridge does not fetch from.",
            ) from None
        except FetchTooLarge as err:
            raise NotSupported(str(err), user_message="A file was too large to bridge.") from None
        except FetchFailed as err:
            status = err.status
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise PermanentError(
                    f"fetching {where} failed: {err}",
                    user_message=f"A file could not be fetched (HTTP {status}).",
                ) from None
            # The file's host, not the homeserver nor the XMPP server: a few tries, then a dead
            # letter an operator can retry, rather than a portal that waits for ever.
            raise BridgeError(
                f"fetching {where} failed: {err}", user_message="A file could not be fetched."
            ) from None

    return fetch


def _media(msg: Message, files: RemoteFiles) -> Media | None:
    url = msg["oob"]["url"] if msg.xml.find("{jabber:x:oob}x") is not None else ""
    if not url:
        return None
    filename = posixpath.basename(unquote(urlparse(url).path)) or "file"
    mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return Media(fetch=fetcher(files, url), filename=filename, mimetype=mimetype)


MAX_BODY_BYTES = 60_000
"""Matrix events are limited to 64 KiB in all; longer bodies are refused at the door."""


def too_large(msg: Message) -> bool:
    return len(msg["body"].encode()) > MAX_BODY_BYTES


async def convert(
    msg: Message,
    *,
    key: PortalKey,
    sender: RemoteUserID,
    sender_name: str | None,
    chat_info: ChatInfo | None,
    resolve: ResolveId,
    files: RemoteFiles,
    received: int | None = None,
) -> RemoteEvent | None:
    """The Remote* event ``msg`` stands for, or ``None`` if it carries nothing to bridge.
    ``received`` (ms) is when the bridge got it, for stanzas without a XEP-0203 delay."""
    common: dict[str, Any] = {
        "portal": key,
        "sender": sender,
        "timestamp": _timestamp(msg) or received,
        "sender_info": UserInfo(name=sender_name) if sender_name else None,
        "chat_info": chat_info,
    }
    xml = msg.xml
    if xml.find("{urn:xmpp:message-retract:1}retract") is not None:
        return RemoteRedaction(**common, target=await resolve(msg["retract"]["id"]))
    if xml.find("{urn:xmpp:reactions:0}reactions") is not None:
        emojis = msg["reactions"].get_values()
        return RemoteReactionSync(
            **common, target=await resolve(msg["reactions"]["id"]), emojis=emojis
        )
    body = msg["body"]
    if xml.find("{urn:xmpp:message-correct:0}replace") is not None and body:
        part = MessagePart(text=body, html=styling_to_html(body))
        return RemoteEdit(**common, target=await resolve(msg["replace"]["id"]), parts=[part])
    media = _media(msg, files)
    if body or media is not None:
        reply_to = None
        if xml.find("{urn:xmpp:reply:0}reply") is not None and msg["reply"]["id"]:
            reply_to = await resolve(msg["reply"]["id"])
            body = msg["reply"].strip_fallback_content()
        if media is not None and body.strip() == msg["oob"]["url"]:
            body = ""  # the URL is the fallback for clients without OOB, not a caption
        part = MessagePart(text=body, html=styling_to_html(body) if body else None, media=media)
        return RemoteMessage(**common, id=message_id(msg), parts=[part], reply_to=reply_to)
    state = msg["chat_state"]
    if state in ("composing", "paused", "active", "inactive", "gone"):
        return RemoteTyping(**common, typing=state == "composing", create_portal=False)
    if xml.find("{urn:xmpp:chat-markers:0}displayed") is not None:
        return RemoteReceipt(**common, up_to=await resolve(msg["displayed"]["id"]))
    return None
