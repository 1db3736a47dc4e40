"""Whom mail from Matrix goes to: reply-all for answers, one copy per contact for new
conversations, never to automatic senders or bounced addresses, and a raw record of every mail.

Hostile cases first: a stranger Cc'ing a crowd, auto-responders and list mail, forged bounces.
The gateway runs with the real store (SQLite and PostgreSQL); the relay is a recorder (the real
Postfix path is in tests/e2e/test_email_recipients.py)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
from email.message import EmailMessage
from typing import Any, cast

import pytest

from bridge.core import BridgeError, MatrixMessage, PermanentError, RemoteMessage
from bridge.email import unverified
from bridge.email.client import BOUNCE_TOKEN_KEY, EmailGateway
from bridge.email.config import EmailConfig
from bridge.email.ids import NETWORK, portal_key
from bridge.email.protocol.parse import parse_mail
from bridge.email.received import KIND_BOUNCE, KIND_MAIL, encode_payload
from bridge.email.recipients import (
    MAX_REPLY_RECIPIENTS,
    Delivery,
    correspondents,
    is_automatic,
    plan,
)
from bridge.email.records import DIRECTION_IN, DIRECTION_OUT, RECORD_KEY, Records
from bridge.email.store import EmailStore, StoredMail
from bridge.email.verp import split_bounce_address
from bridge.portal.models import Message, Portal, RemoteInput
from bridge.portal.store import Store
from tests.email.test_gateway import context_and_store

ROOM = "room.abcdefghijklmnop@mail.test"
LOG = logging.getLogger("test.email.recipients")
A, B, C = "anna@one.example", "ben@two.example", "cleo@three.example"


def _raw(sender: str, text: str = "Hello", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = headers.pop("to", ROOM)
    msg["Subject"] = headers.pop("subject", "Question")
    msg["Message-ID"] = headers.pop("message_id", f"<{sender.split('@')[0]}@example.org>")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg.as_bytes()


# --- the rules, without I/O ---------------------------------------------------------------------


def test_reply_all_goes_to_reply_to_and_the_others_without_the_bridge() -> None:
    mail = parse_mail(_raw(A, to=f"{ROOM}, {B}", Cc=f"{C}, other.x@mail.test",
                           Reply_To="anna.work@one.example"))  # fmt: skip
    assert correspondents(mail, own_domain="mail.test", automatic=False) == (
        ["anna.work@one.example"], [B, C]
    )  # fmt: skip
    assert correspondents(mail, own_domain="mail.test", automatic=True) == ([], [])


def test_an_unverified_mail_has_only_its_claimed_sender_as_correspondent() -> None:
    mail = parse_mail(_raw(A, Cc=B, Reply_To="victim@crowd.example, other@crowd.example"))
    assert correspondents(mail, own_domain="mail.test", automatic=False, verified=False) == (
        [A], []
    )  # fmt: skip


def test_a_stranger_cannot_make_the_room_mail_a_crowd() -> None:
    crowd = ", ".join(f"victim{n}@crowd.example" for n in range(500))
    mail = parse_mail(_raw(A, Cc=crowd))
    to, cc = correspondents(mail, own_domain="mail.test", automatic=False)
    assert to == [A] and len(to) + len(cc) == MAX_REPLY_RECIPIENTS


@pytest.mark.parametrize(
    ("headers", "mail_from"),
    [
        ({"Auto_Submitted": "auto-replied"}, A),
        ({"X_Autoreply": "yes"}, A),
        ({"Precedence": "bulk"}, A),
        ({"Precedence": "junk"}, A),
        ({"Precedence": "list"}, A),
        ({"List_Id": "<news.one.example>"}, A),
        ({"List_Unsubscribe": "<mailto:leave@one.example>"}, A),
        ({}, ""),
        ({}, "<>"),
    ],
    ids=[
        "auto-submitted",
        "x-autoreply",
        "bulk",
        "junk",
        "list",
        "list-id",
        "unsubscribe",
        "empty-sender",
        "null-sender",
    ],
)
def test_automatic_mail_is_recognised(headers: dict[str, str], mail_from: str) -> None:
    assert is_automatic(parse_mail(_raw(A, **headers)), mail_from)


def test_mail_a_person_typed_is_not_automatic() -> None:
    assert not is_automatic(parse_mail(_raw(A, Auto_Submitted="no")), A)


def test_the_plan_for_new_conversations_answers_and_bounces() -> None:
    contacts = [A, B, C]
    new = plan([], contacts, bounced={B})
    assert new.separately and new.deliveries == [Delivery(to=[A]), Delivery(to=[C])]
    received = StoredMail(subject="Q", references=[], reply_to=[A], reply_cc=[B, C])
    answer = plan([received], contacts, bounced={B})
    assert not answer.separately and answer.deliveries == [Delivery(to=[A], cc=[C])]
    assert plan([received], [], bounced={A}).deliveries == [Delivery(to=[B, C])]
    automatic = StoredMail(subject="Out of office", references=[])
    assert plan([automatic, received], [], set()).deliveries == [Delivery(to=[A], cc=[B, C])]
    assert plan([automatic], contacts, set()).deliveries == []  # nobody to answer
    sent = StoredMail(subject="News", references=[], separately=True)
    assert plan([sent], contacts, {A}).deliveries == [Delivery(to=[B]), Delivery(to=[C])]
    assert plan([None, None], [A], set()).deliveries == [Delivery(to=[A])]  # never was mail


# --- the gateway --------------------------------------------------------------------------------


class Core:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.failures: list[tuple[str, str]] = []

    async def delivery_failed(self, network: str, event_id: str, err: BridgeError) -> None:
        self.failures.append((event_id, err.user_message))

    def set_client_state(self, network: str, login_id: str, *, connected: bool,
                         message: str) -> None:  # fmt: skip
        pass


class RecordingRelay:
    """Takes every mail; keeps (envelope sender, envelope recipients, parsed mail)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], EmailMessage]] = []

    async def send(self, message: EmailMessage, *, sender: str,
                   recipients: list[str]) -> dict[str, str]:  # fmt: skip
        parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)
        self.sent.append((sender, list(recipients), cast(EmailMessage, parsed)))
        return {}


@pytest.fixture
async def parts(store: Store) -> tuple[EmailGateway, Core, RecordingRelay, EmailStore]:
    return await gateway_parts(store)


async def gateway_parts(store: Store) -> tuple[EmailGateway, Core, RecordingRelay, EmailStore]:
    """A gateway on ``store`` with a recording relay, a fake core and its own tables."""
    core = Core(store)
    ctx, email_store = await context_and_store(store, core)
    cfg = EmailConfig.from_section({
        "domain": "mail.test",
        "inbound": {"protocol": "lmtp", "host": "127.0.0.1", "port": 1, "max_message_mib": 1,
                    "max_recipients": 10},
        "outbound": {"host": "127.0.0.1", "port": 1, "security": "none", "username": "",
                     "password": "", "timeout": 2},
        "trusted_authserv_id": "mx.test", "sender_verification": "none", "threads": True,
        "strip_quotes": True,
    })  # fmt: skip
    relay = RecordingRelay()
    return EmailGateway(ctx, cfg, email_store, cast(Any, relay)), core, relay, email_store


async def _arrive(gateway: EmailGateway, store: Store, raw: bytes, mail_from: str,
                  kind: str = KIND_MAIL, *, rcpt: str = ROOM) -> RemoteMessage | None:  # fmt: skip
    """A stored mail converted in its turn, then on Matrix (as the core would record it);
    ``rcpt`` is its envelope recipient (a bounce address makes the token part of the item,
    as :meth:`EmailGateway.receive` does)."""
    message_id = parse_mail(raw).message_id
    payload = encode_payload(raw, mail_from)
    token = split_bounce_address(rcpt)[1]
    if token is not None:
        payload[BOUNCE_TOKEN_KEY] = token
    item = RemoteInput(portal=portal_key(ROOM), kind=kind, payload=payload,
                       dedupe_id=message_id)  # fmt: skip
    events = await gateway.convert_remote(item)
    if not events:
        return None
    event = cast(RemoteMessage, events[0])
    await store.add_message(Message(
        network=NETWORK, portal_id=portal_key(ROOM).remote_id, remote_id=event.id,
        mxid=f"$in-{event.id}", room_id="!room:hub.test", sender_id=str(event.sender),
        thread_root_id=event.thread_root,
    ))  # fmt: skip
    return event


async def _say(gateway: EmailGateway, store: Store, body: str, *, event_id: str,
               reply_to: str | None = None) -> str:  # fmt: skip
    """A Matrix message in the room, then on the network (as the core would record it)."""
    portal = Portal(network=NETWORK, remote_id=portal_key(ROOM).remote_id, mxid="!room:hub.test")
    target = None
    if reply_to is not None:
        target = await store.get_message(portal_key(ROOM), cast(Any, reply_to))
    msg = MatrixMessage(portal=portal, event_id=event_id, sender="@alice:hub.test", timestamp=0,
                        body=body, sender_name="Alice", reply_to=target)  # fmt: skip
    remote_id = await gateway.handle_matrix_message(msg)
    await store.add_message(Message(
        network=NETWORK, portal_id=portal.remote_id, remote_id=remote_id, mxid=event_id,
        room_id="!room:hub.test", sender_id="@alice:hub.test",
    ))  # fmt: skip
    return remote_id


def _portal(sender: str) -> str:
    return split_bounce_address(sender)[0]


async def _bounce_address(gateway: EmailGateway, message_id: str, rcpt: str) -> str:
    """Where the copy of ``message_id`` for ``rcpt`` went from (and its bounce comes to)."""
    return (await gateway._bounces()).sender(ROOM, message_id, rcpt)


def _shown(mail: EmailMessage) -> set[str]:
    return {a.addr_spec for name in ("To", "Cc") if mail[name] for a in mail[name].addresses}


async def test_three_outsiders_write_and_an_answer_reaches_only_its_thread(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    gateway, _, relay, email_store = parts
    for sender in (A, B, C):
        await _arrive(gateway, store, _raw(sender, f"I am {sender}"), sender)
    assert await email_store.contacts(ROOM) == []  # writing makes nobody a contact
    await _say(gateway, store, "Answer to Ben", event_id="$answer", reply_to="<ben@example.org>")
    [(sender, envelope, mail)] = relay.sent
    assert split_bounce_address(sender)[0] == ROOM and envelope == [B] and _shown(mail) == {B}
    assert mail["In-Reply-To"] == "<ben@example.org>" and mail["Subject"] == "Re: Question"
    # With no contacts, a new conversation reaches nobody, and the user is told what to do.
    with pytest.raises(PermanentError, match="no recipients") as refused:
        await _say(gateway, store, "To everyone", event_id="$all")
    assert "contacts" in refused.value.user_message and len(relay.sent) == 1


async def test_a_new_conversation_is_one_copy_per_contact_and_removal_stops_it(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    gateway, _, relay, email_store = parts
    for contact in (A, B, C):
        await email_store.add_contact(ROOM, contact)
    message_id = await _say(gateway, store, "Newsletter", event_id="$news")
    assert [(_portal(s), e) for s, e, _ in relay.sent] == [(ROOM, [A]), (ROOM, [B]), (ROOM, [C])]
    assert len({s for s, _, _ in relay.sent}) == 3  # each copy has its own bounce address
    for _, envelope, mail in relay.sent:
        assert _shown(mail) == set(envelope) and mail["Cc"] is None
        assert mail["Message-ID"] == message_id  # every answer threads under one event
    # Anna answers; the room answers her: only her, though the thread went to three.
    await _arrive(gateway, store, _raw(A, "Thanks", subject="Re: Newsletter",
                                       In_Reply_To=message_id, References=message_id), A)  # fmt: skip
    relay.sent.clear()
    await _say(gateway, store, "You're welcome", event_id="$welcome", reply_to="<anna@example.org>")
    assert [e for _, e, _ in relay.sent] == [[A]]
    # An answer to the room's own newsletter goes out as it did: one copy per contact.
    relay.sent.clear()
    await email_store.remove_contact(ROOM, B)
    await _say(gateway, store, "Correction", event_id="$fix", reply_to=message_id)
    assert [e for _, e, _ in relay.sent] == [[A], [C]]


async def test_an_auto_reply_is_never_a_recipient(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    gateway, _, relay, email_store = parts
    await email_store.add_contact(ROOM, A)
    message_id = await _say(gateway, store, "Meeting at 10", event_id="$meet")
    away = _raw("robot@one.example", "I am away", subject="Out of office",
                Auto_Submitted="auto-replied", In_Reply_To=message_id, References=message_id,
                message_id="<away@one.example>")  # fmt: skip
    event = await _arrive(gateway, store, away, "robot@one.example")
    assert event is not None and event.parts[0].notice
    assert [c.address for c in await email_store.contacts(ROOM)] == [A]
    relay.sent.clear()
    # Answering the auto-reply answers its conversation: the contact, not the robot.
    await _say(gateway, store, "Noted", event_id="$noted", reply_to="<away@one.example>")
    assert [e for _, e, _ in relay.sent] == [[A]]
    # A list mail on its own gives nobody to answer.
    await _arrive(gateway, store, _raw("news@list.example", List_Id="<l.list.example>"), "x@y")
    with pytest.raises(PermanentError) as refused:
        await _say(gateway, store, "Hi list", event_id="$list", reply_to="<news@example.org>")
    assert "automatic" in refused.value.user_message


def _dsn(original: str, recipient: str, original_recipient: str | None = None) -> bytes:
    named = f"Original-Recipient: rfc822; {original_recipient}\r\n" if original_recipient else ""
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: " + ROOM + "\r\nSubject: Undelivered\r\n"
        f"Message-ID: <dsn-{recipient}@mx.example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"{named}Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original}\r\n\r\n--b--\r\n"
    ).encode()


async def test_a_bounced_contact_stops_receiving_until_added_again(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    gateway, core, relay, email_store = parts
    await email_store.add_contact(ROOM, A)
    await email_store.add_contact(ROOM, B)
    message_id = await _say(gateway, store, "Hello both", event_id="$hello")
    to_a = await _bounce_address(gateway, message_id, A)
    # A DSN to the portal's own address (anyone can send one), one naming someone the mail
    # never went to, or about a mail never sent, marks nobody.
    await _arrive(gateway, store, _dsn(message_id, A), "", KIND_BOUNCE)
    await _arrive(gateway, store, _dsn(message_id, C), "", KIND_BOUNCE,
                  rcpt=await _bounce_address(gateway, message_id, C))  # fmt: skip
    await _arrive(gateway, store, _dsn("<never@mail.test>", A), "", KIND_BOUNCE, rcpt=to_a)
    assert await email_store.bounced(ROOM) == set() and core.failures == []
    await _arrive(gateway, store, _dsn(message_id, A), "", KIND_BOUNCE, rcpt=to_a)
    assert await email_store.bounced(ROOM) == {A}
    event_id, notice = core.failures[-1]
    assert event_id == "$hello" and A in notice and "no longer receives" in notice
    assert "5.1.1" in notice and "no such user" not in notice
    relay.sent.clear()
    await _say(gateway, store, "Second", event_id="$second")
    assert [e for _, e, _ in relay.sent] == [[B]]
    await email_store.add_contact(ROOM, A)  # a member vouches for the address again
    relay.sent.clear()
    third = await _say(gateway, store, "Third", event_id="$third")
    assert [e for _, e, _ in relay.sent] == [[A], [B]]
    # The MTA rewrote B (an alias): the bounce address still names the contact.
    await _arrive(gateway, store, _dsn(third, "b.real@mailhost.example"), "", KIND_BOUNCE,
                  rcpt=await _bounce_address(gateway, third, B))  # fmt: skip
    assert await email_store.bounced(ROOM) == {B}


async def test_a_recipient_cannot_forge_a_bounce_for_another(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    """Anna writes, Cc Ben; the room answers both. Anna knows the answer's Message-ID and that
    Ben got it, and her own copy's bounce address (its Return-Path): none of it marks Ben."""
    gateway, core, relay, email_store = parts
    await _arrive(gateway, store, _raw(A, "Q", Cc=B), A)
    answer = await _say(gateway, store, "Answer", event_id="$ans", reply_to="<anna@example.org>")
    senders = {envelope[0]: sender for sender, envelope, _ in relay.sent}
    assert sorted(senders) == [A, B] and senders[A] != senders[B]  # one copy each
    forged = _dsn(answer, B).replace(
        b"550 5.1.1 no such user", b"Ben asked to be reached at ben@evil.example from now on"
    )
    await _arrive(gateway, store, forged, "", KIND_BOUNCE)  # to the portal's address
    await _arrive(gateway, store, forged, "", KIND_BOUNCE, rcpt=senders[A])  # to her own
    assert await email_store.bounced(ROOM) == {A}  # her own copy's address names only her
    assert all("evil.example" not in notice for _, notice in core.failures)


async def test_every_mail_in_and_out_is_recorded_with_its_hash_in_the_room_event(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    gateway, _, _, email_store = parts
    raw = _raw(A, "Keep this")
    event = await _arrive(gateway, store, raw, A)
    assert event is not None
    digest = hashlib.sha256(raw).hexdigest()
    assert event.parts[0].extra == {RECORD_KEY: digest}
    records = Records(email_store)
    assert await records.raw(digest) == raw
    [ref] = await records.find("<anna@example.org>")
    assert (ref.portal, ref.direction) == (ROOM, DIRECTION_IN)
    message_id = await _say(gateway, store, "Kept too", event_id="$kept",
                            reply_to="<anna@example.org>")  # fmt: skip
    [out] = await records.find(message_id)
    assert out.direction == DIRECTION_OUT
    sent = await records.raw(out.sha256)
    assert sent is not None and b"Kept too" in sent and f"To: {A}".encode() in sent


async def test_an_unverified_mail_is_answered_to_its_sender_only_and_bounces_are_recorded(
    parts: tuple[EmailGateway, Core, RecordingRelay, EmailStore], store: Store
) -> None:
    """Mail delivered marked unverified (``unverified_mail: mark``): its Reply-To and Cc may be
    anyone's (a forger would name up to twenty victims there)."""
    gateway, _, relay, email_store = parts
    crowd = ", ".join(f"victim{n}@target{n}.example" for n in range(20))
    raw = _raw(A, "Please forward", Cc=f"{B}, {C}", Reply_To=crowd)
    payload = {**encode_payload(raw, A), unverified.PAYLOAD_KEY: "dmarc=fail"}
    item = RemoteInput(portal=portal_key(ROOM), kind=KIND_MAIL, payload=payload,
                       dedupe_id="<anna@example.org>")  # fmt: skip
    [event] = await gateway.convert_remote(item)
    await store.add_message(Message(
        network=NETWORK, portal_id=portal_key(ROOM).remote_id, remote_id=cast(Any, event).id,
        mxid="$unverified", room_id="!room:hub.test", sender_id=A,
    ))  # fmt: skip
    await _say(gateway, store, "Who are you?", event_id="$who", reply_to="<anna@example.org>")
    assert [e for _, e, _ in relay.sent] == [[A]]
    bounce = _dsn("<x@mail.test>", A)
    await _arrive(gateway, store, bounce, "", KIND_BOUNCE)
    [ref] = await Records(email_store).find(f"<dsn-{A}@mx.example.org>")
    assert ref.direction == DIRECTION_IN
    assert await Records(email_store).raw(ref.sha256) == bounce


async def test_a_contact_must_be_a_mail_address_outside_the_bridge(store: Store) -> None:
    from bridge.email.connector import EmailConnector

    connector = EmailConnector()
    key = portal_key(ROOM)
    with pytest.raises(BridgeError):  # not started: no store to write to
        await connector.list_contacts(key)
    email_store = EmailStore(store.database)
    await email_store.upgrade()
    connector._store, connector._domain = email_store, "mail.test"
    for bad in ("no-at-sign", "a@b@c.example", "x\r\nBcc: v@evil.example", "other.x@MAIL.test"):
        with pytest.raises(PermanentError) as refused:
            await connector.add_contact(key, bad)
        assert refused.value.user_message
    assert await connector.list_contacts(key) == []
    added = await connector.add_contact(key, " Anna@One.Example ")
    assert added.remote_id == A and [c.remote_id for c in await connector.list_contacts(key)] == [A]
    assert not await connector.remove_contact(key, "not an address")
    assert await connector.remove_contact(key, "ANNA@one.example")
    assert await connector.list_contacts(key) == []
