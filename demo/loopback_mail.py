"""The demo's mail server where Postfix and Dovecot cannot run (packages missing, or not root):
one aiosmtpd SMTP server on the demo's own loop, doing the two things the demo needs of an MTA.

- Mail for the bridge's domain is relayed over SMTP to the bridge's inbound listener, and kept
  and retried every second while the bridge does not take it (as Postfix's queue would).
- Mail for people at ``agency.test`` is delivered into a Maildir per person under ``workdir``.
  There is no IMAP server: a person's mail is read from that directory (any Maildir reader, or
  ``mutt -f DIR``).

It offers the part of :class:`tests.e2e.mail.MailServers` that the demo uses (``add_user``,
``send``, ``wait_for_mail``, ``smtp_port``, ``bridge_lmtp_port``), with ``imap_port`` None.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.mail import AGENCY_DOMAIN
from tests.e2e.mail_client import parse_message
from tests.e2e.process import free_port

RETRY_SECONDS = 1.0
MAX_MESSAGE_BYTES = 25 * 1024 * 1024


class LoopbackMail:
    """SMTP on ``127.0.0.1:smtp_port``; the bridge listens (SMTP) on ``bridge_lmtp_port``."""

    imap_port: int | None = None
    domain = AGENCY_DOMAIN

    def __init__(
        self,
        workdir: Path,
        *,
        bridge_domain: str,
        bridge_lmtp_port: int,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bridge_domain = bridge_domain.lower()
        self.bridge_lmtp_port = bridge_lmtp_port
        self.smtp_port = free_port()
        self.max_message_bytes = max_message_bytes
        self.bounced: list[str] = []
        """Why each mail the bridge refused for good was dropped (an MTA would bounce it)."""
        self._users: dict[str, str] = {}
        self._returned: dict[str, set[str]] = {}
        self._server: asyncio.Server | None = None
        self._relay: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[tuple[str, list[str], bytes]] = asyncio.Queue()

    def maildir(self, address: str) -> Path:
        return self.workdir / address.lower() / "Maildir"

    def _box(self, address: str) -> mailbox.Maildir:
        path = self.maildir(address)
        path.parent.mkdir(parents=True, exist_ok=True)
        return mailbox.Maildir(path)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(
                self,
                hostname=f"mail.{AGENCY_DOMAIN}",
                enable_SMTPUTF8=True,
                data_size_limit=self.max_message_bytes,
            ),
            "127.0.0.1",
            self.smtp_port,
        )
        self._relay = asyncio.create_task(self._relay_loop(), name="demo mail relay")

    async def stop(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
            self._relay = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- the SMTP server's handler (aiosmtpd calls these) ---------------------------------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain != self.bridge_domain and address.lower() not in self._users:
            return f"550 5.1.1 <{address}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        to_bridge = []
        for rcpt in envelope.rcpt_tos:
            if rcpt.rpartition("@")[2].lower() == self.bridge_domain:
                to_bridge.append(rcpt)
            else:
                self._box(rcpt).add(raw)
        if to_bridge:
            self._queue.put_nowait((str(envelope.mail_from), to_bridge, raw))
        return "250 OK: queued"

    async def _relay_loop(self) -> None:
        """Hand queued mail to the bridge in order; retry what it cannot take yet (not up, or a
        4xx) every second, drop what it refuses for good (5xx) with a line saying why."""
        while True:
            sender, recipients, raw = await self._queue.get()
            while True:
                try:
                    await aiosmtplib.send(
                        raw,
                        sender=sender,
                        recipients=recipients,
                        hostname="127.0.0.1",
                        port=self.bridge_lmtp_port,
                        timeout=30,
                    )
                    break
                except aiosmtplib.SMTPRecipientsRefused as err:
                    if all(r.code >= 500 for r in err.recipients):
                        self._bounce(
                            sender, "; ".join(f"{r.code} {r.message}" for r in err.recipients)
                        )
                        break
                except aiosmtplib.SMTPResponseException as err:
                    if err.code >= 500:
                        self._bounce(sender, f"{err.code} {err.message}")
                        break
                except (aiosmtplib.SMTPException, OSError):
                    pass  # the bridge is not listening (yet): keep the mail, as a queue would
                await asyncio.sleep(RETRY_SECONDS)

    def _bounce(self, sender: str, reason: str) -> None:
        self.bounced.append(reason)
        print(f"demo mail: the bridge refused mail from {sender} for good: {reason}", flush=True)

    # -- what the demo does as the people at agency.test --------------------------------------

    def add_user(self, address: str, password: str) -> str:
        address = address.lower()
        if address.rpartition("@")[2] != AGENCY_DOMAIN:
            raise ValueError(f"{address!r}: mailbox users live at @{AGENCY_DOMAIN}")
        self._users[address] = password
        self._box(address)  # creates it
        return address

    async def send(
        self, message: EmailMessage, *, mail_from: str, rcpt_to: list[str]
    ) -> dict[str, tuple[int, str]]:
        try:
            refused, _ = await aiosmtplib.send(
                message,
                sender=mail_from,
                recipients=rcpt_to,
                hostname="127.0.0.1",
                port=self.smtp_port,
                timeout=10,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            return {r.recipient: (r.code, r.message) for r in err.recipients}
        return {rcpt: (resp.code, resp.message) for rcpt, resp in refused.items()}

    async def wait_for_mail(
        self,
        address: str,
        password: str,
        *,
        timeout: float = 10,  # noqa: ASYNC109 (the interface of MailServers.wait_for_mail)
        match: Callable[[EmailMessage], bool] | None = None,
    ) -> EmailMessage:
        """The oldest message in the person's Maildir that matches and was not returned before."""
        address = address.lower()
        returned = self._returned.setdefault(address, set())
        deadline = time.monotonic() + timeout
        while True:
            for path in self._delivered(address):
                if path.name in returned:
                    continue
                message = parse_message(path.read_bytes())
                if match is None or match(message):
                    returned.add(path.name)
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no new mail for {address} within {timeout} s")
            await asyncio.sleep(0.05)

    def _delivered(self, address: str) -> list[Path]:
        """The person's messages, oldest first (Maildir's new/ and cur/, read directly: the
        mailbox module caches a listing for up to two seconds)."""
        root = self.maildir(address)
        paths = [p for sub in ("new", "cur") for p in (root / sub).glob("*") if p.is_file()]
        return sorted(paths, key=lambda p: (p.stat().st_mtime, p.name))
