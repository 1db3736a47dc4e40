"""Change notifications: the validation handshake, delivery, retries and lifecycle events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription

from .conftest import Emulator, Receiver


def _in(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def _subscription(
    receiver: Receiver, resource: str, minutes: float = 50, **extra: object
) -> Subscription:
    return Subscription(
        change_type="created,updated,deleted",
        notification_url=receiver.url("/notify?portal=1"),
        resource=resource,
        expiration_date_time=_in(minutes),
        client_state="s3cr3t-state",
        **extra,  # type: ignore[arg-type]
    )


async def test_create_runs_the_validation_handshake(emulator: Emulator, receiver: Receiver) -> None:
    graph = emulator.app_client()
    sub = await graph.subscriptions.post(
        _subscription(
            receiver,
            f"/chats/{emulator.chat(0)}/messages",
            lifecycle_notification_url=receiver.url("/life"),
        )
    )
    assert sub is not None and sub.id is not None
    assert sub.client_state == "s3cr3t-state"
    assert sub.application_id == emulator.app["clientId"]
    assert sub.expiration_date_time is not None
    # Both URLs were validated; aiohttp hands the receiver the URL-decoded token.
    assert len(receiver.validations) == 2
    assert all(
        v.startswith("Validation: Testing client application reachability")
        for v in receiver.validations
    )


async def test_handshake_failure_is_graphs_400(emulator: Emulator, receiver: Receiver) -> None:
    receiver.echo = False
    graph = emulator.app_client()
    with pytest.raises(ODataError) as caught:
        await graph.subscriptions.post(_subscription(receiver, "/chats/getAllMessages"))
    assert caught.value.response_status_code == 400
    assert caught.value.error is not None and caught.value.error.message is not None
    assert caught.value.error.message.startswith("Subscription validation request failed")
    assert emulator.services.state.subscriptions == {}


@pytest.mark.parametrize(
    ("minutes", "lifecycle", "fragment"),
    [(90, False, "lifecycleNotificationUrl is a required property"), (4400, True, "4320 minutes")],
)
async def test_expiration_limits(
    emulator: Emulator, receiver: Receiver, minutes: int, lifecycle: bool, fragment: str
) -> None:
    graph = emulator.app_client()
    extra = {"lifecycle_notification_url": receiver.url("/life")} if lifecycle else {}
    with pytest.raises(ODataError) as caught:
        await graph.subscriptions.post(
            _subscription(receiver, "/chats/getAllMessages", minutes, **extra)
        )
    assert caught.value.response_status_code == 400
    assert caught.value.error is not None and fragment in (caught.value.error.message or "")
    assert receiver.validations == []  # refused before any handshake


async def test_rich_notifications_need_a_certificate(
    emulator: Emulator, receiver: Receiver
) -> None:
    graph = emulator.app_client()
    with pytest.raises(ODataError) as caught:
        await graph.subscriptions.post(
            _subscription(receiver, "/chats/getAllMessages", include_resource_data=True)
        )
    assert caught.value.response_status_code == 400


async def test_delegated_token_cannot_watch_the_whole_tenant(
    emulator: Emulator, receiver: Receiver
) -> None:
    graph = emulator.user_client("adele")
    with pytest.raises(ODataError) as caught:
        await graph.subscriptions.post(_subscription(receiver, "/chats/getAllMessages"))
    assert caught.value.response_status_code == 403


async def test_teams_user_post_notifies_with_client_state(
    emulator: Emulator, receiver: Receiver
) -> None:
    graph = emulator.app_client()
    sub = await graph.subscriptions.post(_subscription(receiver, "/chats/getAllMessages"))
    assert sub is not None
    posted = await emulator.post_as("alex", emulator.chat(0), "<p>news</p>")
    [item] = await receiver.wait_for(1)
    assert item["subscriptionId"] == sub.id
    assert item["clientState"] == "s3cr3t-state"
    assert item["changeType"] == "created"
    assert item["tenantId"] == emulator.tenant_id
    assert item["resource"] == f"chats('{emulator.chat(0)}')/messages('{posted['id']}')"
    assert item["resourceData"] == {
        "id": posted["id"],
        "@odata.type": "#Microsoft.Graph.chatMessage",
        "@odata.id": item["resource"],
    }
    # The query string of notificationUrl is kept on delivery.
    assert emulator.services.notifier.deliveries[0].url.endswith("/notify?portal=1")


async def test_edits_and_deletes_arrive_as_updated_and_deleted(
    emulator: Emulator, receiver: Receiver
) -> None:
    graph = emulator.app_client()
    await graph.subscriptions.post(
        _subscription(receiver, f"/users/{emulator.user('alex')['id']}/chats/getAllMessages")
    )
    posted = await emulator.post_as("alex", emulator.chat(0), "v1")
    path = f"/chats/{emulator.chat(0)}/messages/{posted['id']}"
    alex = emulator.user("alex")["id"]
    await emulator.control("PATCH", path, {"as": alex, "content": "v2"})
    await emulator.control("POST", path + "/setReaction", {"as": alex, "reactionType": "❤️"})
    await emulator.control("POST", path + "/softDelete", {"as": alex})
    items = await receiver.wait_for(4)
    assert sorted(i["changeType"] for i in items) == ["created", "deleted", "updated", "updated"]


async def test_other_chats_do_not_notify(emulator: Emulator, receiver: Receiver) -> None:
    graph = emulator.app_client()
    await graph.subscriptions.post(_subscription(receiver, f"/chats/{emulator.chat(1)}/messages"))
    await emulator.post_as("alex", emulator.chat(0), "elsewhere")
    await emulator.post_as("megan", emulator.chat(1), "here")
    await emulator.services.notifier.idle()
    assert len(receiver.items()) == 1


async def test_failed_delivery_is_retried(emulator: Emulator, receiver: Receiver) -> None:
    graph = emulator.app_client()
    await graph.subscriptions.post(_subscription(receiver, "/chats/getAllMessages"))
    receiver.fail_next = 2
    await emulator.post_as("alex", emulator.chat(0), "persist me")
    await receiver.wait_for(1)
    assert receiver.failures == 2
    deliveries = await emulator.control("GET", "/notifications?wait=1")
    [delivery] = deliveries["value"]
    assert [a.get("status") for a in delivery["attempts"]] == [500, 500, 202]
    assert delivery["state"] == "delivered"


async def test_delivery_gives_up_after_the_configured_retries(
    emulator: Emulator, receiver: Receiver
) -> None:
    graph = emulator.app_client()
    await graph.subscriptions.post(_subscription(receiver, "/chats/getAllMessages"))
    receiver.fail_next = 100
    await emulator.post_as("alex", emulator.chat(0), "lost")
    await emulator.services.notifier.idle()
    [delivery] = emulator.services.notifier.deliveries
    assert delivery.state == "failed" and len(delivery.attempts) == 4


async def test_reauthorization_required_pauses_until_reauthorize(
    emulator: Emulator, receiver: Receiver
) -> None:
    graph = emulator.app_client()
    sub = await graph.subscriptions.post(
        _subscription(
            receiver, "/chats/getAllMessages", 600, lifecycle_notification_url=receiver.url("/life")
        )
    )
    assert sub is not None and sub.id is not None
    await emulator.control(
        "POST", f"/subscriptions/{sub.id}/lifecycle", {"event": "reauthorizationRequired"}
    )
    [event] = await receiver.wait_for(1, "/life")
    assert event["lifecycleEvent"] == "reauthorizationRequired"
    assert event["subscriptionId"] == sub.id and event["clientState"] == "s3cr3t-state"

    await emulator.post_as("alex", emulator.chat(0), "held back")
    await emulator.services.notifier.idle()
    assert receiver.items() == []
    await graph.subscriptions.by_subscription_id(sub.id).reauthorize.post()
    [item] = await receiver.wait_for(1)
    assert item["changeType"] == "created"


async def test_subscription_removed_deletes_it(emulator: Emulator, receiver: Receiver) -> None:
    graph = emulator.app_client()
    sub = await graph.subscriptions.post(
        _subscription(
            receiver, "/chats/getAllMessages", lifecycle_notification_url=receiver.url("/life")
        )
    )
    assert sub is not None and sub.id is not None
    await emulator.control(
        "POST", f"/subscriptions/{sub.id}/lifecycle", {"event": "subscriptionRemoved"}
    )
    [event] = await receiver.wait_for(1, "/life")
    assert event["lifecycleEvent"] == "subscriptionRemoved"
    with pytest.raises(ODataError) as caught:
        await graph.subscriptions.by_subscription_id(sub.id).get()
    assert caught.value.response_status_code == 404


async def test_renew_list_delete_and_expiry(emulator: Emulator, receiver: Receiver) -> None:
    graph = emulator.app_client()
    sub = await graph.subscriptions.post(_subscription(receiver, "/chats/getAllMessages", 30))
    assert sub is not None and sub.id is not None
    renewed = await graph.subscriptions.by_subscription_id(sub.id).patch(
        Subscription(expiration_date_time=_in(55))
    )
    assert renewed is not None and renewed.expiration_date_time is not None
    assert renewed.expiration_date_time > _in(50)
    listed = await graph.subscriptions.get()
    assert listed is not None and [s.id for s in listed.value or []] == [sub.id]

    other = await graph.subscriptions.post(
        _subscription(receiver, f"/chats/{emulator.chat(0)}/messages", 10)
    )
    assert other is not None and other.id is not None
    await graph.subscriptions.by_subscription_id(sub.id).delete()
    await emulator.control("POST", "/clock", {"advanceSeconds": 11 * 60})
    await asyncio.sleep(0.1)
    listed = await graph.subscriptions.get()
    assert listed is not None and listed.value == []
