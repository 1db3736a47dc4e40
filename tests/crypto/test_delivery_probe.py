"""The delivery probe is sent again until it comes back: Synapse drops to-device events for an
appservice it holds as down, so the first probe may never arrive although the settings are right."""

from __future__ import annotations

import asyncio

from bridge.crypto import probe as probe_module
from bridge.crypto.probe import PROBE_TYPE, DeliveryProbe


async def test_a_dropped_probe_is_sent_again_until_it_arrives(monkeypatch) -> None:
    monkeypatch.setattr(probe_module, "RESEND_SECONDS", 0.05)
    probe = DeliveryProbe()
    sent = 0

    async def send() -> None:
        nonlocal sent
        sent += 1
        if sent < 3:
            return  # the homeserver held us as down: dropped
        asyncio.get_running_loop().call_soon(_deliver, probe)

    await probe.run(send, 5.0)
    assert sent == 3
    assert probe.problems() == []


async def test_a_probe_that_never_arrives_names_both_settings(monkeypatch) -> None:
    monkeypatch.setattr(probe_module, "RESEND_SECONDS", 0.05)
    probe = DeliveryProbe()
    sent = 0

    async def send() -> None:
        nonlocal sent
        sent += 1

    await probe.run(send, 0.3)
    assert sent >= 3
    assert len(probe.problems()) == 2


async def test_a_probe_with_another_nonce_does_not_count() -> None:
    probe = DeliveryProbe()
    probe.observe("otk_count", {})
    assert probe.observe("to_device", {"type": PROBE_TYPE, "content": {"nonce": "forged"}})
    assert not probe.done.is_set()
    assert len(probe.problems()) == 1


def _deliver(probe: DeliveryProbe) -> None:
    probe.observe("to_device", {"type": PROBE_TYPE, "content": probe.content()})
    probe.observe("otk_count", {"@bot:hub": {"DEVICE": {"signed_curve25519": 50}}})
