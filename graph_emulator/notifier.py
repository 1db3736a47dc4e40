"""Outbound webhooks: the validation handshake, change notifications, lifecycle events.

Graph POSTs a ``changeNotificationCollection`` to each matching subscription's
``notificationUrl`` and retries for hours while the receiver fails; the emulator retries after
``config.retry_delays`` and then gives up. Every attempt is recorded so tests can assert what
the bridge was sent and how it answered.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from yarl import URL

from .config import EmulatorConfig
from .odata import iso, new_guid
from .resources import covers, parse_resource
from .shapes import message_resource
from .state import EmulatorState, Message, Subscription
from .teamwork import ChangeType

log = logging.getLogger(__name__)

LifecycleEvent = Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]
LIFECYCLE_EVENTS: tuple[LifecycleEvent, ...] = (
    "reauthorizationRequired",
    "subscriptionRemoved",
    "missed",
)


@dataclass(slots=True)
class Delivery:
    """One notification POST and its attempts, as /_emulator/notifications shows it."""

    id: str
    kind: Literal["change", "lifecycle"]
    url: str
    subscription_id: str
    payload: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    state: Literal["pending", "delivered", "failed"] = "pending"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "url": self.url,
            "subscriptionId": self.subscription_id,
            "payload": self.payload,
            "attempts": self.attempts,
            "state": self.state,
        }


class Notifier:
    def __init__(self, state: EmulatorState, config: EmulatorConfig) -> None:
        self.state = state
        self.config = config
        self.deliveries: list[Delivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the notifier is not started")
        return self._session

    def reset(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.deliveries.clear()

    async def idle(self) -> None:
        """Wait until no delivery is in flight (for tests and the control API)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- validation handshake -----------------------------------------------------------------

    async def validate(self, url: str) -> str | None:
        """Graph's handshake: POST ``?validationToken=…`` and expect a 200 text/plain echo within
        the timeout. Returns why it failed, or None."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {new_guid()}"
        target = URL(url).update_query({"validationToken": token})
        timeout = aiohttp.ClientTimeout(total=self.config.validation_timeout)
        try:
            async with self.session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=timeout,
            ) as response:
                text = await response.text()
                if response.status != 200:
                    return f"the endpoint answered HTTP {response.status}"
                if response.content_type != "text/plain":
                    return f"the endpoint answered Content-Type {response.content_type!r}, not text/plain"
                if text != token:
                    return "the endpoint did not echo the validationToken"
        except TimeoutError:
            return f"the endpoint did not answer within {self.config.validation_timeout:g} s"
        except aiohttp.ClientError as exc:
            return f"the endpoint could not be reached ({exc})"
        return None

    # -- change notifications -----------------------------------------------------------------

    def on_change(self, change: ChangeType, message: Message) -> None:
        """Teamwork listener: queue a notification for every live subscription that covers it."""
        for sub in self.state.live_subscriptions():
            if change not in sub.change_types:
                continue
            target = parse_resource(sub.resource)
            if target.kind == "user_chats" and target.first == "me":
                target = type(target)(target.kind, sub.user_id)
            if not covers(target, sub.tenant_id, message):
                continue
            resource = message_resource(message)
            item: dict[str, Any] = {
                "id": None,
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": iso(sub.expires),
                "changeType": change,
                "resource": resource,
                "resourceData": {
                    "id": message.id,
                    "@odata.type": "#Microsoft.Graph.chatMessage",
                    "@odata.id": resource,
                },
                "clientState": sub.client_state,
                "tenantId": sub.tenant_id,
            }
            if sub.paused:
                sub.held.append(item)
            else:
                self._send("change", sub.notification_url, sub.id, {"value": [item]})

    def resume(self, sub: Subscription) -> None:
        """After reauthorization: deliver what was held back while the subscription was paused."""
        sub.paused = False
        held, sub.held = sub.held, []
        for item in held:
            item["subscriptionExpirationDateTime"] = iso(sub.expires)
            self._send("change", sub.notification_url, sub.id, {"value": [item]})

    def lifecycle(self, sub: Subscription, event: LifecycleEvent) -> Delivery | None:
        """Send a lifecycle event; without a lifecycleNotificationUrl Graph sends none."""
        if event == "reauthorizationRequired":
            sub.paused = True
        if sub.lifecycle_url is None:
            return None
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": iso(sub.expires),
            "tenantId": sub.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        return self._send("lifecycle", sub.lifecycle_url, sub.id, {"value": [item]})

    def _send(
        self, kind: Literal["change", "lifecycle"], url: str, sub_id: str, payload: dict[str, Any]
    ) -> Delivery:
        delivery = Delivery(new_guid(), kind, url, sub_id, payload)
        self.deliveries.append(delivery)
        task = asyncio.get_running_loop().create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    async def _deliver(self, delivery: Delivery) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.delivery_timeout)
        delays = (0.0, *self.config.retry_delays)
        for attempt, delay in enumerate(delays, start=1):
            if delay:
                await asyncio.sleep(delay)
            record: dict[str, Any] = {"at": iso(self.state.now())}
            delivery.attempts.append(record)
            try:
                async with self.session.post(
                    delivery.url, json=delivery.payload, timeout=timeout
                ) as response:
                    record["status"] = response.status
                    if 200 <= response.status < 300:
                        delivery.state = "delivered"
                        return
            except TimeoutError:
                record["error"] = f"no answer within {self.config.delivery_timeout:g} s"
            except aiohttp.ClientError as exc:
                record["error"] = str(exc) or type(exc).__name__
            if attempt < len(delays):
                log.info(
                    "Notification %s to %s failed (%s); retrying in %g s",
                    delivery.id,
                    delivery.url,
                    record.get("error", record.get("status")),
                    delays[attempt],
                )
        delivery.state = "failed"
        log.warning(
            "Notification %s to %s dropped after %d attempts",
            delivery.id,
            delivery.url,
            len(delays),
        )
