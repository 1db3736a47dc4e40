"""Teams notifications through the core's remote inbox: what is kept before the 202, and what
converting one in its portal's queue gives (and raises) for each thing Graph can answer."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from kiota_abstractions.api_error import APIError
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_from_identity_set import ChatMessageFromIdentitySet
from msgraph.generated.models.chat_message_type import ChatMessageType
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.item_body import ItemBody

from bridge.core import (
    BridgeError,
    ChatInfo,
    PermanentError,
    RemoteChatID,
    RemoteEdit,
    RemoteMessage,
    RemoteMessageID,
    RemoteRedaction,
    TransientError,
    UserInfo,
)
from bridge.core.federation import FederationPolicy
from bridge.portal import Store
from bridge.portal.models import Message, Portal, RemoteInput
from bridge.teams.errors import APP_REFUSED
from bridge.teams.ids import NETWORK, portal_key
from bridge.teams.inbound import CATCH_UP, NOTIFICATION, TOKEN, Inbound
from bridge.teams.network import RecentIds
from bridge.teams.store import TeamsStore
from bridge.teams.to_matrix import ghost_name

CHAT = "19:abc@thread.v2"
ALEX = "a1b2c3d4-0000-4000-8000-000000000001"
EDITED = datetime(2026, 1, 2, 3, 5, tzinfo=UTC)


def _notification(change: str = "created", msg: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "subscriptionId": "sub",
        "changeType": change,
        "resource": f"chats('{CHAT}')/messages('{msg}')",
        "resourceData": {"id": msg},
        "clientState": "secret",
        "tenantId": "tenant",
        **extra,
    }


def _message(msg_id: str = "1", **kw: Any) -> ChatMessage:
    return ChatMessage(
        id=msg_id,
        message_type=ChatMessageType.Message,
        created_date_time=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        from_=ChatMessageFromIdentitySet(user=Identity(id=ALEX, display_name="Alex Wilber")),
        body=ItemBody(content_type=BodyType.Html, content="<p>Hello</p>"),
        **kw,
    )


def _stored(sender: str = ALEX) -> Message:
    return Message(
        network=NETWORK, portal_id=RemoteChatID(CHAT), remote_id=RemoteMessageID("1"),
        mxid="$event", room_id="!room", sender_id=sender,
    )  # fmt: skip


class Fake:
    """An Inbound with the core, the store and Graph replaced by mocks."""

    def __init__(self, *, bridged: bool = True, stored: Message | None = None) -> None:
        self.kv: dict[str, str] = {}
        ctx = MagicMock()
        ctx.log = logging.getLogger("test.teams")
        ctx.accept_remote = AsyncMock(return_value=True)
        portal = Portal(NETWORK, RemoteChatID(CHAT), mxid="!room" if bridged else None)
        ctx.store.get_portal = AsyncMock(return_value=portal)
        ctx.store.list_portals = AsyncMock(return_value=[portal])
        ctx.store.get_message = AsyncMock(return_value=stored)
        ctx.store.list_reactions = AsyncMock(return_value=[])
        ctx.store.kv_get = AsyncMock(side_effect=self.kv.get)
        ctx.store.kv_set = AsyncMock(side_effect=self.kv.__setitem__)
        ctx.background = MagicMock(side_effect=lambda coro, name: coro.close())
        ctx.federation = FederationPolicy(None, "hub")  # the default: local users only
        self.ctx = ctx
        self.link = MagicMock()
        self.link.tenant.tenant_id = "tenant-a"
        self.link.tenant.display_name = "Contoso"
        self.link.graph_url = "https://graph"  # nextLinks are followed only on it
        self.link.photos.sender = AsyncMock(  # no profile photos here
            side_effect=lambda user, name, agency: (
                UserInfo(name=ghost_name(name, agency)) if name else None
            )
        )
        self.watched = {"sub"}
        """Subscriptions on watched accounts (the relay, logged-in users)."""
        self.link.watches = AsyncMock(side_effect=lambda sub: sub in self.watched)
        self.get = AsyncMock(return_value=_message())
        chats = self.link.app.chats.by_chat_id.return_value
        chats.messages.by_chat_message_id.return_value.get = self.get
        net = MagicMock()
        net.ctx = ctx
        net.sent = RecentIds()
        net.tenant.side_effect = lambda t: self.link if t in ("tenant", "tenant-a") else None
        net.tenants = {"tenant-a": self.link}
        net.tenant_for_chat = AsyncMock(return_value=self.link)
        net.remember_chat = AsyncMock()
        net.logged_in = AsyncMock(return_value={})
        net.relay_ids.return_value = set()
        net.cfg.catch_up_messages = 20
        self.net = net
        self.shared = MagicMock()
        self.shared.get_chat_info = AsyncMock(return_value=ChatInfo(matrix_users=["@adele:hub"]))
        self.inbound = Inbound(net, self.shared)
        self.inbound.ready.set()

    def accepted(self) -> list[RemoteInput]:
        return [call.args[0] for call in self.ctx.accept_remote.await_args_list]

    async def convert(self, change: str = "created", **extra: Any) -> list[Any]:
        item = RemoteInput(
            portal=portal_key(CHAT), kind=NOTIFICATION,
            payload={**_notification(change), TOKEN: "token-1", **extra},
        )  # fmt: skip
        return list(await self.inbound.convert(item))


# --- accepting ---------------------------------------------------------------------------------


async def test_a_notification_is_kept_without_its_secret_and_deduplicated_by_change() -> None:
    fake = Fake()
    await fake.inbound.accept(
        [_notification("created"), _notification("deleted", "2"), _notification("updated")]
    )
    kept = fake.accepted()
    assert [i.portal for i in kept] == [portal_key(CHAT)] * 3
    assert {i.kind for i in kept} == {NOTIFICATION}
    assert [i.dedupe_id for i in kept] == ["created:1", None, "deleted:2"]  # by message
    assert all("clientState" not in i.payload and i.payload[TOKEN] for i in kept)
    assert len({i.payload[TOKEN] for i in kept}) == 3


async def test_an_update_with_an_etag_is_deduplicated_by_it() -> None:
    fake = Fake()
    await fake.inbound.accept([_notification(resourceData={"id": "1", "@odata.etag": "7"})])
    await fake.inbound.accept([_notification("updated", resourceData={"@odata.etag": "8"})])
    assert [i.dedupe_id for i in fake.accepted()] == ["created:1", "updated:1:8"]


async def test_changes_in_chats_that_are_not_bridged_are_not_kept() -> None:
    fake = Fake(bridged=False)
    await fake.inbound.accept([_notification("updated"), _notification("deleted")])
    assert fake.accepted() == []
    # A new message may be the first of a chat with a Matrix user: converting it decides.
    await fake.inbound.accept([_notification("created")])
    assert len(fake.accepted()) == 1


async def test_an_unbridged_chat_from_an_unwatched_subscription_is_not_kept_nor_read() -> None:
    """Hostile first: a notification with the right clientState from a subscription the hub
    does not hold on a watched account (an older tenant-wide one, a logged-out user's, a
    made-up id) is dropped before any Graph read, at the webhook and again when converted."""
    fake = Fake(bridged=False)
    for sub in ("tenant-wide", "", "../sub"):
        await fake.inbound.accept([_notification("created", subscriptionId=sub)])
    await fake.inbound.accept([{**_notification("created"), "tenantId": "another-tenant"}])
    assert fake.accepted() == []
    fake.watched.clear()  # kept while watched; the login ended before it was converted
    assert await fake.convert() == []
    assert fake.shared.get_chat_info.await_count == 0, "an unbridged chat's members were read"
    assert fake.get.await_count == 0, "an unbridged chat's message was read"


async def test_the_same_change_from_two_watched_accounts_is_kept_once() -> None:
    fake = Fake()
    fake.watched.add("sub-2")
    await fake.inbound.accept([_notification("created", msg="7")])
    await fake.inbound.accept([_notification("created", msg="7", subscriptionId="sub-2")])
    assert len(fake.accepted()) == 1
    # A redelivery by the same subscription is kept (the inbox makes it a no-op if pending).
    await fake.inbound.accept([_notification("created", msg="7")])
    assert len(fake.accepted()) == 2


async def test_channels_and_lifecycle_events_are_not_kept_as_messages() -> None:
    fake = Fake()
    # A channel's notification from a subscription that is not that channel's own (see
    # tests/e2e/test_teams_channels.py for a bridged channel's).
    assert fake.inbound.channels is not None
    fake.inbound.channels.subscriptions.owner = AsyncMock(return_value=None)  # type: ignore[method-assign]
    channel = {**_notification(), "resource": "teams('t')/channels('c')/messages('1')"}
    lifecycle = {"subscriptionId": "sub", "lifecycleEvent": "missed", "clientState": "secret"}
    await fake.inbound.accept([channel, lifecycle])
    assert fake.accepted() == []
    assert fake.ctx.background.call_count == 1


async def test_a_store_that_cannot_keep_it_is_an_error_for_the_webhook() -> None:
    fake = Fake()
    assert not fake.inbound.coverage.period  # no subscription in place yet: nothing proven
    await fake.inbound.subscription_state("tenant-a", True)
    period = fake.inbound.coverage.period
    assert period  # every (the one) tenant's subscription is in place
    await fake.inbound.coverage.write()
    fake.ctx.accept_remote.side_effect = OSError("database unreachable")
    with pytest.raises(OSError):
        await fake.inbound.accept([_notification()])
    # Graph may give up on it: what the period proved ends here, for the next catch-up.
    assert fake.inbound.coverage.period != period
    assert f'"id": "{period}"' in fake.kv["catch-up-periods"]


async def test_notifications_sent_together_are_kept_in_the_order_of_their_messages() -> None:
    """Graph delivers concurrently: the later message's notification can come first."""
    fake = Fake()
    await asyncio.gather(
        fake.inbound.accept([_notification(msg="1700000000002")]),
        fake.inbound.accept([_notification(msg="1700000000001")]),
        fake.inbound.accept([_notification("deleted", msg="1700000000001")]),
    )
    assert [i.dedupe_id for i in fake.accepted()] == [
        "created:1700000000001", "deleted:1700000000001", "created:1700000000002",
    ]  # fmt: skip


async def test_when_storing_fails_every_call_waiting_with_it_is_refused() -> None:
    fake = Fake()
    fake.ctx.accept_remote.side_effect = [True, OSError("database unreachable")]
    first, second, third = await asyncio.gather(
        fake.inbound.accept([_notification(msg="1")]),
        fake.inbound.accept([_notification(msg="2")]),
        fake.inbound.accept([_notification(msg="3")]),
        return_exceptions=True,
    )
    assert first is None and isinstance(second, OSError) and isinstance(third, OSError)
    assert fake.ctx.accept_remote.await_count == 2  # 3 was not tried after 2 failed


async def test_catch_up_is_queued_per_bridged_chat() -> None:
    fake = Fake()
    await fake.inbound.catch_up()
    assert [(i.portal, i.kind) for i in fake.accepted()] == [(portal_key(CHAT), CATCH_UP)]


# --- converting --------------------------------------------------------------------------------


async def test_a_new_message_is_read_from_graph_and_converted() -> None:
    fake = Fake()
    (event,) = await fake.convert()
    assert isinstance(event, RemoteMessage)
    assert event.id == "1" and event.parts[0].text == "Hello" and event.chat_info is None


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [(503, {}, TransientError), (429, {"Retry-After": "7"}, TransientError),
     (500, {}, TransientError), (403, {}, PermanentError), (400, {}, PermanentError)],
)  # fmt: skip
async def test_graph_away_waits_and_a_refusal_is_permanent(
    status: int, headers: dict[str, str], expected: type[Exception]
) -> None:
    fake = Fake()
    fake.get.side_effect = APIError("nope", status, headers)
    with pytest.raises(expected) as raised:
        await fake.convert()
    if status == 429:
        assert isinstance(raised.value, TransientError) and raised.value.retry_after == 7
    if status == 403:
        assert isinstance(raised.value, BridgeError)
        assert raised.value.user_message == APP_REFUSED


async def test_graph_unreachable_is_transient() -> None:
    fake = Fake()
    fake.get.side_effect = ConnectionRefusedError("connect")
    with pytest.raises(TransientError):
        await fake.convert()


async def test_a_message_gone_before_it_was_read_is_nothing() -> None:
    fake = Fake()
    fake.get.side_effect = APIError("gone", 404)
    assert await fake.convert() == []


async def test_a_deleted_message_is_a_redaction_unless_it_came_from_matrix() -> None:
    fake = Fake(stored=_stored())
    fake.get.side_effect = APIError("gone", 404)
    (event,) = await fake.convert("deleted")
    assert isinstance(event, RemoteRedaction) and event.target == "1"
    assert await Fake(stored=_stored("@adele:hub")).convert("deleted") == []


async def test_echoes_of_matrix_messages_are_not_read() -> None:
    fake = Fake(stored=_stored("@adele:hub"))
    assert await fake.convert() == []
    fake = Fake()
    fake.net.sent.add("1")
    assert await fake.convert() == []
    assert fake.get.await_count == 0


async def test_a_chat_without_matrix_members_is_never_read() -> None:
    fake = Fake(bridged=False)
    fake.shared.get_chat_info.return_value = ChatInfo(matrix_users=[])
    assert await fake.convert() == []
    assert fake.get.await_count == 0, "the message of a chat that is not bridged was read"
    fake.shared.get_chat_info.side_effect = PermanentError("403")
    assert await fake.convert() == []


async def test_the_first_message_of_a_chat_with_a_matrix_member_creates_the_portal() -> None:
    fake = Fake(bridged=False)
    (event,) = await fake.convert()
    assert isinstance(event, RemoteMessage) and event.chat_info is not None
    assert event.chat_info.matrix_users == ["@adele:hub"]
    assert event.sender_info is not None and event.sender_info.name == "Alex Wilber (Contoso)"


async def test_a_new_chat_invites_only_the_matrix_users_the_policy_lets_its_tenant_reach() -> None:
    fake = Fake(bridged=False)
    fake.shared.get_chat_info.return_value = ChatInfo(
        matrix_users=["@adele:hub", "@eve:elsewhere.example"]
    )
    (event,) = await fake.convert()
    assert event.chat_info.matrix_users == ["@adele:hub"]  # elsewhere.example: not by default
    # A tenant no rule names reaches nobody: its chat is not bridged, its message not read.
    other = Fake(bridged=False)
    other.ctx.federation = FederationPolicy(
        [{"network": "teams", "remote": ["tenant-b"], "matrix": ["local"]}], "hub"
    )
    assert await other.convert() == []
    other.get.assert_not_awaited()


async def test_an_edit_is_converted_again_by_its_own_input_only() -> None:
    fake = Fake(stored=_stored())
    fake.get.return_value = _message(last_edited_date_time=EDITED)
    assert [type(e) for e in await fake.convert("updated")] == [RemoteEdit]
    # The send failed, or the bridge died: the same input gives the same edit again.
    assert [type(e) for e in await fake.convert("updated")] == [RemoteEdit]
    # Another update (a reaction) of the same edited message is not an edit.
    assert await fake.convert("updated", **{TOKEN: "token-2"}) == []


async def test_catch_up_converts_the_messages_matrix_does_not_have_oldest_first() -> None:
    fake = Fake()
    page = MagicMock(value=[_message("3"), _message("2")], odata_next_link=None)  # newest first
    fake.link.app.chats.by_chat_id.return_value.messages.get = AsyncMock(return_value=page)
    fake.ctx.store.get_message.side_effect = lambda chat, msg: _stored() if msg == "2" else None
    item = RemoteInput(portal=portal_key(CHAT), kind=CATCH_UP, payload={})
    (event,) = await fake.inbound.convert(item)
    assert isinstance(event, RemoteMessage) and event.id == "3"
    fake.link.app.chats.by_chat_id.return_value.messages.get.side_effect = APIError("x", 503)
    with pytest.raises(TransientError):
        await fake.inbound.convert(item)


# --- the table of version 1 --------------------------------------------------------------------


async def test_notifications_of_version_1_are_handed_over_then_the_table_goes(
    store: Store,
) -> None:
    db = store.database
    await db.execute("CREATE TABLE teams_version (version INTEGER PRIMARY KEY)")
    await db.execute("INSERT INTO teams_version (version) VALUES (1)")
    await db.execute(
        "CREATE TABLE teams_notification (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL,"
        " payload TEXT NOT NULL, received_at BIGINT NOT NULL, attempts INTEGER NOT NULL)"
    )
    for n in (1, 2):
        await db.execute(
            "INSERT INTO teams_notification VALUES ($1, 'tenant', $2, 0, 0)",
            n, f'{{"changeType": "created", "resource": "chats(\'{CHAT}\')/messages(\'{n}\')"}}',
        )  # fmt: skip
    teams = TeamsStore(db)
    legacy = await teams.legacy_notifications()
    assert [i["resource"][-5:] for i in legacy] == ["('1')", "('2')"]
    assert {i["tenantId"] for i in legacy} == {"tenant"}
    await teams.upgrade()
    assert await teams.legacy_notifications() == []
    assert await db.fetchval("SELECT version FROM teams_version") == 2
    await teams.upgrade()  # idempotent


async def test_a_new_database_has_no_notification_table(store: Store) -> None:
    teams = TeamsStore(store.database)
    assert await teams.legacy_notifications() == []
    await teams.upgrade()
    with pytest.raises(Exception, match="teams_notification"):
        await store.database.fetchval("SELECT COUNT(*) FROM teams_notification")


async def test_a_catch_up_stops_paging_when_graph_never_stops_sending_next_links() -> None:
    """A broken (or hostile) Graph answering the same page with a nextLink for ever: the walk
    is bounded, nothing is bridged twice, and the room is told that older ones were left."""
    fake = Fake()
    fake.net.cfg.catch_up_messages = 3
    page = MagicMock(value=[_message("3"), _message("2")], odata_next_link="https://graph/next")
    messages = fake.link.app.chats.by_chat_id.return_value.messages
    messages.get = AsyncMock(return_value=page)
    messages.with_url.return_value.get = AsyncMock(return_value=page)
    item = RemoteInput(portal=portal_key(CHAT), kind=CATCH_UP, payload={})
    events = list(await fake.inbound.convert(item))
    assert all(isinstance(e, RemoteMessage) for e in events)
    notice, *bridged = [e for e in events if isinstance(e, RemoteMessage)]
    assert [e.id for e in bridged] == ["2", "3"]
    assert notice.parts[0].notice
    assert messages.with_url.return_value.get.await_count <= 25


async def test_a_subscription_that_could_not_be_renewed_ends_what_is_proven() -> None:
    """While it may have lapsed, Graph may send nothing: no period may claim that time."""
    fake = Fake()
    await fake.inbound.subscription_state("tenant-a", True)
    first = fake.inbound.coverage.period
    await fake.inbound.subscription_state("tenant-a", False)
    assert not fake.inbound.coverage.period
    await fake.inbound.subscription_state("tenant-a", True)
    assert fake.inbound.coverage.period not in ("", first)
