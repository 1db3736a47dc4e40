"""Nothing XMPP hands the hub is lost (issue #10): a SIGKILL of the bridge, a homeserver that is
away for a minute, an XMPP server that is away for longer than the old retry budget.

Each test stops a server (or the bridge) of the shared hub and restores it in ``finally``, so the
tests after it find the hub as it was. The hub retries with ``attempts=6, backoff_seconds=0.5``
and the default ``max_backoff_seconds`` of 60: the old budget was ~16 s of retries; now the
portal waits, so after a long outage delivery may take up to a minute more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiohttp
import pytest
from slixmpp import Message

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_xmpp import _body, _dm, _from, ghost_of, jid_of, xmpp_account
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e

SYNAPSE_OUTAGE = 60.0
"""The issue asks for 120 s; 60 s is four times the old retry budget (0.5 + 1 + … + 8 s) and
keeps the test near two minutes, which shows the same: nothing is given up while it is away."""
PROSODY_OUTAGE = 45.0
"""The issue asks for 90 s; 45 s is past the ~30 s after which the old policy parked a Matrix
message as a dead letter, and past slixmpp's own reconnect waits of 3, 9 and 21 s."""
CATCH_UP = 100.0
"""After an outage: the portal's next try comes at most max_backoff (60 s) later, then all go."""


async def _bridge_ready(hub: Hub, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{hub.as_port}/_pontis/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge not ready again:\n{hub.bridge.tail()}")
            await asyncio.sleep(0.2)


async def _xmpp_connected(hub: Hub) -> bool:
    """What ``/_pontis/health`` says of the component (its body comes with 200 and with 503)."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{hub.as_port}/_pontis/health") as resp,
        ):
            body = await resp.json()
    except aiohttp.ClientError:
        return False
    return bool(body.get("clients", {}).get("xmpp/shared"))


def _receipted(user: XmppUser) -> set[str]:
    return {str(m["receipt"]) for m in user.messages if m["receipt"]}


def _errored(user: XmppUser) -> set[str]:
    return {str(m["id"]) for m in user.messages if m["type"] == "error"}


def _arrived(alice: MatrixUser, room_id: str, ghost: str, bodies: Sequence[str]) -> list[str]:
    """The bodies of ``bodies`` the ghost said in the room, in timeline order, repeats kept."""
    wanted = set(bodies)
    return [
        _body(e)
        for e in alice.seen(lambda e: e["sender"] == ghost and _body(e) in wanted, room_id=room_id)
    ]


def _in_order_once(got: Sequence[str], sent: Sequence[str]) -> None:
    assert len(got) == len(set(got)), f"duplicates: {got}"
    assert list(got) == [body for body in sent if body in set(got)], f"out of order: {got}"


async def test_sigkill_in_a_burst_loses_nothing(hub: Hub) -> None:
    """40 messages; the bridge is SIGKILLed after the first 20, while most of them are kept but
    not yet on Matrix. Each message arrives once and in order, or its sender got an error.

    The kill comes once the bridge has confirmed (XEP-0184) all it read: a stanza it has read
    and not yet kept when it dies is lost without an error (XEP-0114 has no acknowledgement;
    the missing receipt is the sender's only sign, and a resend with the same id is
    deduplicated), a window of a millisecond that no component can close and this test does not
    measure.
    """
    async with xmpp_account(hub, "burst") as sender:
        alice, room_id, _, _ = await _dm(hub, sender)
        ghost, to = ghost_of(sender.jid), jid_of(alice)
        bodies = [f"burst {i:02d}" for i in range(40)]
        ids = {body: sender.send_chat(to, body, receipt=True) for body in bodies[:20]}
        try:
            await eventually(lambda: set(ids.values()) <= _receipted(sender),
                             "receipts for the first 20", timeout=20)  # fmt: skip
            pending = hub.bridge.query("SELECT count(*) FROM remote_inbox")[0][0]
            hub.bridge.kill()
            await asyncio.sleep(0.3)  # Prosody has seen the component go; it bounces from now
            restart = asyncio.create_task(hub.bridge.start(hub.as_port))
            for body in bodies[20:]:
                ids[body] = sender.send_chat(to, body, receipt=True)
                await asyncio.sleep(0.15)
            await restart
        finally:
            if hub.bridge.proc is None or hub.bridge.proc.poll() is not None:
                await hub.bridge.start(hub.as_port)
        assert pending > 0, "the kill should find messages kept but not yet on Matrix"

        def settled() -> bool:
            errored, got = _errored(sender), set(_arrived(alice, room_id, ghost, bodies))
            return all(body in got or ids[body] in errored for body in bodies)

        await eventually(settled, "every message on Matrix or bounced", timeout=60)
        await asyncio.sleep(2)  # a duplicate would come now
        got, errored = _arrived(alice, room_id, ghost, bodies), _errored(sender)
        _in_order_once(got, bodies)
        assert set(bodies[:20]) <= set(got), "a confirmed message was lost"
        both = [body for body in got if ids[body] in errored]
        assert not both, f"arrived although the sender got an error: {both}"
        assert errored, "messages sent while the bridge was down should have bounced"


async def test_homeserver_away_for_a_minute_loses_nothing(hub: Hub) -> None:
    async with xmpp_account(hub, "patient") as sender:
        alice, room_id, _, _ = await _dm(hub, sender)
        ghost, to = ghost_of(sender.jid), jid_of(alice)
        bodies = [f"while Matrix is away {i:02d}" for i in range(20)]
        await hub.synapse.stop()
        began = time.monotonic()
        try:
            ids = []
            for body in bodies:
                ids.append(sender.send_chat(to, body, receipt=True))
                await asyncio.sleep(0.05)
            # Confirmed while the homeserver is away: the bridge kept them.
            await eventually(lambda: set(ids) <= _receipted(sender), "receipts", timeout=15)
            await asyncio.sleep(max(0.0, SYNAPSE_OUTAGE - (time.monotonic() - began)))
        finally:
            await hub.synapse.start()
        await _bridge_ready(hub)
        await eventually(lambda: len(_arrived(alice, room_id, ghost, bodies)) >= len(bodies),
                         "all 20 messages on Matrix", timeout=CATCH_UP)  # fmt: skip
        await asyncio.sleep(2)
        got = _arrived(alice, room_id, ghost, bodies)
        assert got == bodies, got
        assert not _errored(sender)
        notices = alice.seen(lambda e: "could not be bridged" in _body(e), room_id=room_id)
        assert not notices, notices


async def test_xmpp_server_away_loses_nothing(hub: Hub) -> None:
    async with xmpp_account(hub, "offline") as bob:
        alice, room_id, _, _ = await _dm(hub, bob)
    bodies = [f"while XMPP is away {i}" for i in range(10)]
    await hub.prosody.stop()
    try:
        for body in bodies:
            await alice.send_text(room_id, body)
        await asyncio.sleep(PROSODY_OUTAGE)
    finally:
        await hub.prosody.start()
    restarted = time.monotonic()
    # Back before the component (capped at 5 s between its attempts) and the portal's next try:
    # the test Prosody has no offline storage and would bounce a message for an absent user.
    back = XmppUser(bob.jid, "pw", hub.prosody.c2s_port, resource="back")
    await back.connect()
    reconnected_after = None
    try:
        while time.monotonic() - restarted < 30 and reconnected_after is None:
            if await _xmpp_connected(hub):
                reconnected_after = time.monotonic() - restarted
            await asyncio.sleep(0.2)
        wanted: Callable[[Message], bool] = lambda m: _from(alice)(m) and m["body"] in bodies  # noqa: E731
        await eventually(lambda: len([m for m in back.messages if wanted(m)]) >= len(bodies),
                         "all 10 messages on XMPP", timeout=CATCH_UP)  # fmt: skip
        await asyncio.sleep(2)
        # slixmpp alone would have waited 3 + 9 + 21 + 45 s between its attempts by now.
        assert await _xmpp_connected(hub)
        assert reconnected_after is not None and reconnected_after < 15, reconnected_after
        got = [str(m["body"]) for m in back.messages if wanted(m)]
        assert got == bodies, got
        notices = alice.seen(lambda e: "not delivered" in _body(e), room_id=room_id)
        assert not notices, notices
    finally:
        await back.close()
