"""What a test does with the mail servers of :mod:`tests.e2e.mail`: submit mail to Postfix's
smtpd, read a user's INBOX over IMAP, and look at or flush Postfix's queue.

:class:`MailClient` knows the servers only by their ports and Postfix's configuration directory,
so it holds no process and starts nothing; :class:`~tests.e2e.mail.MailServers` owns one and
offers its methods under the same names.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import imaplib
import json
import subprocess
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import aiosmtplib

POLL_INTERVAL = 0.1
POSTQUEUE = "/usr/sbin/postqueue"

_parser = BytesParser(policy=email.policy.default)


def parse_message(raw: bytes) -> EmailMessage:
    """A message as the tests see it: parsed with ``email.policy.default``, its CRLF line ends
    (as IMAP and LMTP carry them) turned into the ``\\n`` the email package works with."""
    message = _parser.parsebytes(raw.replace(b"\r\n", b"\n"))
    assert isinstance(message, EmailMessage)
    return message


class MailClient:
    """SMTP to ``127.0.0.1:smtp_port``, IMAP to ``127.0.0.1:imap_port``, and ``postqueue`` on
    the Postfix whose configuration is in ``postfix_dir / "conf"``. ``tail`` gives the end of the
    servers' logs, for the message of a failed wait."""

    def __init__(
        self, *, smtp_port: int, imap_port: int, postfix_dir: Path, tail: Callable[[], str]
    ) -> None:
        self.smtp_port = smtp_port
        self.imap_port = imap_port
        self.postfix_dir = postfix_dir
        self.tail = tail
        # (uidvalidity, uids) already returned by wait_for_mail, per mailbox address.
        self._seen: dict[str, tuple[int, set[int]]] = {}

    async def send(
        self, message: EmailMessage | bytes, *, mail_from: str, rcpt_to: list[str]
    ) -> dict[str, tuple[int, str]]:
        """Submit a message to Postfix's smtpd; returns the refused recipients (all of them when
        none was accepted, in which case nothing was queued)."""
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, timeout=10)
        await smtp.connect()
        try:
            if isinstance(message, EmailMessage):
                refused, _ = await smtp.send_message(message, sender=mail_from, recipients=rcpt_to)
            else:
                refused, _ = await smtp.sendmail(mail_from, rcpt_to, message)
        except aiosmtplib.SMTPRecipientsRefused as err:
            return {r.recipient: (r.code, r.message) for r in err.recipients}
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await smtp.quit()
        return {rcpt: (resp.code, resp.message) for rcpt, resp in refused.items()}

    def _imap(self, address: str, password: str) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        try:
            conn.login(address, password)
        except BaseException:
            conn.shutdown()
            raise
        return conn

    @staticmethod
    def _fetch(conn: imaplib.IMAP4, skip: set[int]) -> tuple[int, list[tuple[int, bytes]]]:
        """(UIDVALIDITY, [(uid, raw message)]) of the INBOX messages whose uid is not in skip."""
        conn.select("INBOX", readonly=True)
        _typ, validity = conn.response("UIDVALIDITY")
        uidvalidity = int(validity[0]) if validity and validity[0] else 0
        _typ, data = conn.uid("SEARCH", "ALL")
        uids = [int(u) for u in data[0].split()] if data and data[0] else []
        messages = []
        for uid in uids:
            if uid in skip:
                continue
            _typ, parts = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
            raw = next(p[1] for p in parts if isinstance(p, tuple))
            messages.append((uid, raw))
        return uidvalidity, messages

    async def all_mail(self, address: str, password: str) -> list[EmailMessage]:
        """Every message in the user's INBOX, oldest first (does not mark anything seen)."""

        def fetch_all() -> list[bytes]:
            conn = self._imap(address, password)
            try:
                return [raw for _uid, raw in self._fetch(conn, set())[1]]
            finally:
                conn.logout()

        return [parse_message(raw) for raw in await asyncio.to_thread(fetch_all)]

    async def wait_for_mail(
        self,
        address: str,
        password: str,
        *,
        timeout: float = 10,
        match: Callable[[EmailMessage], bool] | None = None,
    ) -> EmailMessage:
        """The oldest message in the user's INBOX that matches and that this method has not
        returned before; polls IMAP until ``timeout``, then fails with the mailbox, the queue
        and the logs."""
        key = address.lower()
        conn = await asyncio.to_thread(self._imap, address, password)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        others: list[EmailMessage] = []
        try:
            while True:
                validity, seen = self._seen.setdefault(key, (0, set()))
                new_validity, fetched = await asyncio.to_thread(self._fetch, conn, seen)
                if new_validity != validity:
                    # A new mailbox (or the first look): uids from before mean nothing now.
                    seen = set()
                    self._seen[key] = (new_validity, seen)
                    new_validity, fetched = await asyncio.to_thread(self._fetch, conn, seen)
                others = []
                for uid, raw in fetched:
                    message = parse_message(raw)
                    if match is None or match(message):
                        seen.add(uid)
                        return message
                    others.append(message)
                if loop.time() > deadline:
                    break
                await asyncio.sleep(POLL_INTERVAL)
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                await asyncio.to_thread(conn.logout)
        summary = "".join(
            f"\n  From: {m['From']} Subject: {m['Subject']} ({m.get_content_type()})"
            for m in others
        )
        try:
            queue: object = self.queue()
        except RuntimeError as err:
            queue = err
        raise AssertionError(
            f"no {'matching ' if match else ''}new mail for {address} within {timeout} s; "
            f"{len(others)} other new message(s):{summary}\nPostfix queue: {queue}\n{self.tail()}"
        )

    # -- queue --------------------------------------------------------------------------------

    def _postqueue(self, *args: str) -> str:
        result = subprocess.run(
            [POSTQUEUE, "-c", str(self.postfix_dir / "conf"), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"postqueue {' '.join(args)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def queue(self) -> list[dict[str, object]]:
        """The messages in Postfix's queue (``postqueue -j``: queue_name, queue_id, sender,
        recipients with delay_reason, ...)."""
        return [json.loads(line) for line in self._postqueue("-j").splitlines() if line.strip()]

    def flush(self) -> None:
        """Retry every deferred message now (``postqueue -f``)."""
        self._postqueue("-f")
