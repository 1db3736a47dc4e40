"""Matrix mentions → Teams mentions.

A Matrix client writes a mention as a pill, ``<a href="https://matrix.to/#/@user:server">Name</a>``
in the formatted body (and lists the user in ``m.mentions``). Teams needs ``<at id="0">Name</at>``
in the body and, under the same id, the person in the message's ``mentions[]``: only then does
Teams notify them. A pill becomes a Teams mention when its Matrix user stands for a Teams
account here (a Teams ghost, or a Matrix user logged in to Teams) who is a member of the chat;
other pills stay links. The mention's text is the person's own Teams name, not the pill's
(which the sender chose), and ``<at>`` tags written in the Matrix HTML are dropped, so no one
is mentioned, or named, other than as Teams knows them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import unquote

from msgraph.generated.models.chat_message_mention import ChatMessageMention
from msgraph.generated.models.chat_message_mentioned_identity_set import (
    ChatMessageMentionedIdentitySet,
)
from msgraph.generated.models.teamwork_user_identity import TeamworkUserIdentity
from msgraph.generated.models.teamwork_user_identity_type import TeamworkUserIdentityType

_PILL = re.compile(
    r"""<a\b[^>]*?\bhref\s*=\s*["']https://matrix\.to/#/([^"'?/]+)[^"']*["'][^>]*>(.*?)</a>""",
    re.S | re.I,
)
_AT = re.compile(r"</?at\b[^>]*>", re.I)

Resolve = Callable[[str], tuple[str, str] | None]
"""A Matrix user ID → (AAD object id, Teams display name) of the chat member it stands for,
or ``None``."""


def has_pills(content: str) -> bool:
    """Whether ``content`` may name anyone (so the chat's members are worth reading)."""
    return _PILL.search(content) is not None


def pill_mxids(content: str) -> list[str]:
    """The Matrix users ``content``'s pills name, in order, each once."""
    found = (unquote(m.group(1)) for m in _PILL.finditer(content))
    return list(dict.fromkeys(m for m in found if m.startswith("@")))


def teams_mentions(content: str, resolve: Resolve) -> tuple[str, list[ChatMessageMention]]:
    """``content`` (Teams HTML) with each pill of a Teams account as ``<at id=N>``, and the
    ``mentions[]`` that go with them, numbered in order from 0."""
    mentions: list[ChatMessageMention] = []

    def pill(match: re.Match[str]) -> str:
        mxid = unquote(match.group(1))
        found = resolve(mxid) if mxid.startswith("@") else None
        if found is None:
            return match.group(0)
        account, name = found
        text = " ".join(name.split()) or mxid  # a Teams name is plain text: escaped below
        number = len(mentions)
        mentions.append(
            ChatMessageMention(
                id=number,
                mention_text=text,
                mentioned=ChatMessageMentionedIdentitySet(
                    user=TeamworkUserIdentity(
                        id=account,
                        display_name=text,
                        user_identity_type=TeamworkUserIdentityType.AadUser,
                    )
                ),
            )
        )
        return f'<at id="{number}">{html.escape(text)}</at>'

    return _PILL.sub(pill, _AT.sub("", content)), mentions
