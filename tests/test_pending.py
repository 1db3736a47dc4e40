"""A row that waits for ever (its network or room never comes back) can be set aside by an
operator, while the bridge runs: its portal goes on with the next row, and the row is a dead
letter that can be retried later. Both engines; the CLI as an operator types it."""

from __future__ import annotations

import asyncio

import pytest

from bridge.core.cli import main
from bridge.portal.models import RemoteInput
from bridge.portal.pending import PARKED_BY_OPERATOR, PendingRows, parse_ref
from bridge.portal.store import Store
from tests.test_cli_dead_letters import out_and_err
from tests.test_dead_letters import pdu
from tests.test_remote_inbox import CHAT, NET, Client, Hub

pytestmark = pytest.mark.usefixtures("no_pontis_env")


async def pontis(config: str, *args: str) -> int:
    return await asyncio.to_thread(main, ["-c", config, "pending", *args], factories={})


async def test_a_row_set_aside_while_waiting_lets_its_portal_go_on(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    stuck = hub.homeserver.handle

    async def room_gone(event, client):  # type: ignore[no-untyped-def]
        if str(event.id) == "stuck":
            raise OSError("502 from the homeserver for this room")  # an outage, for ever
        await stuck(event, client)

    hub.homeserver.handle = room_gone  # type: ignore[method-assign]
    await hub.accept("stuck")
    await hub.accept("behind")
    await asyncio.sleep(0.3)
    assert hub.homeserver.sent == [], "the portal waits behind the stuck row"
    [row] = [r for r in await PendingRows(store).oldest() if r.ref.startswith("n")][:1]
    letter_id = await PendingRows(store).park(row.ref)
    assert letter_id is not None
    async with asyncio.timeout(5):
        await hub.queues.drain()
    assert hub.homeserver.sent == [(CHAT, "behind")]
    assert not hub.notices, "the operator knows; the room gets no failure notice"
    letter = await store.dead_letters.get(letter_id)
    assert letter is not None and letter.error == PARKED_BY_OPERATOR and not letter.to_network
    assert await hub.emptied()


async def test_park_names_nothing_else(store: Store) -> None:
    rows = PendingRows(store)
    [matrix_row] = await store.store_transaction("t1", [pdu("$waiting")]) or []
    await store.remote_inbox.add(
        RemoteInput(portal=CHAT, kind="message", payload={"text": "x"}, dedupe_id="x")
    )
    listed = await rows.oldest()
    assert [r.ref[0] for r in listed] == ["m", "n"] and await rows.count() == 2
    assert await rows.park("m999999") is None and await rows.park("n999999") is None
    for bad in ("", "m", "x12", "12", "m-1", "n1 ", "m1;DROP"):
        with pytest.raises(ValueError):
            parse_ref(bad)
    assert await rows.count() == 2, "nothing changed"
    letter_id = await rows.park(f"m{matrix_row.id}")
    assert letter_id is not None and await rows.count() == 1
    letter = await store.dead_letters.get(letter_id)
    assert letter is not None and letter.to_network and letter.event_id == "$waiting"


async def test_the_cli_lists_and_sets_aside(
    store: Store, cli_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    [row] = await store.store_transaction("t1", [pdu("$waiting")]) or []
    await store.record_inbox_failure(row.id, "xmpp: remote-server-not-found")
    assert await pontis(cli_config, "list") == 0
    out, _ = out_and_err(capsys)
    assert out[-1] == "1 pending"
    assert out[0].startswith(f"m{row.id}  Matrix → network") and "remote-server-not-found" in out[0]

    assert await pontis(cli_config, "park", "bogus") == 1
    _, err = out_and_err(capsys)
    assert "not a pending row" in err[0]
    assert await pontis(cli_config, "park") == 1
    assert await pontis(cli_config, "park", f"m{row.id}") == 0
    out, _ = out_and_err(capsys)
    assert out[0].startswith(f"Set m{row.id} aside as dead letter ")
    assert await pontis(cli_config, "park", f"m{row.id}") == 1  # not pending any more
    _, err = out_and_err(capsys)
    assert "is not pending" in err[0]
    assert await PendingRows(store).count() == 0 and await store.dead_letters.count() == 1
