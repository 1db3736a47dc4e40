"""Matrix mentions → Teams mentions.

A Matrix client writes a mention as a pill, ``<a href="https://matrix.to/#/@user:server">Name</a>``
in the formatted body (and lists the user in ``m.mentions``). Teams needs ``<at id="0">Name</at>``
in the body and, under the same id, the person in the message's ``mentions[]``: only then does
Teams notify them. A pill becomes a Teams mention when its Matrix user stands for a Teams
account here (a Teams ghost, or a Matrix user logged in to Teams); other pills stay links.
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
_TAG = re.compile(r"<[^>]*>")

Resolve = Callable[[str], str | None]
"""A Matrix user ID → the AAD object id of the Teams account it stands for, or ``None``."""


def teams_mentions(content: str, resolve: Resolve) -> tuple[str, list[ChatMessageMention]]:
    """``content`` (Teams HTML) with each pill of a Teams account as ``<at id=N>``, and the
    ``mentions[]`` that go with them, numbered in order from 0."""
    mentions: list[ChatMessageMention] = []

    def pill(match: re.Match[str]) -> str:
        mxid = unquote(match.group(1))
        account = resolve(mxid) if mxid.startswith("@") else None
        if account is None:
            return match.group(0)
        text = " ".join(html.unescape(_TAG.sub("", match.group(2))).split()) or mxid
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

    return _PILL.sub(pill, content), mentions
