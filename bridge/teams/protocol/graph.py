"""A GraphServiceClient on any base URL (Graph, a national cloud, or the emulator)."""

from __future__ import annotations

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    BaseBearerTokenAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as sdk_options
from msgraph_core import GraphClientFactory


def graph_client(
    base_url: str, provider: AccessTokenProvider, http_client: httpx.AsyncClient | None = None
) -> GraphServiceClient:
    """A GraphServiceClient on ``base_url`` (e.g. ``http://127.0.0.1:8765/v1.0``).

    The base URL must be set on the adapter before the client is built: the client copies it
    into its path parameters at construction. Pass ``http_client`` to own (and close) the
    connection pool; it gets the SDK's default middleware (retry, redirect, /me rewriting)."""
    client = None
    if http_client is not None:
        client = GraphClientFactory.create_with_default_middleware(
            client=http_client, options=sdk_options
        )
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(provider), client)
    adapter.base_url = base_url.rstrip("/")
    return GraphServiceClient(request_adapter=adapter)


def preload_models() -> None:
    """Import the SDK models the bridge parses. msgraph-sdk imports them lazily on the first
    response, about two seconds of imports that would stall the event loop (and Graph's 3 s
    webhook deadline); call this in a thread at start."""
    from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
    from msgraph.generated.models.chat import Chat
    from msgraph.generated.models.chat_message import ChatMessage
    from msgraph.generated.models.chat_message_collection_response import (
        ChatMessageCollectionResponse,
    )
    from msgraph.generated.models.conversation_member_collection_response import (
        ConversationMemberCollectionResponse,
    )
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.subscription import Subscription
    from msgraph.generated.models.user import User

    for model in (
        ChatMessage, ChatMessageCollectionResponse, Chat, ConversationMemberCollectionResponse,
        AadUserConversationMember, Subscription, User, ODataError,
    ):  # fmt: skip
        model().get_field_deserializers()
