"""Fault injection and the request log, seen through the SDK's own retry handler."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from .conftest import Emulator


async def test_429_with_retry_after_is_retried_by_the_sdk(emulator: Emulator) -> None:
    graph = emulator.app_client()
    await graph.chats.get()  # fetch the token first, so only Graph calls are counted
    path = f"/v1.0/chats/{emulator.chat(0)}/messages"
    await emulator.control(
        "POST", "/faults", {"path": path, "method": "GET", "status": 429, "retryAfter": 1}
    )
    started = time.monotonic()
    page = await graph.chats.by_chat_id(emulator.chat(0)).messages.get()
    assert page is not None and page.value == []
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    seen = emulator.requests(path, "GET")
    assert [r["status"] for r in seen] == [429, 200]
    assert seen[1]["headers"].get("Retry-Attempt") == "1"


async def test_fault_body_and_headers_are_graphs(emulator: Emulator) -> None:
    await emulator.control("POST", "/faults", {"path": "/v1.0/chats", "status": 503, "count": 5})
    token = await emulator.control("POST", "/tokens", {"clientId": emulator.app["clientId"]})
    async with emulator.session.get(
        emulator.graph_url + "/chats", headers={"Authorization": f"Bearer {token['access_token']}"}
    ) as response:
        body = await response.json()
    assert response.status == 503
    assert body["error"]["code"] == "ServiceNotAvailable"
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
    faults = await emulator.control("GET", "/faults")
    assert faults["value"][0]["remaining"] == 4


async def test_sdk_gives_up_after_its_retries(emulator: Emulator) -> None:
    graph = emulator.app_client()
    await graph.chats.get()
    await emulator.control(
        "POST", "/faults", {"path": "/v1.0/chats", "status": 429, "retryAfter": 1, "count": 10}
    )
    await emulator.control("DELETE", "/requests")
    # One retry instead of the default three keeps the test short.
    config = RequestConfiguration[Any](options=[RetryHandlerOption(delay=0, max_retries=1)])
    with pytest.raises(ODataError) as caught:
        await graph.chats.get(config)
    assert caught.value.response_status_code == 429
    assert len(emulator.requests("/v1.0/chats")) == 2
