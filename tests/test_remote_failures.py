"""What the room sees when a remote event cannot be bridged after the core's retries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from bridge.core.errors import PermanentError, TransientError
from bridge.core.events import MessagePart, RemoteMessage, RemoteReceipt, RemoteTyping
from bridge.core.ids import NetworkID, PortalKey, RemoteChatID, RemoteMessageID, RemoteUserID
from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.retry import RetryPolicy
from bridge.core.router import Router
from bridge.portal.models import Portal
from bridge.portal.store import Store

NET = NetworkID("mail")
KEY = PortalKey(NET, RemoteChatID("room"))


def _router(store: Store, failure: Exception) -> tuple[Router, AsyncMock]:
    matrix = MagicMock()
    matrix.bot_mxid = "@bot:hub.test"
    matrix.send = AsyncMock(return_value="$notice")
    portals = MagicMock(room_keys={})
    portals.find_portal = AsyncMock(return_value=Portal(NET, KEY.remote_id, mxid="!room:hub"))
    portals.handle = AsyncMock(side_effect=failure)
    router = Router(
        store=store, matrix=matrix, portals=portals, connectors={},
        permissions=MagicMock(spec=Permissions), metrics=Metrics(),
        retry=RetryPolicy(attempts=2, backoff=0), queue_size=100, domain="hub.test",
        log=logging.getLogger("test"),
    )  # fmt: skip
    router.client_for = MagicMock()  # type: ignore[method-assign]
    return router, matrix.send


def _event() -> RemoteMessage:
    return RemoteMessage(
        portal=KEY, id=RemoteMessageID("m1"), sender=RemoteUserID("someone"),
        parts=[MessagePart(text="hello")],
    )  # fmt: skip


def _notices(send: AsyncMock) -> list[str]:
    return [call.args[2]["body"] for call in send.await_args_list]


async def test_a_waiting_caller_gets_a_transient_error_and_the_room_no_notice(
    store: Store,
) -> None:
    router, send = _router(store, TransientError("homeserver busy"))
    with pytest.raises(TransientError):
        await router.submit_remote_event(NET, _event(), wait=True, last_attempt=False)
    assert _notices(send) == []  # the mail server keeps the mail and offers it again


async def test_a_permanent_failure_is_shown_in_the_room_even_to_a_waiting_caller(
    store: Store,
) -> None:
    router, send = _router(store, PermanentError("bad", user_message="it is too large"))
    with pytest.raises(PermanentError):
        await router.submit_remote_event(NET, _event(), wait=True)
    assert _notices(send) == [
        "A message from the remote side could not be bridged: it is too large"
    ]


async def test_a_queued_event_that_keeps_failing_is_shown_in_the_room(store: Store) -> None:
    router, send = _router(store, TransientError("homeserver busy"))
    await router.submit_remote_event(NET, _event(), wait=False)
    async with asyncio.timeout(5):
        while not send.await_args_list:
            await asyncio.sleep(0.01)
    assert _notices(send) == [
        "A message from the remote side could not be bridged: The remote network is not"
        " reachable right now; the bridge kept retrying."
    ]


async def test_a_waiting_callers_last_attempt_is_shown_in_the_room(store: Store) -> None:
    router, send = _router(store, TransientError("homeserver busy"))
    with pytest.raises(TransientError):
        await router.submit_remote_event(NET, _event(), wait=True, last_attempt=False)
    assert _notices(send) == []
    with pytest.raises(TransientError):
        await router.submit_remote_event(NET, _event(), wait=True, last_attempt=True)
    assert len(_notices(send)) == 1


async def test_an_unexpected_error_is_handed_back_like_a_transient_one(store: Store) -> None:
    """The mail server retries after any 451, so the room must not hear of each try."""
    router, send = _router(store, RuntimeError("database went away"))
    with pytest.raises(RuntimeError):
        await router.submit_remote_event(NET, _event(), wait=True, last_attempt=False)
    assert _notices(send) == []


async def test_a_message_a_connector_gives_up_on_is_shown_in_its_room(store: Store) -> None:
    router, send = _router(store, TransientError("unused"))
    await router.remote_message_lost(NET, KEY, TransientError("Graph kept answering 503"))
    assert _notices(send) == [
        "A message from the remote side could not be bridged: The remote network is not"
        " reachable right now; the bridge kept retrying."
    ]


async def test_typing_and_receipts_are_tried_once_and_never_noticed(store: Store) -> None:
    """While the homeserver is away, a chat state must not hold the portal's messages up behind
    its retries, nor end as a "could not be bridged" notice: it is worth one try."""
    router, send = _router(store, TransientError("homeserver unreachable"))
    portals: Any = router.portals
    for _ in range(500):  # a chatty contact during a long outage: more than the queue holds
        await router.submit_remote_event(
            NET, RemoteTyping(portal=KEY, sender=RemoteUserID("someone"), timeout_ms=5000),
            wait=False,
        )  # fmt: skip
    await router.submit_remote_event(
        NET, RemoteReceipt(portal=KEY, sender=RemoteUserID("someone"), up_to=RemoteMessageID("m")),
        wait=False,
    )  # fmt: skip
    async with asyncio.timeout(5):
        await router.queues.drain()
    assert _notices(send) == []
    assert portals.handle.await_count <= 101, "one try each, and a full portal drops the rest"
