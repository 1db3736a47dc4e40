"""Mentions both ways: Teams ``<at id>`` + ``mentions[]`` ↔ Matrix pills + ``m.mentions``."""

from __future__ import annotations

from datetime import UTC, datetime

from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_from_identity_set import ChatMessageFromIdentitySet
from msgraph.generated.models.chat_message_mention import ChatMessageMention
from msgraph.generated.models.chat_message_mentioned_identity_set import (
    ChatMessageMentionedIdentitySet,
)
from msgraph.generated.models.chat_message_type import ChatMessageType
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.item_body import ItemBody

from bridge.core import RemoteUserID
from bridge.teams.mentions import teams_mentions
from bridge.teams.to_matrix import mentioned_users, message_parts

ALEX = "a1b2c3d4-0000-4000-8000-000000000001"
MEGAN = "a1b2c3d4-0000-4000-8000-000000000002"
GHOST = f"@teams_{MEGAN}:hub.example"


def _resolve(mxid: str) -> tuple[str, str] | None:
    """The chat's members, under their Teams names."""
    return {GHOST: (MEGAN, "Megan Bowen"), "@adele:hub.example": (ALEX, "Adele Vance")}.get(mxid)


# --- Matrix → Teams ---------------------------------------------------------------------------


def test_a_pill_of_a_teams_person_becomes_a_teams_mention() -> None:
    html = f'Hi <a href="https://matrix.to/#/{GHOST}">Megan Bowen (Contoso)</a>, and <a href="https://matrix.to/#/%40adele%3Ahub.example">Adele</a>!'
    content, mentions = teams_mentions(html, _resolve)
    assert content == 'Hi <at id="0">Megan Bowen</at>, and <at id="1">Adele Vance</at>!'
    assert [(m.id, m.mention_text) for m in mentions] == [(0, "Megan Bowen"), (1, "Adele Vance")]
    assert [m.mentioned.user.id for m in mentions if m.mentioned and m.mentioned.user] == [
        MEGAN,
        ALEX,
    ]


def test_other_links_and_pills_stay_links() -> None:
    """Hostile: pills of Matrix users with no Teams account, rooms, other sites, and look-alike
    hosts are not turned into mentions of anyone."""
    for html in (
        '<a href="https://matrix.to/#/@eve:evil.example">Megan Bowen</a>',
        '<a href="https://matrix.to/#/#room:hub.example">room</a>',
        f'<a href="https://matrix.to.evil.example/#/{GHOST}">Megan</a>',
        '<a href="https://example.org">x</a>',
    ):
        assert teams_mentions(html, _resolve) == (html, [])


def test_a_pills_text_is_not_the_mentions_text() -> None:
    """Hostile: the sender chose the pill's text ("Everyone", markup); Teams shows the
    person's own name, plain."""
    html = f'<a href="https://matrix.to/#/{GHOST}"><b>Everyone</b> &lt;at id="9"&gt;</a>'
    content, (mention,) = teams_mentions(html, _resolve)
    assert content == '<at id="0">Megan Bowen</at>'
    assert mention.mention_text == "Megan Bowen"
    marked = lambda mxid: (MEGAN, 'Megan <at id="9">')  # noqa: E731 (a name with markup)
    content, (mention,) = teams_mentions(f'<a href="https://matrix.to/#/{GHOST}">x</a>', marked)
    assert content == '<at id="0">Megan &lt;at id=&quot;9&quot;&gt;</at>'


def test_at_tags_written_in_matrix_are_dropped() -> None:
    """Hostile: a raw ``<at id="0">CEO</at>`` in the Matrix HTML is not a Teams mention,
    nor does it take the number of a real one."""
    html = f'<at id="0">CEO</at> says <a href="https://matrix.to/#/{GHOST}">M</a> <AT id=1>x</at >'
    content, (mention,) = teams_mentions(html, _resolve)
    assert content == 'CEO says <at id="0">Megan Bowen</at> x'
    assert mention.id == 0


# --- Teams → Matrix ---------------------------------------------------------------------------


def _message(content: str, *mentions: tuple[int, str, str]) -> ChatMessage:
    return ChatMessage(
        id="1700000000000",
        message_type=ChatMessageType.Message,
        created_date_time=datetime(2026, 1, 2, tzinfo=UTC),
        from_=ChatMessageFromIdentitySet(user=Identity(id=ALEX, display_name="Alex")),
        body=ItemBody(content_type=BodyType.Html, content=content),
        mentions=[
            ChatMessageMention(
                id=number,
                mention_text=text,
                mentioned=ChatMessageMentionedIdentitySet(user=Identity(id=user)),
            )
            for number, text, user in mentions
        ],
    )


async def _no_fetch(hosted_id: str) -> bytes:
    raise AssertionError("not fetched")


def test_a_teams_mention_becomes_a_pill_and_m_mentions() -> None:
    msg = _message('<p>Hi <at id="0">Megan Bowen</at></p>', (0, "Megan Bowen", MEGAN.upper()))
    assert mentioned_users(msg) == {"0": RemoteUserID(MEGAN)}
    (part,) = message_parts(msg, _no_fetch, {RemoteUserID(MEGAN): GHOST})
    assert part.html == f'<p>Hi <a href="https://matrix.to/#/{GHOST}">Megan Bowen</a></p>'
    assert part.text == "Hi Megan Bowen"
    assert part.extra == {"m.mentions": {"user_ids": [GHOST]}}


def test_a_mention_of_someone_without_a_matrix_id_stays_a_name() -> None:
    """An ``<at>`` whose id is not in ``mentions[]``, or names someone with no Matrix ID here,
    is a plain name and notifies no one."""
    msg = _message(
        '<p><at id="0">Megan</at> <at id="7">Alex</at></p>', (0, "Megan", MEGAN), (1, "x", ALEX)
    )
    (part,) = message_parts(msg, _no_fetch, {})
    assert part.html == "<p>Megan Alex</p>" and part.extra == {}
    (part,) = message_parts(msg, _no_fetch, {RemoteUserID(ALEX): "@adele:hub.example"})
    assert part.html == "<p>Megan Alex</p>" and part.extra == {}  # <at id=7> has no entry


def test_a_matrix_id_in_a_pill_is_escaped() -> None:
    msg = _message('<at id="0">M</at>', (0, "M", MEGAN))
    (part,) = message_parts(msg, _no_fetch, {RemoteUserID(MEGAN): '@a"><script>:hub'})
    assert part.html is not None and "<script>" not in part.html and "&quot;" in part.html
