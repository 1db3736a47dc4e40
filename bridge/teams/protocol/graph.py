"""A GraphServiceClient on any base URL (Graph, a national cloud, or the emulator)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.serialization import ParseNode
from kiota_http.kiota_client_factory import KiotaClientFactory
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.entity import Entity
from msgraph.graph_request_adapter import options as sdk_options
from msgraph_core import GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler
from msgraph_core.middleware.options import GraphTelemetryHandlerOption

from .refresh import Refreshable, RefreshOn401


def graph_client(
    base_url: str, provider: AccessTokenProvider, http_client: httpx.AsyncClient | None = None
) -> GraphServiceClient:
    """A GraphServiceClient on ``base_url`` (e.g. ``http://127.0.0.1:8765/v1.0``).

    The base URL must be set on the adapter before the client is built: the client copies it
    into its path parameters at construction. Pass ``http_client`` to own (and close) the
    connection pool; it gets the SDK's default middleware (retry, redirect, /me rewriting)."""
    client = None
    if http_client is not None:
        # The SDK's default middleware (retry, redirect, /me rewriting, telemetry) and, last
        # before the wire, one fresh token and one retry on a 401 (``refresh``).
        middleware = KiotaClientFactory.get_default_middleware(sdk_options)
        telemetry = sdk_options.get(GraphTelemetryHandlerOption().get_key())
        # The SDK's version header, as the SDK's own factory sets it.
        middleware.append(
            GraphTelemetryHandler(options=telemetry) if telemetry else GraphTelemetryHandler()
        )
        if isinstance(provider, Refreshable):
            middleware.append(RefreshOn401(provider))
        client = GraphClientFactory.create_with_custom_middleware(middleware, client=http_client)
    skip_entity_imports()
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(provider), client)
    adapter.base_url = base_url.rstrip("/")
    return GraphServiceClient(request_adapter=adapter)


SDK_ENTITY_FIELD_DESERIALIZERS = Entity.get_field_deserializers
"""The SDK's own method, kept for the test that both parse alike."""

ENTITY_FIELDS = ("backing_store", "additional_data", "id", "odata_type")
"""The fields of msgraph-sdk's ``Entity`` that :func:`_entity_field_deserializers` reads."""


def _entity_field_deserializers(self: Entity) -> dict[str, Callable[[ParseNode], None]]:
    return {
        "id": lambda n: setattr(self, "id", n.get_str_value()),
        "@odata.type": lambda n: setattr(self, "odata_type", n.get_str_value()),
    }


def skip_entity_imports() -> bool:
    """Make parsing a Graph object cost microseconds instead of milliseconds.

    msgraph-sdk's generated ``Entity.get_field_deserializers``, which every object with an id
    (a chat message, a chat, a member, a user) calls while it is parsed, starts with about
    2,400 ``from .x import X`` statements for the types derived from ``Entity`` and then uses
    none of them. The first call imports some 1,200 modules (a second of CPU, 30 MB); every
    later call still runs the import statements, 3.7 ms per parsed message on a 2-core server,
    a third of the bridge's CPU on the Teams paths (microsoftgraph/msgraph-sdk-python#584).
    This replaces it with the same two deserializers without the imports. It is done only
    while ``Entity`` is a dataclass with exactly the fields those two set and the SDK's method
    builds exactly those two, so an SDK release that changes either keeps its own method.
    Returns whether the replacement is in place."""
    current = Entity.get_field_deserializers
    if current is _entity_field_deserializers:
        return True
    try:
        fields = tuple(f.name for f in dataclasses.fields(Entity))
    except TypeError:  # no longer a dataclass
        return False
    if fields != ENTITY_FIELDS or not _sets_only_id_and_type(current):
        return False
    Entity.get_field_deserializers = _entity_field_deserializers  # type: ignore[method-assign]
    return True


def _sets_only_id_and_type(method: Callable[..., object]) -> bool:
    """Whether the SDK's method builds exactly our two deserializers: its only nested
    functions are two lambdas setting ``id`` and ``odata_type`` from ``get_str_value``."""
    code = getattr(method, "__code__", None)
    if code is None:
        return False
    lambdas = sorted(
        (tuple(c for c in nested.co_consts if isinstance(c, str)), nested.co_names)
        for nested in code.co_consts
        if hasattr(nested, "co_consts")
    )
    expected = [
        (("id",), ("setattr", "get_str_value")),
        (("odata_type",), ("setattr", "get_str_value")),
    ]
    return lambdas == expected


def preload_models() -> None:
    """Import the SDK models the bridge parses. msgraph-sdk imports them lazily on the first
    response, imports that would stall the event loop (and Graph's 3 s webhook deadline);
    call this in a thread at start."""
    skip_entity_imports()
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
