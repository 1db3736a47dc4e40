"""Mail from Matrix at the worst moments: the store or the relay goes away between copies, and
what is kept as the record of a sent mail must be the bytes the relay got.

The gateway runs with the real store (SQLite and PostgreSQL); the relay is a recorder, or a
real aiosmtpd server behind the bridge's own :class:`~bridge.email.outbound.Relay`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any, cast

import pytest

from bridge.core import MatrixMessage, TransientError
from bridge.email.client import EmailGateway
from bridge.email.ids import NETWORK, portal_key
from bridge.email.outbound import Relay
from bridge.email.records import DIRECTION_OUT, Records
from bridge.email.store import EmailStore
from bridge.portal.models import Portal
from bridge.portal.store import Store
from tests.email.test_recipients import (
    ROOM,
    A,
    B,
    C,
    Core,
    RecordingRelay,
    _say,
    gateway_parts,
)
from tests.email.test_relay_smtputf8 import JUERGEN, Utf8Relay, _relay_for


class FlakyRelay(RecordingRelay):
    """Goes away (4xx, connection lost) for the ``away``-th copy it is handed."""

    def __init__(self, away: int) -> None:
        super().__init__()
        self.away = away
        self.calls = 0

    async def send(self, message: EmailMessage, *, sender: str,
                   recipients: list[str]) -> dict[str, str]:  # fmt: skip
        self.calls += 1
        if self.calls == self.away:
            raise TransientError("relay 127.0.0.1:25 not usable: connection lost")
        return await super().send(message, sender=sender, recipients=recipients)


Parts = tuple[EmailGateway, Core, RecordingRelay, EmailStore]


@pytest.fixture
async def parts(store: Store) -> Parts:
    return await gateway_parts(store)


def _envelopes(relay: RecordingRelay) -> list[str]:
    return [rcpt for _, envelope, _ in relay.sent for rcpt in envelope]


async def test_a_store_outage_after_a_copy_went_out_sends_no_copy_twice(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore],
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway, _, relay, email_store = parts
    for contact in (A, B, C):
        await email_store.add_contact(ROOM, contact)
    keep, calls = gateway._records.keep, [0]

    async def flaky_keep(*args: Any, **kwargs: Any) -> str:
        calls[0] += 1
        if calls[0] == 2:  # the store blips after the second copy is with the relay
            raise ConnectionError("database away")
        return await keep(*args, **kwargs)

    monkeypatch.setattr(gateway._records, "keep", flaky_keep)
    message_id = await _say(gateway, store, "Hello", event_id="$x")  # not raised: no retry
    assert _envelopes(relay) == [A, B, C]
    # Were the core to retry it anyway, nobody gets a second copy.
    await gateway.handle_matrix_message(_matrix("$x"))
    assert _envelopes(relay) == [A, B, C]
    assert len(await Records(email_store).find(message_id)) == 2  # the failed one is logged


async def test_a_relay_outage_between_copies_sends_the_rest_on_retry(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    gateway, _, _, email_store = parts
    for contact in (A, B, C):
        await email_store.add_contact(ROOM, contact)
    relay = FlakyRelay(away=2)
    gateway._relay = cast(Any, relay)
    with pytest.raises(TransientError):  # the portal waits for the relay, then retries
        await _say(gateway, store, "Hello", event_id="$x")
    assert _envelopes(relay) == [A]
    await _say(gateway, store, "Hello", event_id="$x")
    assert _envelopes(relay) == [A, B, C]  # only the missing copies, none dropped


def _matrix(message_id: str) -> MatrixMessage:
    portal = Portal(network=NETWORK, remote_id=portal_key(ROOM).remote_id, mxid="!room:hub.test")
    return MatrixMessage(portal=portal, event_id=message_id, sender="@alice:hub.test",
                         timestamp=0, body="Hello", sender_name="Alice")  # fmt: skip


@pytest.fixture
async def utf8_relay() -> AsyncIterator[tuple[Utf8Relay, Relay]]:
    async for pair in _relay_for(True):
        yield pair


@pytest.mark.parametrize("contact", [A, JUERGEN], ids=["ascii", "smtputf8"])
async def test_the_record_of_a_sent_mail_is_the_bytes_the_relay_got(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore],
    store: Store,
    utf8_relay: tuple[Utf8Relay, Relay],
    contact: str,
) -> None:
    gateway, _, _, email_store = parts
    fake, relay = utf8_relay
    gateway._relay = relay
    await email_store.add_contact(ROOM, contact)
    message_id = await _say(gateway, store, "Grüße", event_id="$u")
    [(_, rcpts, _, wire)] = fake.mails
    [ref] = await Records(email_store).find(message_id)
    assert rcpts == [contact] and ref.direction == DIRECTION_OUT
    assert ref.sha256 == hashlib.sha256(wire).hexdigest()
    assert await Records(email_store).raw(ref.sha256) == wire
