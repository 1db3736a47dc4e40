"""Teams chatMessage → Matrix parts, reactions and edits.

Graph bodies are HTML with Teams-only tags: ``<at id="0">Name</at>`` for mentions (the person
is in the message's ``mentions[]`` under the same id),
``<attachment id="…"></attachment>`` placeholders for cards, files and quoted replies, and
``<img src="…/hostedContents/{id}/$value">`` for pasted images. Mentions become Matrix pills
(with ``m.mentions``) of the people who have a Matrix ID here, plain names otherwise,
placeholders disappear (the attachment itself is bridged as a link or a reply), and pasted
images become media parts fetched lazily in the portal's queue. The core sanitises the rest.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from html.parser import HTMLParser

import nh3
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_type import ChatMessageType

from bridge.core import Media, MessagePart, PartID, RemoteMessageID, RemoteUserID, bound_html
from bridge.teams.ids import user_id

_AT = re.compile(r"<at\b([^>]*)>(.*?)</at>", re.S | re.I)
_AT_ID = re.compile(r"""\bid\s*=\s*["']?(\d+)""", re.I)
_ATTACHMENT = re.compile(r"<attachment\b[^>]*>\s*</attachment>", re.I)
_HOSTED_IMG = re.compile(
    r"<img\b[^>]*\bsrc=\"([^\"]*/hostedContents/([^/\"]+)/\$value)\"[^>]*>", re.I
)


def ghost_name(name: str | None, agency: str) -> str | None:
    """A Teams person's name on Matrix, with their agency (tenant) after it: "Adele Vance
    (Contoso)", so a Matrix user can tell an agency's people from anyone else's."""
    name = " ".join((name or "").split())
    return f"{name} ({agency})" if name else None


LEGACY_REACTIONS = {
    "like": "👍",
    "heart": "❤️",
    "laugh": "😆",
    "surprised": "😮",
    "sad": "😢",
    "angry": "😡",
}
"""Reaction types of older Teams clients; newer ones send the emoji itself."""

FetchHosted = Callable[[str], Awaitable[bytes]]
"""Downloads one hostedContent of the message (by its id), with the app's token."""


class _TextExtractor(HTMLParser):
    _BREAKS = {"br", "p", "div", "li", "tr", "blockquote", "h1", "h2", "h3", "h4", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BREAKS and tag != "br":
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        self.out.append(data)


# html.parser takes quadratic time on unterminated markup (64 KiB of "<a" took 5 s), so it only
# reads what nh3 (linear) re-serialised: the tags that break lines, everything else as text.
_LINE_BREAKS_ONLY = nh3.Cleaner(tags=set(_TextExtractor._BREAKS), attributes={})


def html_to_text(body: str) -> str:
    """The text of Teams HTML with its line breaks; cut as ``bound_html`` cuts it for Matrix."""
    parser = _TextExtractor()
    parser.feed(_LINE_BREAKS_ONLY.clean(bound_html(body)))
    parser.close()
    text = "".join(parser.out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def clean_teams_html(body: str, pills: Mapping[str, str] | None = None) -> str:
    """Teams HTML without Teams-only tags: mentions as Matrix pills (``pills``: the ``<at>``
    tag's id → the mentioned person's Matrix ID) or else as plain names, no attachment
    placeholders and no hosted-content images (those travel as media parts)."""

    def mention(match: re.Match[str]) -> str:
        found = _AT_ID.search(match.group(1))
        mxid = (pills or {}).get(found.group(1)) if found else None
        if mxid is None:
            return match.group(2)
        return f'<a href="https://matrix.to/#/{html.escape(mxid)}">{match.group(2)}</a>'

    body = _AT.sub(mention, body)
    body = _ATTACHMENT.sub("", body)
    return _HOSTED_IMG.sub("", body)


def hosted_image_ids(body: str) -> list[str]:
    return [m.group(2) for m in _HOSTED_IMG.finditer(body)]


def sender_of(msg: ChatMessage) -> tuple[RemoteUserID, str | None] | None:
    """The AAD user who wrote ``msg`` and their display name; ``None`` for bots and system."""
    identity = msg.from_.user if msg.from_ is not None else None
    if identity is None or not identity.id:
        return None
    return user_id(identity.id), identity.display_name


def is_bridgeable(msg: ChatMessage) -> bool:
    """Ordinary user messages; system events (members added, chat renamed) are left out."""
    return msg.message_type in (None, ChatMessageType.Message) and sender_of(msg) is not None


def reply_target(msg: ChatMessage) -> RemoteMessageID | None:
    """The message a chat reply quotes (a ``messageReference`` attachment)."""
    for attachment in msg.attachments or []:
        if attachment.content_type == "messageReference" and attachment.id:
            return RemoteMessageID(attachment.id)
    return None


def mentioned_users(msg: ChatMessage) -> dict[str, RemoteUserID]:
    """The people ``msg`` mentions: each ``<at id>`` of its body → the AAD user it names."""
    found: dict[str, RemoteUserID] = {}
    for mention in msg.mentions or []:
        identity = mention.mentioned.user if mention.mentioned is not None else None
        if mention.id is not None and identity is not None and identity.id:
            found[str(mention.id)] = user_id(identity.id)
    return found


def message_parts(
    msg: ChatMessage,
    fetch_hosted: FetchHosted,
    people: Mapping[RemoteUserID, str] | None = None,
    files: Sequence[MessagePart] | None = None,
) -> list[MessagePart]:
    """The Matrix parts of ``msg``: its text first, then one part per pasted image.
    ``people`` gives the Matrix ID of each mentioned person who has one (a ghost, a logged-in
    Matrix user): their mention becomes a pill and is listed in ``m.mentions``, so Matrix
    notifies them. ``files``: the parts of its shared files (:mod:`bridge.teams.files`), last;
    without them (an edit) shared files are not repeated, and ``None`` shows them as links."""
    raw = msg.body.content if msg.body is not None and msg.body.content else ""
    is_html = msg.body is not None and msg.body.content_type == BodyType.Html
    parts: list[MessagePart] = []
    pills = {
        at: (people or {})[user]
        for at, user in mentioned_users(msg).items()
        if user in (people or {})
    }
    if is_html:
        cleaned = clean_teams_html(raw, pills)
        text = html_to_text(cleaned)
        links = _file_links(msg) if files is None else []
        if links:
            text = "\n".join(filter(None, [text, *(f"📎 {n}: {u}" for n, u in links)]))
            cleaned += "".join(
                f'<p>📎 <a href="{html.escape(u)}">{html.escape(n)}</a></p>' for n, u in links
            )
        if text:
            # Only the people the text shows: an entry of mentions[] with no <at> is no one's.
            shown = {
                pills[found.group(1)]
                for at in _AT.finditer(raw)
                if (found := _AT_ID.search(at.group(1))) and found.group(1) in pills
            }
            extra = {"m.mentions": {"user_ids": sorted(shown)}} if shown else {}
            parts.append(MessagePart(text=text, html=cleaned, extra=extra))
    elif raw:
        parts.append(MessagePart(text=raw))
    for index, hosted_id in enumerate(hosted_image_ids(raw) if is_html else []):
        parts.append(
            MessagePart(part_id=PartID(f"img{index}"), media=_hosted_media(hosted_id, fetch_hosted))
        )
    return parts + list(files or [])


def _file_links(msg: ChatMessage) -> list[tuple[str, str]]:
    """Shared files (``reference`` attachments): bridged as links, the file stays in SharePoint."""
    return [
        (a.name or "file", a.content_url)
        for a in msg.attachments or []
        if a.content_type == "reference" and a.content_url
    ]


_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"))


def _hosted_media(hosted_id: str, fetch_hosted: FetchHosted) -> Media:
    media = Media(mimetype="image/png", filename="image.png")

    async def fetch() -> bytes:
        data = await fetch_hosted(hosted_id)
        # Graph gives no type with the bytes; the core reads mimetype after fetching.
        for magic, mimetype in _MAGIC:
            if data.startswith(magic):
                media.mimetype = mimetype
                media.filename = "image." + mimetype.split("/")[1]
        return data

    media.fetch = fetch
    return media


def reaction_emojis(msg: ChatMessage) -> dict[RemoteUserID, set[str]]:
    """Each reacting user's current set of emoji on ``msg``."""
    result: dict[RemoteUserID, set[str]] = {}
    for reaction in msg.reactions or []:
        user = reaction.user.user if reaction.user is not None else None
        if user is None or not user.id or not reaction.reaction_type:
            continue
        kind = reaction.reaction_type
        emoji = LEGACY_REACTIONS.get(kind.lower(), kind)
        result.setdefault(user_id(user.id), set()).add(emoji)
    return result


def timestamp_ms(msg: ChatMessage) -> int | None:
    when = msg.created_date_time
    return int(when.timestamp() * 1000) if when is not None else None
