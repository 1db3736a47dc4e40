"""A component the real Prosody refuses (a wrong secret) backs off instead of knocking twice a
second for ever (issue #14, item 6), and comes up once the server accepts it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from tests.e2e.hub import eventually
from tests.e2e.prosody import ProsodyServer

pytestmark = pytest.mark.e2e


async def _nothing(*_: Any) -> None:
    return None


async def test_a_refused_component_backs_off(tmp_path: Path) -> None:
    domain = "refused.xmpp.test"
    async with ProsodyServer(tmp_path, components={domain: "the-right-secret"}) as server:
        cfg = XmppConfig(jid=domain, host=server.host, port=server.component_port,
                         secret="a-wrong-secret", rooms_domain="", upload_service="",
                         muc_nick="bridge", history_on_join=0, max_file_bytes=1000)  # fmt: skip
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(0.05)  # the real server is asked again at once, to save time

        component = Component(domain, cfg, logging.getLogger("test.xmpp.refused"),
                              on_stanza=_nothing, on_state=_nothing, sleep=sleep)  # fmt: skip
        component.start()
        try:
            await eventually(lambda: len(waits) >= 4, "four refusals", timeout=30)
            assert waits[:4] == [1, 2, 4, 8]
            assert not component.up
            component.xmpp.secret = "the-right-secret"  # the operator fixes the config
            await eventually(lambda: component.up, "the component accepted", timeout=30)
        finally:
            await component.stop()
