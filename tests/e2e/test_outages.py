"""Outages of the lengths issue #10 asks for, all networks at once, in the shared hub.

1. The homeserver is stopped for 120 s while 20 XMPP messages, 5 mails and 5 Teams messages
   arrive, in three portals. Each network gets its acknowledgement while Matrix is away (XEP-0184
   receipt, LMTP 250, Graph 202): the bridge kept them. When Synapse is back every one is in its
   room once, in order, and nobody is told of a loss.
2. Prosody stopped, the SMTP relay (Postfix) stopped and Graph answering 503, all for 90 s at the
   same time, while Matrix users write to an XMPP user, a mailbox and a Teams chat. When they are
   back every message arrives once, in order, at each network, and nobody is told it was not
   delivered.

The outages overlap so the file costs two outages of wall time, not seven. The hub retries with
``attempts=6, backoff_seconds=0.5`` and the default ``max_backoff_seconds`` of 60: the old give-up
budget was ~16 s of waiting; now a portal waits, so after a long outage its next try may come up
to a minute later. Everything stopped here is restored in ``finally``: the hub is shared by the
session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from slixmpp import Message

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_email import PASSWORD, send
from tests.e2e.test_email_durable import (
    NOT_BRIDGED,
    PostfixLog,
    _all_arrive,
    _burst,
    one_delivery_at_a_time,
)
from tests.e2e.test_email_durable import _portal as mail_portal
from tests.e2e.test_teams import Teams, _body, teams_login
from tests.e2e.test_teams_durable import _arrived_once_in_order, _deliveries, _timeline
from tests.e2e.test_teams_durable import _portal as teams_portal
from tests.e2e.test_xmpp import _dm, _from, ghost_of, jid_of, xmpp_account
from tests.e2e.test_xmpp_durable import _arrived, _errored, _receipted
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e

HOMESERVER_OUTAGE = 120.0
"""Longer than any retry budget the bridge ever had (the old in-memory path gave up after about
a minute and lost one message of twenty per further minute)."""
NETWORK_OUTAGE = 90.0
"""Past the ~30 s after which the old policy parked a Matrix message as a dead letter, past
slixmpp's own reconnect waits of 3, 9 and 21 s, past the old Teams and SMTP budgets."""
CATCH_UP = 180.0
"""After an outage: the portal's next try comes at most max_backoff (60 s) later, then all go;
generous, because the machine's CPU is shared."""
NOT_DELIVERED = "not delivered"


@pytest_asyncio.fixture(scope="module")
async def megan(hub: Hub) -> AsyncIterator[Teams]:
    """A Matrix user logged in as the Teams user Megan Bowen (a later module may log in again
    as Megan; the latest login is the one the bridge uses)."""
    user = await hub.user("megan")
    room = await teams_login(hub, user, "megan")
    yield Teams(user, room)


async def _bridge_ready(hub: Hub, timeout: float = 90) -> None:
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


def _dead_letters(hub: Hub) -> int:
    """What ``pontis dead-letters list`` would count."""
    return int(hub.bridge.query("SELECT COUNT(*) FROM dead_letter")[0][0])


def _bot_notices(hub: Hub, user: MatrixUser, room_id: str, after: int) -> list[str]:
    """Notices the bot sent in the room since ``after``, and any text telling of a loss."""

    def notice(event: dict[str, Any]) -> bool:
        body = _body(event)
        from_bot = (
            event["sender"] == hub.bot and event.get("content", {}).get("msgtype") == "m.notice"
        )
        return from_bot or NOT_BRIDGED in body or NOT_DELIVERED in body

    return [_body(e) for e in user.events[after:] if e["room_id"] == room_id and notice(e)]


async def test_homeserver_away_two_minutes_loses_nothing_from_any_network(
    hub: Hub, megan: Teams
) -> None:
    dead_before = _dead_letters(hub)
    async with xmpp_account(hub, "patient") as sender:
        (alice, xmpp_room, _, _), (iris, bea, mail_room, mail_addr), (chat, teams_room) = (
            await asyncio.gather(_dm(hub, sender), mail_portal(hub, "iris"),
                                 teams_portal(hub, megan))
        )  # fmt: skip
        ghost, to = ghost_of(sender.jid), jid_of(alice)
        marks = {xmpp_room: alice.mark(), mail_room: bea.mark(), teams_room: megan.user.mark()}
        xmpp_bodies = [f"while Matrix is away {i:02d}" for i in range(20)]
        mails, mail_texts = _burst(iris, mail_addr, "Outage", 5)
        teams_texts = [f"While Matrix was away {n}" for n in range(1, 6)]
        log = PostfixLog(hub)
        receipts: list[str] = []

        async def chat_on_xmpp() -> None:
            for body in xmpp_bodies:
                receipts.append(sender.send_chat(to, body, receipt=True))
                await asyncio.sleep(0.05)

        async def write_mail() -> None:
            for msg in mails:
                await asyncio.sleep(0.2)
                await send(hub, msg)

        async def post_on_teams() -> None:
            for text in teams_texts:
                await asyncio.sleep(0.2)
                await hub.graph.post_as("alex", chat, f"<p>{text}</p>")

        async with one_delivery_at_a_time(hub):
            await hub.synapse.stop()
            stopped = time.monotonic()
            try:
                await asyncio.gather(chat_on_xmpp(), write_mail(), post_on_teams())
                # Each network was answered with Matrix away: the bridge kept what it took.
                await eventually(lambda: set(receipts) <= _receipted(sender), "XMPP receipts",
                                 timeout=30)  # fmt: skip
                await eventually(lambda: len(log.deliveries(mail_addr)) == len(mails),
                                 "the 5 mails answered 250", timeout=30)  # fmt: skip
                await eventually(
                    lambda: [d.state for d in _deliveries(hub, chat)] == ["delivered"] * 6,
                    "Graph's notifications answered 202 (the opening one and 5)",
                    timeout=30,
                )
                assert not log.deliveries(mail_addr, "deferred"), "no 451 while Matrix is away"
                await asyncio.sleep(max(0.0, HOMESERVER_OUTAGE - (time.monotonic() - stopped)))
                assert _dead_letters(hub) == dead_before, "an outage made a dead letter"
            finally:
                await hub.synapse.start()
            await _bridge_ready(hub)

            async def xmpp_caught_up() -> None:
                await eventually(
                    lambda: len(_arrived(alice, xmpp_room, ghost, xmpp_bodies)) >= 20,
                    "all 20 XMPP messages on Matrix",
                    timeout=CATCH_UP,
                )

            _, mail_arrived, _ = await asyncio.gather(
                xmpp_caught_up(),
                _all_arrive(bea, mail_room, mail_texts, timeout=CATCH_UP),
                _arrived_once_in_order(hub, megan, teams_room, teams_texts, CATCH_UP),
            )
        await asyncio.sleep(2)  # a copy would be right behind
        assert _arrived(alice, xmpp_room, ghost, xmpp_bodies) == xmpp_bodies, "XMPP once, in order"
        assert not _errored(sender), "no XMPP message bounced"
        assert mail_arrived == [m for m, _, _ in log.deliveries(mail_addr)], "mail once, in order"
        await _arrived_once_in_order(hub, megan, teams_room, teams_texts, 0)
        for user, room_id in ((alice, xmpp_room), (bea, mail_room), (megan.user, teams_room)):
            notices = _bot_notices(hub, user, room_id, marks[room_id])
            assert notices == [], f"{notices}\n{hub.bridge.tail()}"
        assert _dead_letters(hub) == dead_before


async def test_xmpp_relay_and_graph_away_together_lose_nothing_from_matrix(
    hub: Hub, megan: Teams
) -> None:
    dead_before = _dead_letters(hub)
    async with xmpp_account(hub, "offline") as bob:
        (alice, xmpp_room, _, _), (jack, cleo, mail_room, _), (chat, teams_room) = (
            await asyncio.gather(_dm(hub, bob), mail_portal(hub, "jack"),
                                 teams_portal(hub, megan))
        )  # fmt: skip
    marks = {xmpp_room: alice.mark(), mail_room: cleo.mark(), teams_room: megan.user.mark()}
    xmpp_bodies = [f"while XMPP is away {i}" for i in range(10)]
    subjects = [f"Written during the relay outage {i}" for i in range(5)]
    teams_texts = [f"While Teams was away {n}" for n in range(1, 6)]
    posts = f"/v1.0/chats/{chat}/messages"
    log = PostfixLog(hub)
    wire = hub.graph.services.wire

    async def write(user: MatrixUser, room_id: str, texts: list[str]) -> None:
        for text in texts:
            await user.send_text(room_id, text)
            await asyncio.sleep(0.2)

    await hub.prosody.stop()
    stopped = time.monotonic()
    fault = None
    try:
        await hub.mail.stop()  # Postfix (the relay) and Dovecot
        fault = wire.add_fault("/v1.0/*", status=503, count=1_000_000)
        all_away = time.monotonic()
        await asyncio.gather(
            write(alice, xmpp_room, xmpp_bodies),
            write(cleo, mail_room, subjects),
            write(megan.user, teams_room, teams_texts),
        )
        await asyncio.sleep(max(0.0, NETWORK_OUTAGE - (time.monotonic() - all_away)))
        tried = [r["status"] for r in hub.graph.requests(posts, "POST")]
        assert tried and set(tried) == {503}, f"Graph was tried during its outage: {tried}"
        assert _dead_letters(hub) == dead_before, "an outage made a dead letter"
    finally:
        if fault is not None:
            wire.faults.remove(fault)
        try:
            await hub.mail.start()
        finally:
            await hub.prosody.start()
    restarted = time.monotonic()
    outage = restarted - stopped
    # Back before the component (capped at 5 s between its attempts) and the portal's next try:
    # the test Prosody has no offline storage and would bounce a message for an absent user.
    back = XmppUser(bob.jid, "pw", hub.prosody.c2s_port, resource="back")
    await back.connect()
    try:
        reconnected_after = None
        while time.monotonic() - restarted < 30 and reconnected_after is None:
            if await _xmpp_connected(hub):
                reconnected_after = time.monotonic() - restarted
            await asyncio.sleep(0.2)
        wanted: Callable[[Message], bool] = lambda m: _from(alice)(m) and m["body"] in xmpp_bodies  # noqa: E731

        def on_xmpp() -> list[str]:
            return [str(m["body"]) for m in back.messages if wanted(m)]

        async def inbox() -> dict[str, list[EmailMessage]]:
            mails = await hub.mail.all_mail(jack, PASSWORD)
            return {s: [m for m in mails if m["Subject"] == s] for s in subjects}

        megan_id = hub.graph.user("megan")["id"]

        async def on_teams() -> list[str]:
            return [
                m["body"]["content"]
                for m in await hub.graph.messages(chat)
                if ((m.get("from") or {}).get("user") or {}).get("id") == megan_id
            ]

        async def mail_caught_up() -> None:
            deadline = time.monotonic() + CATCH_UP
            while not all((await inbox()).values()):
                assert time.monotonic() < deadline, f"not every mail arrived: {await inbox()}"
                await asyncio.sleep(0.5)

        async def teams_caught_up() -> None:
            deadline = time.monotonic() + CATCH_UP
            while len(await on_teams()) < len(teams_texts):
                assert time.monotonic() < deadline, f"Teams has {await on_teams()}"
                await asyncio.sleep(0.5)

        await asyncio.gather(
            eventually(lambda: len(on_xmpp()) >= len(xmpp_bodies), "all 10 messages on XMPP",
                       timeout=CATCH_UP),
            mail_caught_up(),
            teams_caught_up(),
        )  # fmt: skip
        await asyncio.sleep(2)  # a copy would be right behind
        assert outage >= NETWORK_OUTAGE
        # slixmpp alone would have waited 3 + 9 + 21 + 45 s between its attempts by now.
        assert await _xmpp_connected(hub)
        assert reconnected_after is not None and reconnected_after < 15, reconnected_after
        assert on_xmpp() == xmpp_bodies, f"XMPP once, in order: {on_xmpp()}"
        received = await inbox()
        assert all(len(copies) == 1 for copies in received.values()), received
        ids = [str(received[s][0]["Message-ID"]) for s in subjects]
        assert [i for i in log.received_ids() if i in ids] == ids, "mail in the room's order"
        sent = await on_teams()
        assert sent == teams_texts, f"Teams once, in order: {sent}\n{hub.bridge.tail()}"
        for user, room_id in ((alice, xmpp_room), (cleo, mail_room), (megan.user, teams_room)):
            notices = _bot_notices(hub, user, room_id, marks[room_id])
            assert notices == [], f"{notices}\n{hub.bridge.tail()}"
        # The timeline as the homeserver has it, too: no notice from the bot to Megan.
        bot = [e for e in await _timeline(megan.user, teams_room) if e["sender"] == hub.bot]
        assert bot == [], [_body(e) for e in bot]
        assert _dead_letters(hub) == dead_before
    finally:
        await back.close()
