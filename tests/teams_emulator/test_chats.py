"""Chats and chat messages through the unmodified msgraph-sdk, parsed by its own models."""

from __future__ import annotations

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.chats.item.messages.item.set_reaction.set_reaction_post_request_body import (
    SetReactionPostRequestBody,
)
from msgraph.generated.chats.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat import Chat
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_type import ChatType
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.teamwork_user_identity import TeamworkUserIdentity

from .conftest import Emulator


async def test_app_token_lists_all_chats_of_the_tenant(emulator: Emulator) -> None:
    graph = emulator.app_client()
    page = await graph.chats.get()
    assert page is not None and page.value is not None
    assert {c.id for c in page.value} == {emulator.chat(0), emulator.chat(1)}
    group = next(c for c in page.value if c.id == emulator.chat(0))
    assert group.chat_type == ChatType.Group and group.topic == "Launch"
    assert group.tenant_id == emulator.tenant_id


async def test_delegated_token_lists_only_the_users_chats(emulator: Emulator) -> None:
    graph = emulator.user_client("alex")
    page = await graph.me.chats.get()
    assert page is not None and page.value is not None
    assert [c.id for c in page.value] == [emulator.chat(0)]
    me = await graph.me.get()
    assert me is not None and me.display_name == "Alex Wilber"


async def test_members_parse_as_aad_user_members(emulator: Emulator) -> None:
    graph = emulator.app_client()
    members = await graph.chats.by_chat_id(emulator.chat(0)).members.get()
    assert members is not None and members.value is not None
    assert all(isinstance(m, AadUserConversationMember) for m in members.value)
    assert {m.user_id for m in members.value if isinstance(m, AadUserConversationMember)} == {
        emulator.user("adele")["id"],
        emulator.user("alex")["id"],
    }


async def test_create_one_on_one_chat_returns_the_existing_one(emulator: Emulator) -> None:
    graph = emulator.user_client("adele")
    adele, megan = emulator.user("adele")["id"], emulator.user("megan")["id"]
    members = [
        AadUserConversationMember(
            roles=["owner"],
            additional_data={"user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{uid}')"},
        )
        for uid in (adele, megan)
    ]
    chat = await graph.chats.post(Chat(chat_type=ChatType.OneOnOne, members=members))
    assert chat is not None and chat.id == emulator.chat(1)
    assert chat.id.endswith("@unq.gbl.spaces")


async def test_send_as_user_and_read_back(emulator: Emulator) -> None:
    graph = emulator.user_client("adele")
    chat = graph.chats.by_chat_id(emulator.chat(0))
    sent = await chat.messages.post(
        ChatMessage(body=ItemBody(content_type=BodyType.Html, content="<p>Hello <b>Alex</b></p>"))
    )
    assert sent is not None and sent.id is not None and sent.id.isdigit()
    got = await chat.messages.by_chat_message_id(sent.id).get()
    assert got is not None and got.body is not None
    assert got.body.content == "<p>Hello <b>Alex</b></p>"
    assert got.body.content_type == BodyType.Html
    assert got.chat_id == emulator.chat(0)
    assert got.from_ is not None and isinstance(got.from_.user, TeamworkUserIdentity)
    assert got.from_.user.id == emulator.user("adele")["id"]
    assert got.created_date_time is not None and got.created_date_time.tzinfo is not None


async def test_paging_follows_next_link(emulator: Emulator) -> None:
    for n in range(7):
        await emulator.post_as("alex", emulator.chat(0), f"message {n}")
    graph = emulator.user_client("adele")
    messages = graph.chats.by_chat_id(emulator.chat(0)).messages
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(top=3)
    page = await messages.get(RequestConfiguration(query_parameters=query))
    seen: list[str] = []
    pages = 0
    while page is not None:
        pages += 1
        seen += [m.body.content for m in page.value or [] if m.body and m.body.content]
        page = await messages.with_url(page.odata_next_link).get() if page.odata_next_link else None
    assert pages == 3
    assert seen == [f"message {n}" for n in reversed(range(7))]


async def test_edit_react_and_soft_delete(emulator: Emulator) -> None:
    graph = emulator.user_client("adele")
    chat = graph.chats.by_chat_id(emulator.chat(0))
    sent = await chat.messages.post(
        ChatMessage(body=ItemBody(content_type=BodyType.Text, content="typo"))
    )
    assert sent is not None and sent.id is not None
    item = chat.messages.by_chat_message_id(sent.id)

    await item.patch(ChatMessage(body=ItemBody(content_type=BodyType.Text, content="fixed")))
    edited = await item.get()
    assert edited is not None and edited.body is not None and edited.body.content == "fixed"
    assert edited.last_edited_date_time is not None

    alex = emulator.user_client("alex")
    await (
        alex.chats.by_chat_id(emulator.chat(0))
        .messages.by_chat_message_id(sent.id)
        .set_reaction.post(SetReactionPostRequestBody(reaction_type="👍"))
    )
    reacted = await item.get()
    assert reacted is not None and reacted.reactions
    assert reacted.reactions[0].reaction_type == "👍"
    assert reacted.reactions[0].user is not None and reacted.reactions[0].user.user is not None
    assert reacted.reactions[0].user.user.id == emulator.user("alex")["id"]

    await item.soft_delete.post()
    deleted = await item.get()
    assert deleted is not None and deleted.deleted_date_time is not None
    await item.undo_soft_delete.post()
    restored = await item.get()
    assert restored is not None and restored.deleted_date_time is None
    assert restored.body is not None and restored.body.content == "fixed"
    assert [r["status"] for r in emulator.requests("/v1.0/chats/*/messages/*", "PATCH")] == [204]


async def test_app_only_token_cannot_send(emulator: Emulator) -> None:
    graph = emulator.app_client()
    with pytest.raises(ODataError) as caught:
        await graph.chats.by_chat_id(emulator.chat(0)).messages.post(
            ChatMessage(body=ItemBody(content_type=BodyType.Text, content="hi"))
        )
    assert caught.value.response_status_code == 403
    assert caught.value.error is not None and caught.value.error.code == "Forbidden"


async def test_delegated_token_cannot_read_a_chat_it_is_not_in(emulator: Emulator) -> None:
    graph = emulator.user_client("megan")
    with pytest.raises(ODataError) as caught:
        await graph.chats.by_chat_id(emulator.chat(0)).messages.get()
    assert caught.value.response_status_code == 403


async def test_only_the_sender_edits(emulator: Emulator) -> None:
    posted = await emulator.post_as("alex", emulator.chat(0), "mine")
    graph = emulator.user_client("adele")
    with pytest.raises(ODataError) as caught:
        await (
            graph.chats.by_chat_id(emulator.chat(0))
            .messages.by_chat_message_id(posted["id"])
            .patch(ChatMessage(body=ItemBody(content_type=BodyType.Text, content="yours now")))
        )
    assert caught.value.response_status_code == 403


async def test_unknown_chat_is_404_in_graph_format(emulator: Emulator) -> None:
    graph = emulator.app_client()
    with pytest.raises(ODataError) as caught:
        await graph.chats.by_chat_id("19:nope@thread.v2").get()
    assert caught.value.response_status_code == 404
    assert caught.value.error is not None and caught.value.error.code == "NotFound"
    assert caught.value.error.inner_error is not None
