"""The hostile corpus of issue #12 through a real Postfix → LMTP → bridge, while Matrix → XMPP
traffic goes on: each recipient of each mail gets a clear answer, nothing stalls.

A Postfix of its own relays the corpus (the hub's Postfix would refuse 5,000-deep nesting
itself, mime_nesting_limit); it delivers to the hub bridge's LMTP listener like the MX does.
The sender has a mailbox there, so Postfix's bounces show what the bridge answered for each
recipient.
"""

from __future__ import annotations

import itertools
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import MAIL_DOMAIN, Hub
from tests.e2e.mail import MailServers
from tests.e2e.test_email import PASSWORD, bridged_room, mail
from tests.e2e.test_email_content import _address, _verification_headers
from tests.e2e.test_xmpp import ghost_of as xmpp_ghost
from tests.e2e.test_xmpp import xmpp_account

pytestmark = pytest.mark.e2e
_ids = itertools.count(1)


def _corpus(sender: str, rooms: list[str], verified: str) -> dict[str, bytes]:
    """Subject → raw mail; the Subject comes first so a bounce's returned headers show it."""
    n = next(_ids)
    head = f"From: {sender}\r\nTo: {', '.join(rooms)}\r\n{verified.replace(chr(10), chr(13) + chr(10))}"
    deep = "".join(
        f"Content-Type: multipart/mixed; boundary*0*=''b{i}\r\n\r\n--b{i}\r\n" for i in range(5000)
    )
    return {
        f"million-parts-{n}": (
            f"Subject: million-parts-{n}\r\n{head}Content-Type: multipart/mixed; boundary*=''b\r\n\r\n"
            + "--b\r\n\r\n" * 1_000_000 + "--b--\r\n"
        ).encode(),
        f"deep-{n}": (f"Subject: deep-{n}\r\n{head}" + deep + "Content-Type: text/plain\r\n\r\nx\r\n").encode(),
        f"headers-{n}": (f"Subject: headers-{n}\r\n{head}" + "X-Filler: x\r\n" * 100_000 + "\r\nbody\r\n").encode(),
        f"utf7-{n}": (
            f"Subject: utf7-{n} =?utf-7?q?+2AA-?=\r\n{head}MIME-Version: 1.0\r\n"
            f"Message-ID: <utf7-{n}@agency.test>\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n"
            f"utf7 body {n} +2AA- end\r\n"
        ).encode(),
    }  # fmt: skip


def _raw(message: EmailMessage) -> bytes:
    try:
        return message.as_bytes()
    except Exception:  # a bounce of a hostile mail may not serialise again; its payload does
        return str(message.get_payload()).encode(errors="replace")


async def test_hostile_mail_gets_a_clear_answer_per_recipient_and_matrix_to_xmpp_flows(
    hub: Hub, tmp_path: Path
) -> None:
    alice = await hub.user("alice")
    rooms = {}
    for name in ("intake", "archive"):
        room_id = await bridged_room(hub, alice, f"{name}{next(_ids)}")
        rooms[await _address(alice, room_id)] = room_id
    sender = f"mallory{next(_ids)}@agency.test"
    verified = _verification_headers(mail(sender, next(iter(rooms)), "x", "x"))
    corpus = _corpus(sender, list(rooms), verified)

    async with xmpp_account(hub, "watcher") as xmpp_user:
        dm = await alice.create_room(invite=[xmpp_ghost(xmpp_user.jid)], is_direct=True)
        await alice.wait_for(lambda e: e.get("state_key") == xmpp_ghost(xmpp_user.jid)
                             and e["content"].get("membership") == "join", room_id=dm)  # fmt: skip
        relay = MailServers(
            tmp_path / "relay", bridge_domain=MAIL_DOMAIN,
            bridge_lmtp_port=hub.mail.bridge_lmtp_port,
            postfix_settings={"mime_nesting_limit": "10000"},
        )  # fmt: skip
        async with relay:
            relay.add_user(sender, PASSWORD)
            for raw in corpus.values():
                refused = await relay.send(raw, mail_from=sender, rcpt_to=list(rooms))
                assert not refused, refused
            # Meanwhile, Matrix → XMPP keeps flowing.
            await alice.send_text(dm, "Still flowing while the hostile mail is read")
            got = await xmpp_user.wait_for_message(
                lambda m: m["body"] == "Still flowing while the hostile mail is read", timeout=30
            )
            assert got["type"] == "chat"

            for subject, refusal in (
                (s, r) for s, r in zip(corpus, ("more than 100 MIME parts",
                 "MIME nesting deeper than 10", "more than 5000 header lines"), strict=False)
            ):  # fmt: skip
                bounce = await relay.wait_for_mail(
                    sender, PASSWORD, timeout=120, match=lambda m, s=subject: s.encode() in _raw(m)
                )
                report = _raw(bounce)
                for address in rooms:
                    assert address.encode() in report, report[:3000]
                assert report.count(b"554 5.6.0 Malformed mail: " + refusal.encode()) >= 2, report[
                    :3000
                ]

            utf7 = next(s for s in corpus if s.startswith("utf7"))
            for room_id in rooms.values():
                event = await alice.wait_for(
                    lambda e, s=utf7: f"utf7 body {s.split('-')[1]}" in _body(e),
                    room_id=room_id,
                    timeout=60,
                )
                assert "\ufffd" in _body(event) or "end" in _body(event)
            assert relay.queue() == []  # nothing deferred: every answer was final


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))
