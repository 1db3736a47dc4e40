"""The mail gateway: the one client that serves every Matrix user of the email network.

Mail in: the listener hands each mail to :meth:`EmailGateway.receive`, which refuses what no
room may see (malformed mail, an unverified sender) and stores the rest with
``ctx.accept_remote`` once per recipient portal before the mail server gets its ``250``. In the
portal's ordered queue :meth:`EmailGateway.convert_remote` finds the conversation the mail
continues and turns it into the room's message; the core sends it, however long the homeserver
is away. Mail out: a Matrix message in a portal goes to the portal's participants from the
portal's address; while the relay is unreachable the portal waits and sends it when it is back.
"""

from __future__ import annotations

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
from bridge.email.config import EmailConfig
from bridge.email.from_matrix import Parent, compose_from_matrix
from bridge.email.ids import portal_key
from bridge.email.inbound import UNAVAILABLE
from bridge.email.outbound import Relay
from bridge.email.protocol.addresses import (
    InvalidAddress,
    is_own_message_id,
    message_id_for_event,
    new_portal_address,
    normalize_address,
    split_address,
)
from bridge.email.protocol.authres import read_authentication_results, sender_verified
from bridge.email.protocol.compose import base_subject
from bridge.email.protocol.parse import Bounce, MalformedMail, ParsedMail, parse_mail
from bridge.email.received import (
    KIND_BOUNCE,
    KIND_MAIL,
    ParsedMails,
    decode_payload,
    encode_payload,
    message_id_of,
    parse_stored,
)
from bridge.email.store import EmailStore
from bridge.email.to_matrix import mail_parts
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import Portal, RemoteInput

ACCEPTED = "250 2.0.0 Accepted for the room"
DEFERRED = UNAVAILABLE


class EmailGateway:
    login_id = LoginID("")

    def __init__(
        self, ctx: ConnectorContext, cfg: EmailConfig, store: EmailStore, relay: Relay
    ) -> None:
        self._ctx = ctx
        self._cfg = cfg
        self._store = store
        self._relay = relay
        self._log = ctx.log
        self._parsed = ParsedMails()
        self._relay_problem: str | None = None
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
            await self._store.add_participant(portal, address)
        return portal_key(portal)

    async def handle_matrix_invite(self, portal: Portal, inviter: str, user: RemoteUserID) -> None:
        await self._store.add_participant(portal.remote_id, self._correspondent(user))

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
        portal = await self._ctx.store.get_portal(portal_key(address).remote_id)
        return portal is not None and portal.mxid is not None

    async def receive(self, mail_from: str, recipients: list[str], raw: bytes) -> list[str]:
        """Decide on the mail with what it says about itself, then keep it for each recipient
        portal: a ``250`` means it is stored, and is bridged in the portal's turn."""
        try:
            mail = parse_mail(raw)
        except MalformedMail as err:
            self._inbound.labels("malformed").inc()
            self._log.info("Refused a malformed mail: %s", err)
            return [f"554 5.6.0 Malformed mail: {err}"] * len(recipients)
        if self._cfg.domain in mail.loop_markers or (
            mail.message_id is not None and is_own_message_id(mail.message_id, self._cfg.domain)
        ):
            self._inbound.labels("loop").inc()
            self._log.info("Dropped mail %s: it came from this bridge", mail.message_id)
            return [ACCEPTED] * len(recipients)
        kind = KIND_MAIL
        if mail.bounce is not None and mail_from in ("", "<>"):
            kind = KIND_BOUNCE
        elif (refusal := self._refuse_sender(mail)) is not None:
            self._inbound.labels("refused_sender").inc()
            return [refusal] * len(recipients)
        message_id = message_id_of(mail, raw)
        payload = encode_payload(raw, mail_from)
        answers = []
        for address in recipients:
            item = RemoteInput(
                portal=portal_key(address), kind=kind, payload=payload, dedupe_id=message_id
            )
            answers.append(await self._accept(item, mail, len(raw)))
        return answers

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

    def _refuse_sender(self, mail: ParsedMail) -> str | None:
        """The SMTP answer for a sender the rooms must not see, or ``None``."""
        if not mail.from_:
            return "550 5.7.1 The mail has no sender"
        sender = mail.from_[0].address
        domain = split_address(sender)[1]
        if domain == self._cfg.domain:
            return "550 5.7.1 Mail from the bridge's own domain is not accepted"
        if self._cfg.sender_verification == "none":
            return None
        verdict = read_authentication_results(
            mail.authentication_results, self._cfg.trusted_authserv_id
        )
        if sender_verified(verdict, domain, self._cfg.sender_verification):
            return None
        self._log.info(
            "Refused mail %s: sender domain %s not verified (dmarc=%s)",
            mail.message_id,
            domain,
            verdict.dmarc,
        )
        return f"550 5.7.1 The sender could not be verified ({self._cfg.sender_verification})"

    async def convert_remote(self, item: RemoteInput) -> list[RemoteEvent]:
        """A stored mail as its Matrix message, inside the portal's queue (again after a
        restart, with the same result): the thread it continues is looked up here, once every
        earlier mail of the portal is on Matrix."""
        if item.kind not in (KIND_MAIL, KIND_BOUNCE):
            raise PermanentError(f"unknown stored email input {item.kind!r}")
        raw = decode_payload(item)
        mail = self._parsed.take(item) or parse_stored(raw)
        address = item.portal.remote_id
        if item.kind == KIND_BOUNCE:
            if mail.bounce is not None:
                await self._bounced(address, mail.bounce)
            return []
        if not mail.from_:  # refused at acceptance; only a changed parser gets here
            raise PermanentError(
                "stored mail without a sender", user_message="A mail without a sender arrived."
            )
        message_id = RemoteMessageID(item.dedupe_id or message_id_of(mail, raw))
        event = await self._message_event(address, message_id, mail, raw)
        sender = mail.from_[0].address
        # Before the events are sent, so a retry after a crash does it again (both idempotent).
        await self._store.add_participant(address, sender)
        await self._store.remember_mail(
            address, message_id, mail.subject, [*mail.references, *mail.in_reply_to]
        )
        return [event]

    async def _message_event(
        self, address: str, message_id: RemoteMessageID, mail: ParsedMail, raw: bytes
    ) -> RemoteMessage:
        sender = mail.from_[0]
        parent = await self._parent(address, mail, message_id)
        thread_subject = parent[1] if parent is not None else None
        show_subject = thread_subject is None or base_subject(mail.subject) != base_subject(
            thread_subject
        )
        return RemoteMessage(
            portal=portal_key(address),
            sender=RemoteUserID(sender.address),
            sender_info=UserInfo(
                name=f"{sender.name} ({sender.address})" if sender.name else sender.address
            ),
            id=message_id,
            parts=await mail_parts(
                mail, raw, show_subject=show_subject, strip_quotes=self._cfg.strip_quotes
            ),
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
                return message, stored[0] if stored else mail.subject
        return None

    async def _bounced(self, address: str, bounce: Bounce) -> None:
        if bounce.original_message_id is None:
            self._log.info("Bounce for %s without the original Message-ID", address)
            return
        message = await self._ctx.store.get_message(
            portal_key(address).remote_id, RemoteMessageID(bounce.original_message_id)
        )
        if message is None:
            self._log.info("Bounce for unknown mail %s", bounce.original_message_id)
            return
        who = ", ".join(bounce.recipients) or "a recipient"
        reason = bounce.diagnostic or bounce.status
        err = PermanentError(
            f"bounce {bounce.status} for {bounce.original_message_id}",
            user_message=f"The mail to {who} could not be delivered: {reason}",
        )
        await self._ctx.delivery_failed(message.mxid, err)

    # --- mail out --------------------------------------------------------------------------

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        address = msg.portal.remote_id
        recipients = await self._store.participants(address)
        if not recipients:
            raise PermanentError(
                f"no participants in {address}",
                user_message=f"Nobody receives this by mail yet. Mail sent to {address} reaches"
                " this room, and its senders then get the room's messages.",
            )
        message_id = message_id_for_event(msg.event_id, self._cfg.domain)
        outgoing = await compose_from_matrix(
            msg,
            from_address=address,
            recipients=recipients,
            message_id=message_id,
            parent=await self._reply_parent(address, msg),
            loop_marker=self._cfg.domain,
        )
        try:
            refused = await self._relay.send(outgoing.mail, sender=address, recipients=recipients)
        except TransientError as away:
            # The portal waits and sends it again, in order, however long the relay is away.
            self._outbound.labels("deferred").inc()
            self._relay_state(str(away))
            raise
        except BridgeError:
            self._outbound.labels("failed").inc()
            self._relay_state(None)
            raise
        self._relay_state(None)
        await self._store.remember_mail(address, message_id, outgoing.subject, outgoing.references)
        self._outbound.labels("sent").inc()
        if refused:
            answers = "; ".join(f"{rcpt}: {answer}" for rcpt, answer in refused.items())
            err = PermanentError(
                f"relay refused {answers}",
                user_message=f"The mail server refused some recipients ({answers}).",
            )
            # After this returns the core stores the message, so the notice can point at it.
            self._ctx.background(self._ctx.delivery_failed(msg.event_id, err), name="refused")
        return RemoteMessageID(message_id)

    async def _reply_parent(self, address: str, msg: MatrixMessage) -> Parent | None:
        target = msg.reply_to or msg.thread_root
        if target is None:
            return None
        stored = await self._store.mail(address, target.remote_id)
        if stored is None:
            root = target.thread_root_id
            stored = await self._store.mail(address, root) if root else None
        subject, references = stored if stored is not None else ("", [])
        return Parent(message_id=target.remote_id, subject=subject, references=references)
