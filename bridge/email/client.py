"""The mail gateway: the one client that serves every Matrix user of the email network.

Mail in: the listener hands each mail to :meth:`EmailGateway.receive`, which refuses what no
room may see (malformed mail, an unverified sender) and stores the rest with
``ctx.accept_remote`` once per recipient portal before the mail server gets its ``250``. In the
portal's ordered queue :meth:`EmailGateway.convert_remote` finds the conversation the mail
continues and turns it into the room's message; the core sends it, however long the homeserver
is away. Mail out: a Matrix message in a portal goes from the portal's address to whom a mail
client would send it (:mod:`bridge.email.recipients`); while the relay is unreachable the portal
waits and sends it when it is back. Every mail in and out is kept as a record
(:mod:`bridge.email.records`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from email.message import EmailMessage

from prometheus_client import Counter

from bridge.core import (
    BridgeError,
    ChatInfo,
    ConnectorContext,
    LoginID,
    MatrixMessage,
    NotSupported,
    PermanentError,
    PortalKey,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
    RemoteUserID,
    TransientError,
    UserInfo,
)
from bridge.core.federation import remote_domain
from bridge.email import unverified
from bridge.email.bounces import BOUNCE_TOKEN_KEY, handle_bounce
from bridge.email.config import EmailConfig
from bridge.email.from_matrix import Parent, compose_from_matrix
from bridge.email.ids import portal_key
from bridge.email.inbound import UNAVAILABLE
from bridge.email.outbound import Relay, wire_form
from bridge.email.parsing import MailParser, ParserUnavailable
from bridge.email.protocol.addresses import (
    InvalidAddress,
    is_own_message_id,
    message_id_for_event,
    new_portal_address,
    normalize_address,
    split_address,
)
from bridge.email.protocol.compose import base_subject
from bridge.email.protocol.parse import Bounce, MalformedMail, ParsedMail
from bridge.email.received import (
    KIND_BOUNCE,
    KIND_MAIL,
    ParsedMails,
    decode_payload,
    encode_payload,
    message_id_of,
    parse_stored,
)
from bridge.email.recipients import Delivery, correspondents, is_automatic, plan
from bridge.email.records import DIRECTION_IN, DIRECTION_OUT, RECORD_KEY, Records
from bridge.email.store import EmailStore, StoredMail
from bridge.email.to_matrix import AttachmentPolicy, mail_parts
from bridge.email.verify import SenderVerifier
from bridge.email.verp import SECRET_NAME, BounceAddresses, split_bounce_address
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import Portal, RemoteInput

ACCEPTED = "250 2.0.0 Accepted for the room"
NO_CONTACTS = (
    "Nobody receives this by mail: this room has no contacts yet. Add one with `email contacts"
    " <room> add <address>` (to the bridge bot), or answer a mail sent to {address} with a reply."
)
NOBODY_TO_ANSWER = (
    "Nobody receives this by mail: the mail you answer was automatic (or everyone on it bounced)."
    " Answer a mail a person wrote, or start a new conversation."
)
TOO_MANY_CONTACTS = "This room has too many contacts; remove some first."
DEFERRED = UNAVAILABLE
LOCAL = "127.0.0.1"


class EmailGateway:
    login_id = LoginID("")

    def __init__(
        self, ctx: ConnectorContext, cfg: EmailConfig, store: EmailStore, relay: Relay
    ) -> None:
        self._ctx = ctx
        self._cfg = cfg
        self._store = store
        self._relay = relay
        self._records = Records(store)
        self._log = ctx.log
        self._parsed = ParsedMails()
        self._verifier = SenderVerifier(cfg)
        self._parser = MailParser(
            cfg.parse_limits,
            workers=cfg.parse_workers,
            timeout=cfg.parse_timeout,
            memory_bytes=cfg.parse_memory_bytes,
            trust_anchors=cfg.smime_trust_anchors or None,
            log=ctx.log,
        )
        self._relay_problem: str | None = None
        self._bounce_addresses: BounceAddresses | None = None
        self._inbound = Counter(
            "pontis_email_inbound",
            "Mail received from the mail server, by outcome",
            ["outcome"],
            registry=ctx.metrics.registry,
        )
        self._outbound = Counter(
            "pontis_email_outbound",
            "Mail sent from Matrix, by outcome",
            ["outcome"],
            registry=ctx.metrics.registry,
        )

    # --- NetworkClient ---------------------------------------------------------------------

    async def connect(self) -> None:
        try:  # the workers start now rather than delay the first mail
            await self._parser.start()
        except Exception as err:
            self._log.error("Could not start the mail parse workers (mail gets 451): %s", err)
        problem = await self._relay.check()
        if problem is not None:
            self._log.warning("Outgoing mail relay: %s", problem)
        self._relay_problem = problem
        self._ctx.set_client_state(
            self.login_id, connected=problem is None, message=problem or "relay reachable"
        )

    def _relay_state(self, problem: str | None) -> None:
        """Report the relay going away or coming back (not every mail while it stays so)."""
        if (problem is None) == (self._relay_problem is None):
            return
        self._relay_problem = problem
        if problem is None:
            self._log.info("Outgoing mail relay is reachable again")
        self._ctx.set_client_state(
            self.login_id, connected=problem is None, message=problem or "relay reachable"
        )

    async def disconnect(self) -> None:
        await self._parser.close()
        self._verifier.close()
        self._ctx.set_client_state(self.login_id, connected=False, message="stopped")

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        return ChatInfo(name=portal.remote_id)

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        return UserInfo(name=user)

    # --- starting conversations from Matrix -------------------------------------------------

    async def start_direct_chat(self, user: RemoteUserID, matrix_user: str) -> PortalKey:
        address = self._correspondent(user)
        portal = await self._store.dm_portal(matrix_user, address)
        if portal is None:
            portal = new_portal_address(matrix_user.lstrip("@").split(":")[0], self._cfg.domain)
            await self._store.set_dm_portal(matrix_user, address, portal)
        await self._store.add_contact(portal, address)  # again: a new chat clears a bounce
        return portal_key(portal)

    async def handle_matrix_invite(self, portal: Portal, inviter: str, user: RemoteUserID) -> None:
        address = self._correspondent(user)
        if not await self._store.add_contact(portal.remote_id, address):
            raise PermanentError(f"too many contacts in {portal.remote_id}",
                                 user_message=TOO_MANY_CONTACTS)  # fmt: skip

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        if not matrix_user:
            raise NotSupported("email portals have no aliases")
        if "@" in remote_id:
            raise PermanentError(
                f"bridge_room with an address: {remote_id!r}",
                user_message="Give the room a short name, like `procurement`: the bridge makes"
                " up an address that nobody can guess.",
            )
        return portal_key(new_portal_address(remote_id, self._cfg.domain)), ChatInfo()

    def _correspondent(self, user: str) -> str:
        try:
            address = normalize_address(user)
        except InvalidAddress as err:
            raise PermanentError(
                f"not a mail address: {user!r}", user_message=f"That is not a mail address: {err}"
            ) from err
        if split_address(address)[1] == self._cfg.domain:
            raise PermanentError(
                f"chat with own domain {address}",
                user_message="That address belongs to the bridge itself.",
            )
        return address

    # --- mail in ---------------------------------------------------------------------------

    def sender_refusal(self, mail_from: str) -> str | None:
        """The SMTP answer refusing mail from ``mail_from`` under the federation policy, before
        any recipient is looked up; None if its domain may reach this hub's users. A bounce
        (empty sender) answers mail the bridge sent, so it is let through."""
        if mail_from in ("", "<>"):
            return None
        refused = self._ctx.federation.refusal(
            self._ctx.network, remote_domain(mail_from), self._ctx.domain, entry="mail in"
        )
        if refused is None:
            return None
        return f"550 5.7.1 Refused by the hub's federation policy: {refused}"

    async def is_portal_address(self, address: str) -> bool:
        """Whether ``address`` is a bridged portal's, or one of its bounce addresses
        (:mod:`bridge.email.verp`; whether the token is right is decided on the bounce)."""
        address = split_bounce_address(address)[0]
        portal = await self._ctx.store.get_portal(portal_key(address).remote_id)
        return portal is not None and portal.mxid is not None

    async def receive(
        self, mail_from: str, recipients: list[str], raw: bytes, *, peer: str | None = LOCAL
    ) -> list[str]:
        """Decide on the mail with what it says about itself, then keep it for each recipient
        portal: a ``250`` means it is stored, and is bridged in the portal's turn. ``peer`` is
        the address of the mail server that delivered it (the listener always says; the
        default is for callers inside the process)."""
        mail = await self._parse_incoming(raw)
        if isinstance(mail, str):
            return [mail] * len(recipients)
        if self._cfg.domain in mail.loop_markers or (
            mail.message_id is not None and is_own_message_id(mail.message_id, self._cfg.domain)
        ):
            self._inbound.labels("loop").inc()
            self._log.info("Dropped mail %s: it came from this bridge", mail.message_id)
            return [ACCEPTED] * len(recipients)
        kind = KIND_MAIL
        doubt: str | None = None  # why the sender is not verified, when it is marked so
        if mail.bounce is not None and mail_from in ("", "<>"):
            kind = KIND_BOUNCE
        else:
            refusal, doubt = await self._refuse_sender(mail, raw, mail_from, peer)
            if refusal is not None:
                self._inbound.labels("refused_sender").inc()
                return [refusal] * len(recipients)
        message_id = message_id_of(mail, raw)
        payload = encode_payload(raw, mail_from)
        if doubt is not None:
            payload[unverified.PAYLOAD_KEY] = doubt
        answers = []
        for recipient in recipients:
            address, token = split_bounce_address(recipient)
            item_payload = payload
            if kind == KIND_BOUNCE and token is not None:  # a bounce to the copy's own address
                item_payload = {**payload, BOUNCE_TOKEN_KEY: token}
            item = RemoteInput(
                portal=portal_key(address), kind=kind, payload=item_payload, dedupe_id=message_id
            )
            answers.append(await self._accept(item, mail, len(raw)))
        return answers

    async def _parse_incoming(self, raw: bytes) -> ParsedMail | str:
        """The mail parsed off the event loop, or the answer for all its recipients: 554 when
        the mail is at fault (malformed, over a limit), 451 when the bridge is."""
        try:
            return await self._parser.parse(raw)
        except MalformedMail as err:
            self._inbound.labels("malformed").inc()
            self._log.info("Refused a malformed mail (%d bytes): %s", len(raw), err)
            return f"554 5.6.0 Malformed mail: {err}"
        except ParserUnavailable as err:
            self._inbound.labels("deferred").inc()
            self._log.warning("Deferred a mail (%d bytes), the mail server retries: %s",
                              len(raw), err)  # fmt: skip
            return DEFERRED

    async def _accept(self, item: RemoteInput, mail: ParsedMail, size: int) -> str:
        """Store ``item`` durably; the answer for its recipient."""
        self._parsed.put(item, mail, size)  # before: the queue may convert it at once
        try:
            fresh = await self._ctx.accept_remote(item)
        except Exception as err:  # the store is away: the mail server keeps it and retries
            self._parsed.take(item)
            self._inbound.labels("deferred").inc()
            self._log.warning("Deferred mail %s to %s: %s", item.dedupe_id, item.portal, err)
            return DEFERRED
        if not fresh:
            self._parsed.take(item)
            self._log.debug("Mail %s to %s is already pending", item.dedupe_id, item.portal)
            self._inbound.labels("duplicate").inc()
        else:
            self._inbound.labels("bounce" if item.kind == KIND_BOUNCE else "accepted").inc()
        return ACCEPTED

    async def _refuse_sender(
        self, mail: ParsedMail, raw: bytes, mail_from: str, peer: str | None
    ) -> tuple[str | None, str | None]:
        """(the SMTP answer for a sender the rooms must not see, or None; why the sender is
        not verified when the mail is delivered marked as such, or None)."""
        if not mail.from_:
            return "550 5.7.1 The mail has no sender", None
        sender = mail.from_[0].address
        domain = split_address(sender)[1]
        if domain == self._cfg.domain:
            return "550 5.7.1 Mail from the bridge's own domain is not accepted", None
        # The envelope sender was checked before DATA; the From domain is who the room sees
        # (and what DMARC verifies): a refused domain must not come in under an allowed envelope.
        refused = self._ctx.federation.refusal(
            self._ctx.network, domain, self._ctx.domain, entry="mail in"
        )
        if refused is not None:
            self._log.info("Refused mail %s from %s: federation policy", mail.message_id, sender)
            return f"550 5.7.1 Refused by the hub's federation policy: {refused}", None
        check = await self._verifier.check(raw, domain, mail_from=mail_from, peer=peer)
        if check.verified:
            self._log.debug("Mail %s from %s verified: %s", mail.message_id, sender, check.reason)
            return None, None
        if check.temporary:
            self._inbound.labels("verification_deferred").inc()
            self._log.warning("Deferred mail %s from %s, the mail server retries: %s",
                              mail.message_id, sender, check.reason)  # fmt: skip
            return "451 4.4.3 The sender cannot be verified now; try again later", None
        if self._cfg.unverified_mail == "mark":
            self._inbound.labels("unverified").inc()
            self._log.info("Mail %s from %s is not verified, delivered marked so: %s",
                           mail.message_id, sender, check.reason)  # fmt: skip
            return None, check.reason
        self._log.info("Refused mail %s from %s (delivered by %s): not verified: %s",
                       mail.message_id, sender, peer, check.reason)  # fmt: skip
        return f"550 5.7.1 The sender could not be verified ({self._cfg.sender_verification})", None

    async def convert_remote(self, item: RemoteInput) -> list[RemoteEvent]:
        """A stored mail as its Matrix message, inside the portal's queue (again after a
        restart, with the same result): the thread it continues is looked up here, once every
        earlier mail of the portal is on Matrix."""
        if item.kind not in (KIND_MAIL, KIND_BOUNCE):
            raise PermanentError(f"unknown stored email input {item.kind!r}")
        raw = decode_payload(item)
        mail = self._parsed.take(item) or await parse_stored(raw, self._parser)
        address = item.portal.remote_id
        if item.kind == KIND_BOUNCE:
            bounce_id = item.dedupe_id or message_id_of(mail, raw)
            await self._records.keep(address, bounce_id, DIRECTION_IN, raw)
            if mail.bounce is not None:
                token = item.payload.get(BOUNCE_TOKEN_KEY)
                await self._bounced(address, mail.bounce, str(token) if token else None)
            return []
        if not mail.from_:  # refused at acceptance; only a changed parser gets here
            raise PermanentError(
                "stored mail without a sender", user_message="A mail without a sender arrived."
            )
        message_id = RemoteMessageID(item.dedupe_id or message_id_of(mail, raw))
        doubt = item.payload.get(unverified.PAYLOAD_KEY)
        event = await self._message_event(
            address, message_id, mail, raw, doubt=str(doubt) if doubt is not None else None
        )
        # Before the events are sent, so a retry after a crash does it again (all idempotent).
        # Nobody becomes a contact by writing: a reply goes to this mail's correspondents.
        automatic = is_automatic(mail, str(item.payload.get("mail_from", "")))
        reply_to, reply_cc = correspondents(
            mail, own_domain=self._cfg.domain, automatic=automatic, verified=doubt is None
        )  # unverified: its Reply-To, To and Cc may be anyone's; answer only the claimed sender
        await self._store.remember_mail(
            address, message_id, mail.subject, [*mail.references, *mail.in_reply_to],
            reply_to=reply_to, reply_cc=reply_cc,
        )  # fmt: skip
        digest = await self._records.keep(address, message_id, DIRECTION_IN, raw)
        if event.parts:
            event.parts[0].extra[RECORD_KEY] = digest
        return [event]

    async def _message_event(
        self,
        address: str,
        message_id: RemoteMessageID,
        mail: ParsedMail,
        raw: bytes,
        *,
        doubt: str | None = None,
    ) -> RemoteMessage:
        """The room's message; ``doubt`` (why the sender is not verified) marks it and sends
        it from the sender's unverified ghost (:mod:`bridge.email.unverified`)."""
        sender = mail.from_[0]
        verified = doubt is None
        parent = await self._parent(address, mail, message_id)
        thread_subject = parent[1] if parent is not None else None
        show_subject = thread_subject is None or base_subject(mail.subject) != base_subject(
            thread_subject
        )
        parts = await mail_parts(
            mail,
            raw,
            show_subject=show_subject,
            strip_quotes=self._cfg.strip_quotes,
            policy=AttachmentPolicy(self._cfg.attachment_types, self._cfg.attachment_max_bytes),
        )
        if doubt is not None:
            unverified.mark(parts, sender.address, doubt)
        return RemoteMessage(
            portal=portal_key(address),
            sender=unverified.sender_id(sender.address, verified=verified),
            sender_info=UserInfo(
                name=unverified.display_name(sender.name, sender.address, verified=verified)
            ),
            id=message_id,
            parts=parts,
            reply_to=parent[0].remote_id if parent is not None else None,
            thread_root=(
                (parent[0].thread_root_id or parent[0].remote_id)
                if parent is not None and self._cfg.threads
                else None
            ),
        )

    async def _parent(
        self, address: str, mail: ParsedMail, own_id: str
    ) -> tuple[StoredMessage, str] | None:
        """The bridged message this mail answers, and that conversation's subject."""
        for candidate in [*mail.in_reply_to, *reversed(mail.references)]:
            if candidate == own_id:  # once bridged, it must not become its own parent
                continue
            message = await self._ctx.store.get_message(
                portal_key(address).remote_id, RemoteMessageID(candidate)
            )
            if message is not None:
                root = message.thread_root_id or message.remote_id
                stored = await self._store.mail(address, root) or await self._store.mail(
                    address, message.remote_id
                )
                return message, stored.subject if stored else mail.subject
        return None

    async def _bounced(self, address: str, bounce: Bounce, token: str | None) -> None:
        await handle_bounce(
            self._ctx, self._store, await self._bounces(), address, bounce, token=token
        )

    async def _bounces(self) -> BounceAddresses:
        if self._bounce_addresses is None:
            self._bounce_addresses = BounceAddresses(await self._store.secret(SECRET_NAME))
        return self._bounce_addresses

    # --- mail out --------------------------------------------------------------------------

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        address = msg.portal.remote_id
        answered = await self._answered(address, msg)
        chosen = plan(
            [parent for parent, _ in answered],
            [c.address for c in await self._store.contacts(address)],
            await self._store.bounced(address),
        )
        deliveries = chosen.deliveries
        if not deliveries:
            raise PermanentError(f"no recipients in {address}", user_message=(
                NOBODY_TO_ANSWER if answered else NO_CONTACTS.format(address=address)
            ))  # fmt: skip
        message_id = message_id_for_event(msg.event_id, self._cfg.domain)
        outgoing = await compose_from_matrix(
            msg,
            from_address=address,
            deliveries=deliveries,
            message_id=message_id,
            parent=self._reply_parent(msg, answered),
            loop_marker=self._cfg.domain,
        )
        single = None if chosen.separately else deliveries[0]
        # Before anything is sent: a failure here is retried whole, and a bounce can only be
        # checked against the recipients kept here. A retry keeps the first values.
        await self._store.remember_mail(
            address, message_id, outgoing.subject, outgoing.references,
            reply_to=single.to if single else (), reply_cc=single.cc if single else (),
            sent_to=[r for d in deliveries for r in d.envelope], separately=chosen.separately,
        )  # fmt: skip
        refused = await self._send_copies(address, message_id, deliveries, outgoing.mails)
        self._relay_state(None)
        self._outbound.labels("sent").inc()
        if refused:
            answers = "; ".join(f"{rcpt}: {answer}" for rcpt, answer in refused.items())
            notice = PermanentError(
                f"relay refused {answers}",
                user_message=f"The mail server refused some recipients ({answers}).",
            )
            # After this returns the core stores the message, so the notice can point at it.
            self._ctx.background(self._ctx.delivery_failed(msg.event_id, notice), name="refused")
        return RemoteMessageID(message_id)

    async def _send_copies(
        self,
        address: str,
        message_id: str,
        deliveries: list[Delivery],
        mails: list[EmailMessage],
    ) -> dict[str, str]:
        """Send one copy per recipient, each from its own bounce address; the recipients
        refused, with why. Raises only while no copy is out, or when every copy
        sent so far is durably marked so: then the core retries and only the missing go.

        Each copy is marked sent in ``email_sent_copy`` right after the relay took it, so a
        retry of the message (a relay or store outage half-way) never sends it again. Once a
        copy is out, a store failure is logged, never raised: a retry would send it twice."""
        bounces = await self._bounces()
        done = await self._store.sent_copies(address, message_id)
        refused: dict[str, str] = {}
        sent = [r for d in deliveries for r in d.envelope if r in done]
        durable = True  # every copy out so far is marked in the store
        first_failure: BridgeError | None = None
        for delivery, mail in zip(deliveries, mails, strict=True):
            flat = wire_form(mail, delivery.envelope)
            fresh = False
            for rcpt in delivery.envelope:
                if rcpt in done:
                    continue
                sender = bounces.sender(address, message_id, rcpt)
                try:
                    answer = await self._relay.send(mail, sender=sender, recipients=[rcpt])
                except TransientError as away:
                    self._relay_state(str(away))
                    if not sent or durable:  # the portal waits; the retry sends what is missing
                        self._outbound.labels("deferred").inc()
                        raise
                    refused[rcpt] = str(away)
                    continue
                except BridgeError as failed:
                    refused[rcpt] = failed.user_message or str(failed)
                    first_failure = first_failure or failed
                    continue
                if rcpt in answer:
                    refused[rcpt] = answer[rcpt]
                    continue
                sent.append(rcpt)
                fresh = True
                if not await self._quietly(
                    self._store.copy_sent(address, message_id, rcpt), "mark a copy sent", rcpt
                ):
                    durable = False
            if fresh:
                await self._quietly(
                    self._records.keep(address, message_id, DIRECTION_OUT, flat),
                    "keep the record of",
                    ", ".join(delivery.envelope),
                )
        if not sent and first_failure is not None:
            self._outbound.labels("failed").inc()
            self._relay_state(None)
            raise first_failure
        await self._quietly(self._store.prune_sent_copies(), "prune the sent copies", address)
        return refused

    async def _quietly(self, work: Awaitable[object], what: str, whom: str) -> bool:
        """Run store ``work`` after a copy went out: a failure is logged, not raised (the core
        would retry and send the copy twice); whether it worked."""
        try:
            await work
        except Exception as err:
            self._log.error("Sent mail, but could not %s %s (nothing is retried): %s",
                            what, whom, err)  # fmt: skip
            return False
        return True

    async def _answered(
        self, address: str, msg: MatrixMessage
    ) -> list[tuple[StoredMail | None, str]]:
        """The mail ``msg`` answers and its conversation's first mail, with their ids; empty
        for a new conversation."""
        target = msg.reply_to or msg.thread_root
        if target is None:
            return []
        chain = [(await self._store.mail(address, target.remote_id), str(target.remote_id))]
        root = target.thread_root_id
        if root and root != target.remote_id:
            chain.append((await self._store.mail(address, root), str(root)))
        return chain

    def _reply_parent(
        self, msg: MatrixMessage, answered: list[tuple[StoredMail | None, str]]
    ) -> Parent | None:
        if not answered:
            return None
        target, target_id = answered[0]
        stored = target or next((mail for mail, _ in answered[1:] if mail is not None), None)
        subject, references = (stored.subject, stored.references) if stored else ("", [])
        return Parent(message_id=target_id, subject=subject, references=references)
