"""Nothing the mail server hands over is lost, and nothing from Matrix waits in vain.

Against the shared hub's real Postfix, Dovecot and Synapse:

the bridge SIGKILLed in the middle of a burst of mail: Postfix offers again what was not
answered ``250``, and every mail is in the room once, in the order the bridge took them.
The homeserver and SMTP relay outages are in test_outages.py, together with the other networks';
it uses the helpers here.

The order the bridge took mails in is read from Postfix's log: while a test runs Postfix
hands the bridge one mail at a time (``lmtp_destination_concurrency_limit = 1``), so the order
of its ``status=sent`` lines is exactly the order of the bridge's ``250`` answers. Everything
stopped or changed here is restored in ``finally`` blocks: the hub is shared by the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from typing import Any

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.mail import POSTFIX
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_email import PASSWORD, dm_with, mail, person, send

pytestmark = pytest.mark.e2e

NOT_BRIDGED = "could not be bridged"


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def _text(event: dict[str, Any]) -> str:
    """The mail's own text in its event: the last line (the subject comes first, in bold)."""
    lines = _body(event).strip().splitlines()
    return lines[-1] if lines else ""


class PostfixLog:
    """Postfix's log from the moment this object was made: which mail got which answer."""

    _CLEANUP = re.compile(r"postfix/cleanup\[\d+\]: (\w+): message-id=(<[^>]*>)")
    _DELIVERY = re.compile(r"postfix/\w+\[\d+\]: (\w+): to=<([^>]*)>, .* status=(\w+) \((.*)\)$")

    def __init__(self, hub: Hub) -> None:
        self.path = hub.mail.postfix_log
        self.start = self.mark()

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def _lines(self) -> list[str]:
        with self.path.open("rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace").splitlines()

    def deliveries(
        self, rcpt: str, status: str = "sent", *, before: int | None = None
    ) -> list[tuple[str, str, int]]:
        """(Message-ID, answer, log offset) of each delivery to ``rcpt`` with ``status``."""
        ids: dict[str, str] = {}
        found, offset = [], self.start
        for line in self._lines():
            offset += len(line.encode()) + 1
            if before is not None and offset > before:
                break
            if cleanup := self._CLEANUP.search(line):
                ids[cleanup.group(1)] = cleanup.group(2)
            elif (delivery := self._DELIVERY.search(line)) and (
                delivery.group(2) == rcpt
                and delivery.group(3) == status
                and delivery.group(1) in ids
            ):
                found.append((ids[delivery.group(1)], delivery.group(4), offset))
        return found

    def received_ids(self) -> list[str]:
        """The Message-IDs of the mails Postfix took in, in order."""
        return [m.group(2) for line in self._lines() if (m := self._CLEANUP.search(line))]


async def _reload_postfix(hub: Hub) -> None:
    hub.mail.write_config()  # writes main.cf from postfix_settings, backdated for Postfix
    conf = str(hub.mail.postfix_dir / "conf")
    result = await asyncio.to_thread(
        subprocess.run, [POSTFIX, "-c", conf, "reload"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    await asyncio.sleep(0.5)  # the master re-reads its configuration after the signal


@contextlib.asynccontextmanager
async def one_delivery_at_a_time(hub: Hub) -> AsyncIterator[None]:
    """Postfix hands the bridge one mail at a time, so its log gives the bridge's order."""
    hub.mail.postfix_settings["lmtp_destination_concurrency_limit"] = "1"
    await _reload_postfix(hub)
    try:
        yield
    finally:
        del hub.mail.postfix_settings["lmtp_destination_concurrency_limit"]
        await _reload_postfix(hub)


async def _portal(hub: Hub, name: str) -> tuple[str, MatrixUser, str, str]:
    """A DM between a new Matrix user and a new mailbox: (mailbox, user, room id, portal)."""
    person_address = person(hub, name)
    alice = await hub.user("alice")
    room_id = await dm_with(hub, alice, person_address)
    await alice.send_text(room_id, f"Hello {name}")
    sent = await hub.mail.wait_for_mail(person_address, PASSWORD)
    return person_address, alice, room_id, sent["From"].addresses[0].addr_spec


def _arrived(alice: MatrixUser, room_id: str, texts: dict[str, str]) -> list[str]:
    """The Message-IDs whose text is in the room, in the room's order (repeats kept)."""
    by_text = {text: message_id for message_id, text in texts.items()}
    return [by_text[_text(e)] for e in alice.seen(lambda e: _text(e) in by_text, room_id=room_id)]


def _says(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: _text(event) == text


async def _all_arrive(
    alice: MatrixUser, room_id: str, texts: dict[str, str], timeout: float
) -> list[str]:
    """Wait until every text is in the room, and a little more for copies; the room's order."""
    for text in texts.values():
        await alice.wait_for(_says(text), room_id=room_id, timeout=timeout)
    await asyncio.sleep(2)  # a duplicate would come right behind
    return _arrived(alice, room_id, texts)


def _burst(
    sender: str, portal: str, what: str, count: int
) -> tuple[list[EmailMessage], dict[str, str]]:
    mails = [mail(sender, portal, f"{what} {i}", f"{what} mail {i}") for i in range(count)]
    return mails, {str(m["Message-ID"]): f"{what} mail {i}" for i, m in enumerate(mails)}


async def test_a_bridge_killed_during_a_burst_of_mail_bridges_each_mail_once_in_order(
    hub: Hub,
) -> None:
    hana, alice, room_id, portal = await _portal(hub, "hana")
    mails, texts = _burst(hana, portal, "Burst", 10)
    log = PostfixLog(hub)
    async with one_delivery_at_a_time(hub):
        try:
            for msg in mails[:5]:
                await send(hub, msg)
            # Killed as soon as three are answered: the next is being handed over, and the
            # last ones answered may not be on Matrix yet. The rest arrives while it is down.
            deadline = time.monotonic() + 30
            while len(log.deliveries(portal)) < 3:
                assert time.monotonic() < deadline, "Postfix did not hand over the mails"
                await asyncio.sleep(0.002)
            hub.bridge.kill()
            killed_at = log.mark()
            for msg in mails[5:]:
                await send(hub, msg)
        finally:
            if hub.bridge.proc is None or hub.bridge.proc.poll() is not None:
                await hub.bridge.start(hub.as_port)
        hub.mail.flush()  # Postfix tries again now, not after its backoff
        arrived = await _all_arrive(alice, room_id, texts, timeout=60)
        await eventually(lambda: len(log.deliveries(portal)) == len(mails), "every mail 250",
                         timeout=30)  # fmt: skip

    assert sorted(arrived) == sorted(texts), "each mail exactly once"
    before = [m for m, _, _ in log.deliveries(portal, before=killed_at)]
    after = [m for m, _, _ in log.deliveries(portal) if m not in before]
    assert arrived[: len(before)] == before, "what was answered 250 comes first, in order"
    rest = arrived[len(before) :]
    # A mail stored just before the kill, without its 250, is bridged from the store first,
    # wherever Postfix's retry of it falls; all others in the order of their 250.
    assert rest == after or (rest[1:] == [m for m in after if m != rest[0]]), (rest, after)
    assert not alice.seen(lambda e: NOT_BRIDGED in _body(e), room_id=room_id)
