"""Teams chatMessage → Matrix conversions, on SDK models as Graph's JSON parses into them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment
from msgraph.generated.models.chat_message_from_identity_set import ChatMessageFromIdentitySet
from msgraph.generated.models.chat_message_reaction import ChatMessageReaction
from msgraph.generated.models.chat_message_reaction_identity_set import (
    ChatMessageReactionIdentitySet,
)
from msgraph.generated.models.chat_message_type import ChatMessageType
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.item_body import ItemBody

from bridge.teams.config import TeamsConfig
from bridge.teams.ids import parse_message_resource
from bridge.teams.to_matrix import (
    ghost_name,
    html_to_text,
    is_bridgeable,
    message_parts,
    reaction_emojis,
    reply_target,
    sender_of,
    timestamp_ms,
)

ALEX = "A1B2C3D4-0000-4000-8000-000000000001"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 8


def _message(content: str, **kw: object) -> ChatMessage:
    fields: dict[str, object] = {"message_type": ChatMessageType.Message, **kw}
    return ChatMessage(
        id="1700000000000",
        created_date_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        from_=ChatMessageFromIdentitySet(user=Identity(id=ALEX, display_name="Alex Wilber")),
        body=ItemBody(content_type=BodyType.Html, content=content),
        **fields,  # type: ignore[arg-type]
    )


async def _no_fetch(hosted_id: str) -> bytes:
    raise AssertionError("not fetched")


def test_mentions_become_names_and_attachment_placeholders_go() -> None:
    msg = _message('<p>Hi <at id="0">Megan Bowen</at>!</p><attachment id="abc"></attachment>')
    (part,) = message_parts(msg, _no_fetch)
    assert part.text == "Hi Megan Bowen!"
    assert part.html == "<p>Hi Megan Bowen!</p>"


def test_text_keeps_line_breaks_and_entities() -> None:
    assert html_to_text("<p>one<br>two</p><p>a &amp; b</p>") == "one\ntwo\na & b"


def test_sender_is_the_lowercase_object_id_with_name() -> None:
    assert sender_of(_message("x")) == (ALEX.lower(), "Alex Wilber")
    assert timestamp_ms(_message("x")) == 1767323045000


def test_system_messages_are_not_bridged() -> None:
    event = _message("<systemEventMessage/>", message_type=ChatMessageType.SystemEventMessage)
    assert not is_bridgeable(event)
    assert is_bridgeable(_message("hi"))
    assert not is_bridgeable(ChatMessage(message_type=ChatMessageType.Message))


def test_reply_is_a_message_reference_attachment() -> None:
    msg = _message(
        '<attachment id="1699"></attachment><p>Yes</p>',
        attachments=[ChatMessageAttachment(id="1699", content_type="messageReference")],
    )
    assert reply_target(msg) == "1699"
    assert message_parts(msg, _no_fetch)[0].text == "Yes"


def test_shared_files_become_links() -> None:
    msg = _message(
        "<p>See this</p>",
        attachments=[
            ChatMessageAttachment(
                id="f", content_type="reference", name="plan.docx", content_url="https://sp/x"
            )
        ],
    )
    (part,) = message_parts(msg, _no_fetch)
    assert part.text == "See this\n📎 plan.docx: https://sp/x"
    assert '<a href="https://sp/x">plan.docx</a>' in (part.html or "")


async def test_pasted_images_become_media_parts_fetched_lazily() -> None:
    fetched: list[str] = []

    async def fetch(hosted_id: str) -> bytes:
        fetched.append(hosted_id)
        return PNG

    src = "https://graph.microsoft.com/v1.0/chats/19:x/messages/1/hostedContents/aWQ9/$value"
    parts = message_parts(_message(f'<p>Look</p><p><img src="{src}" alt="image"></p>'), fetch)
    assert [p.text for p in parts] == ["Look", ""]
    assert "<img" not in (parts[0].html or "")
    media = parts[1].media
    assert media is not None and fetched == []
    assert await media.read() == PNG
    assert fetched == ["aWQ9"] and media.mimetype == "image/png"
    assert parts[1].part_id == "img0"


def test_reactions_are_grouped_per_user_and_legacy_types_mapped() -> None:
    def reaction(user: str, kind: str) -> ChatMessageReaction:
        return ChatMessageReaction(
            reaction_type=kind, user=ChatMessageReactionIdentitySet(user=Identity(id=user))
        )

    msg = _message(
        "x", reactions=[reaction(ALEX, "like"), reaction(ALEX, "🎉"), reaction("B", "❤️")]
    )
    assert reaction_emojis(msg) == {ALEX.lower(): {"👍", "🎉"}, "b": {"❤️"}}


def test_plain_text_bodies_stay_plain() -> None:
    msg = _message("a < b")
    msg.body = ItemBody(content_type=BodyType.Text, content="a < b")
    (part,) = message_parts(msg, _no_fetch)
    assert part.text == "a < b" and part.html is None


def test_notification_resources() -> None:
    assert parse_message_resource("chats('19:abc@thread.v2')/messages('1700')") == (
        "19:abc@thread.v2",
        "1700",
    )
    assert parse_message_resource("teams('t')/channels('c')/messages('1')") is None


# The largest body Pontis reads: what one Matrix event can carry (Graph's own limit is lower).
_EVENT_SIZE = 65_536


@pytest.mark.parametrize("unit", ["<a", "<!--", "</", "<!"])
def test_unterminated_markup_of_a_whole_event_reads_as_no_text(unit: str) -> None:
    # html5ever reads each of these as one unfinished tag or comment, as browsers do.
    assert html_to_text(unit * (_EVENT_SIZE // len(unit))) == ""


def test_a_whole_event_of_nested_divs_keeps_its_text_and_breaks() -> None:
    deep = (_EVENT_SIZE - 20) // 11
    assert html_to_text("<div>" * deep + "deep" + "</div>" * deep + "after") == "deep\n\nafter"


def test_a_body_longer_than_an_event_is_read_up_to_the_event_size() -> None:
    text = html_to_text("<p>" + "x" * _EVENT_SIZE + "</p><p>lost</p>")
    assert text == "x" * (_EVENT_SIZE - 3)


def test_a_ghost_carries_its_agency_after_the_name() -> None:
    assert ghost_name("Alex Wilber", "Contoso") == "Alex Wilber (Contoso)"
    assert ghost_name(" Alex\n Wilber ", "Contoso") == "Alex Wilber (Contoso)"
    assert ghost_name("", "Contoso") is None and ghost_name(None, "Contoso") is None


def test_the_agency_name_is_one_short_line() -> None:
    base = {"tenant_id": "00000000-0000-0000-0000-000000000001", "client_id": "c",
            "client_secret": "s"}  # fmt: skip
    section = {"tenants": [{**base, "display_name": "Contoso\nIT"}, base]}
    cfg = TeamsConfig.from_section(section)
    assert [t.display_name for t in cfg.tenants] == ["Contoso IT", "Teams"]
    assert any("tenants[0].display_name" in p for p in cfg.problems(section))
    assert not any("display_name" in p for p in cfg.problems({"tenants": [base]}))
