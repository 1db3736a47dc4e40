"""The listener the mail server delivers to: LMTP (or SMTP) on the bridge's own event loop.

Recipients are checked at ``RCPT`` time, so mail for an address that is not a portal is refused
by the mail server before it is accepted from the sender (no backscatter). After ``DATA`` each
recipient gets its own answer (LMTP, RFC 2033), and a ``250`` only once the mail is stored in the
bridge's database: the mail server keeps and retries anything that got a ``4xx``. Anything
unexpected (the database away at ``RCPT``, a bug) is a ``451`` too, never aiosmtpd's ``500``,
which would make the mail server bounce a mail that may well be bridged on the next try.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.email.config import EmailConfig
from bridge.email.protocol.addresses import InvalidAddress, normalize_address, split_address

UNAVAILABLE = "451 4.3.0 The bridge cannot take this now; try again later"


class Receiver(Protocol):
    def sender_refusal(self, mail_from: str) -> str | None:
        """The answer refusing every recipient of mail from ``mail_from``, or None."""
        ...

    async def is_portal_address(self, address: str) -> bool: ...

    async def receive(
        self, mail_from: str, recipients: list[str], raw: bytes, *, peer: str | None = None
    ) -> list[str]:
        """One SMTP answer line per recipient, in order."""
        ...


class _Handler:
    """aiosmtpd handler hooks (``handle_RCPT``, ``handle_DATA``)."""

    def __init__(self, receiver: Receiver, cfg: EmailConfig, log: logging.Logger) -> None:
        self._receiver = receiver
        self._cfg = cfg
        self._log = log

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            address = normalize_address(address)
        except InvalidAddress as err:
            return f"553 5.1.3 Bad recipient address: {err}"
        if split_address(address)[1] != self._cfg.domain:
            return "550 5.1.2 This bridge does not receive mail for that domain"
        if len(envelope.rcpt_tos) >= self._cfg.max_recipients:
            return "452 4.5.3 Too many recipients"
        if refusal := self._receiver.sender_refusal(envelope.mail_from or ""):
            return refusal
        try:
            known = await self._receiver.is_portal_address(address)
        except Exception as err:
            self._log.warning("Could not look up the recipient %s: %s", address, err)
            return UNAVAILABLE
        if not known:
            return "550 5.1.1 No room has this address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        try:
            answers = await self._receiver.receive(
                envelope.mail_from or "", recipients, raw, peer=_peer_address(session)
            )
        except Exception:
            self._log.exception("Could not take a mail for %s", ", ".join(recipients))
            answers = [UNAVAILABLE] * len(recipients)
        answers = self._checked(answers, recipients)
        if isinstance(server, LMTP):
            for answer in answers[:-1]:
                await server.push(answer)
            return answers[-1]
        # SMTP has one answer for the whole mail: defer it if any recipient failed. Delivering
        # again to the others is harmless, the bridge recognises a Message-ID it has bridged.
        failed = [a for a in answers if not a.startswith("2")]
        return failed[0] if failed else answers[0]

    def _checked(self, answers: list[str], recipients: list[str]) -> list[str]:
        """Exactly one well-formed answer line per recipient, whatever ``receive`` returned.

        aiosmtpd answers 500 when pushing a line fails (a non-ASCII character in an error
        message taken from the mail), and with LMTP a missing line leaves the mail server
        waiting for the next recipient's answer: both are worse than a 451.
        """
        if len(answers) != len(recipients):
            self._log.error("Got %d answers for %d recipients; answering 451 to all",
                            len(answers), len(recipients))  # fmt: skip
            return [UNAVAILABLE] * len(recipients)
        return [smtp_line(answer) for answer in answers]


def smtp_line(answer: str) -> str:
    """``answer`` as one printable-ASCII line of at most 512 characters (RFC 5321 §4.5.3.1.5),
    or a 451 if it is not an SMTP answer at all."""
    if len(answer) < 3 or not answer[:3].isdigit() or answer[0] not in "245":
        return UNAVAILABLE
    text = "".join(c if " " <= c <= "~" else "?" for c in " ".join(answer.split()))
    return text[:510]


async def start_listener(
    receiver: Receiver, cfg: EmailConfig, log: logging.Logger | None = None
) -> asyncio.Server:
    handler = _Handler(receiver, cfg, log or logging.getLogger("pontis.email.inbound"))
    protocol = LMTP if cfg.protocol == "lmtp" else SMTP

    def factory() -> SMTP:
        return protocol(
            handler,
            data_size_limit=cfg.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=cfg.domain,
            ident="Pontis",
        )

    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, cfg.listen_host, cfg.listen_port)


def _peer_address(session: Session) -> str | None:
    """The IP address of the mail server that delivered (session.peer is (host, port, ...))."""
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else None
