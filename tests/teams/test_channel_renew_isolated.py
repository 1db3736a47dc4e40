"""One channel Graph refuses must not stop the others' subscriptions from being renewed: a
deleted channel (its subscription gone, making it again refused) is logged and skipped, every
other channel is still renewed or made again, what was made is saved and the lost channels
are still caught up."""

from __future__ import annotations

import json
import logging
import time
import types
from typing import Any

from kiota_abstractions.api_error import APIError

from bridge.teams.channel_subscriptions import ChannelSubscriptions

PORTALS = [
    "channel:aaaa:19:a@thread.tacv2",
    "channel:bbbb:19:gone@thread.tacv2",
    "channel:cccc:19:c@thread.tacv2",
]


def _error(status: int) -> APIError:
    err = APIError()
    err.response_status_code = status
    return err


class _Store:
    def __init__(self) -> None:
        self.kv: dict[str, str] = {}

    async def kv_get(self, key: str) -> str | None:
        return self.kv.get(key)

    async def kv_set(self, key: str, value: str) -> None:
        self.kv[key] = value

    async def list_portals(self) -> list[Any]:
        return [types.SimpleNamespace(remote_id=p, mxid="!room:hub") for p in PORTALS]


class _Graph:
    """Subscriptions: S-a renewed, S-gone and S-c forgotten; the deleted channel (gone)
    refuses both renewal (403 here: not a 404) and creation."""

    def __init__(self, patch_status: int) -> None:
        self.patch_status = patch_status
        self.calls: list[tuple[str, str]] = []
        self.made = 0

    def by_subscription_id(self, sub_id: str) -> Any:
        graph = self

        class _Sub:
            async def patch(self, body: Any) -> None:
                graph.calls.append(("patch", sub_id))
                if sub_id == "S-gone":
                    raise _error(graph.patch_status)
                if sub_id == "S-c":
                    raise _error(404)

            async def delete(self) -> None:
                graph.calls.append(("delete", sub_id))

        return _Sub()

    async def post(self, sub: Any) -> Any:
        self.calls.append(("create", sub.resource))
        if "gone" in sub.resource:
            raise _error(404)
        self.made += 1
        return types.SimpleNamespace(id=f"new{self.made}")


def _subscriptions(graph: _Graph) -> tuple[ChannelSubscriptions, _Store, list[str]]:
    store = _Store()
    entries = {}
    for p in PORTALS:
        name = p.split(":")[3].split("@")[0]
        entries[p] = {"id": f"S-{name}", "tenant": "t", "since": time.time()}
    store.kv["channel-subscriptions"] = json.dumps(entries)
    link = types.SimpleNamespace(id="t", app=types.SimpleNamespace(subscriptions=graph))

    async def tenant_for_chat(portal_id: str) -> Any:
        return link

    net = types.SimpleNamespace(
        ctx=types.SimpleNamespace(store=store, log=logging.getLogger("test.renew")),
        cfg=types.SimpleNamespace(
            subscription_minutes=60,
            notification_url="https://hub/n",
            lifecycle_url="https://hub/l",
        ),
        tenant_for_chat=tenant_for_chat,
    )
    subs = ChannelSubscriptions(net, "state")  # type: ignore[arg-type]
    missed: list[str] = []

    async def on_missed(portal_id: str) -> None:
        missed.append(portal_id)

    subs.missed = on_missed
    return subs, store, missed


async def test_a_refused_renewal_does_not_stop_the_other_channels() -> None:
    graph = _Graph(patch_status=403)
    subs, store, missed = _subscriptions(graph)
    assert await subs.renew() is False  # the loop retries soon
    assert ("patch", "S-c") in graph.calls  # the channel after the refused one is renewed
    assert ("create", "/teams/cccc/channels/19:c@thread.tacv2/messages") in graph.calls
    saved = json.loads(store.kv["channel-subscriptions"])
    assert saved[PORTALS[2]]["id"] == "new1"  # what was made again is saved
    assert saved[PORTALS[1]]["id"] == "S-gone"  # the refused one is kept for the next try
    assert missed == [PORTALS[2]]  # the channel whose subscription was lost is caught up


async def test_a_deleted_channel_whose_subscription_cannot_be_made_again() -> None:
    graph = _Graph(patch_status=404)
    subs, store, missed = _subscriptions(graph)
    assert await subs.renew() is False
    assert ("patch", "S-c") in graph.calls
    saved = json.loads(store.kv["channel-subscriptions"])
    assert saved[PORTALS[2]]["id"] == "new1"
    assert missed == [PORTALS[2]]
