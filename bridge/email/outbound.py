"""Sending mail through the operator's relay, with SMTP answers turned into bridge errors.

A 4xx answer, a refused connection or a timeout may heal: :class:`TransientError`, so the core
retries with backoff and keeps the portal's order. A 5xx answer will not: :class:`PermanentError`,
whose message tells the Matrix user what the mail server said.

Sessions are reused, as Postfix's SMTP connection cache does: connecting, EHLO and (with TLS or
AUTH) the handshake cost more latency and CPU than a small mail, so a session stays open for
:data:`IDLE_SECONDS` after a mail, and the next mail starts on it with RSET. At most
:data:`MAX_SESSIONS` are open at once, so a burst from many portals does not flood the relay.
Only a failed RSET moves on to another session: once MAIL FROM went out, a mail is never sent
again on another session, since the relay may have taken it already and would deliver it twice.

International addresses (RFC 6531, a non-ASCII local part) go out with SMTPUTF8 when the relay
offers it, headers in UTF-8 too (RFC 6532). A relay that does not offer it cannot carry them:
those recipients are refused for good, with a message saying why, and the others get the mail.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib
from aiosmtplib.email import flatten_message

from bridge.core import PermanentError, TransientError
from bridge.email.config import EmailConfig
from bridge.email.protocol.addresses import InvalidAddress, is_international, normalize_domain

MAX_SESSIONS = 4
"""Sessions open to the relay at once: enough for portals sending together, few enough to stay
clear of the relay's limit per client (Postfix: smtpd_client_connection_count_limit)."""
IDLE_SECONDS = 20.0
"""Idle time after which a session is QUIT: relays drop idle clients (Postfix smtpd after 300 s)
and a session they dropped costs a failed RSET before the next mail."""

CLOSE_SECONDS = 5.0
"""How long stopping waits for the relay to answer QUIT."""

_SESSION_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)
NO_SMTPUTF8 = "553 5.6.7 the mail relay does not offer SMTPUTF8, needed for this address"
_ADDRESS_HEADERS = ("From", "To", "Cc", "Reply-To", "Sender")


class Relay:
    def __init__(self, cfg: EmailConfig) -> None:
        self._cfg = cfg
        try:  # a bad domain is reported by EmailConfig.problems(); EHLO must not crash on it
            self._ehlo_name: str | None = normalize_domain(cfg.domain)
        except InvalidAddress:
            self._ehlo_name = None
        self._slots = asyncio.Semaphore(MAX_SESSIONS)
        # Idle sessions with their expiry timers, oldest first: the newest is reused first, so
        # the older ones expire when fewer sessions are needed.
        self._idle: dict[aiosmtplib.SMTP, asyncio.TimerHandle] = {}
        self._quits: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._closed = False

    async def send(
        self, message: EmailMessage, *, sender: str, recipients: list[str]
    ) -> dict[str, str]:
        """Hand ``message`` to the relay; return the recipients it refused, with its answer.

        Raises if the relay refused every recipient or the mail itself.
        """
        unsendable: dict[str, str] = {}
        try:
            async with self._slots:
                smtp = await self._session()
                try:
                    recipients, unsendable = await self._utf8_check(smtp, sender, recipients)
                    refused, _ = await self._send(smtp, message, sender, recipients)
                except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException):
                    self._keep(smtp)  # a plain SMTP answer: the session is still in step
                    raise
                except BaseException:
                    smtp.close()  # where the dialogue stands is unknown: never reuse it
                    raise
                self._keep(smtp)
        except aiosmtplib.SMTPRecipientsRefused as err:
            answers = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in err.recipients)
            if all(400 <= r.code < 500 for r in err.recipients):
                raise TransientError(f"relay deferred every recipient: {answers}") from err
            raise PermanentError(
                f"relay refused every recipient: {answers}",
                user_message=f"The mail server refused the recipients ({answers}).",
            ) from err
        except aiosmtplib.SMTPResponseException as err:
            problem = f"relay answered {err.code} {err.message}"
            if 400 <= err.code < 500:
                raise TransientError(problem) from err
            raise PermanentError(
                problem, user_message=f"The mail server refused the mail: {err.code} {err.message}"
            ) from err
        except _SESSION_ERRORS as err:
            where = f"{self._cfg.relay_host}:{self._cfg.relay_port}"
            raise TransientError(f"relay {where} not usable: {err}") from err
        result = {rcpt: f"{answer.code} {answer.message}" for rcpt, answer in refused.items()}
        return unsendable | result

    @staticmethod
    async def _utf8_check(
        smtp: aiosmtplib.SMTP, sender: str, recipients: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        """(the recipients this relay can take, those it cannot with why): without SMTPUTF8 an
        international address cannot be sent. Raises if none is left."""
        if smtp.is_ehlo_or_helo_needed:  # the extensions are known after EHLO
            try:
                await smtp.ehlo()
            except aiosmtplib.SMTPHeloError:
                await smtp.helo()
        if smtp.supports_extension("smtputf8"):
            return recipients, {}
        unsendable = {r: NO_SMTPUTF8 for r in recipients if is_international(r)}
        sendable = [r for r in recipients if r not in unsendable]
        if is_international(sender) or not sendable:
            raise PermanentError(
                f"relay without SMTPUTF8 for {sender} → {recipients}",
                user_message="The mail server cannot send to international addresses (it does"
                " not offer SMTPUTF8): " + ", ".join(unsendable or [sender]),
            )
        return sendable, unsendable

    @staticmethod
    async def _send(
        smtp: aiosmtplib.SMTP, message: EmailMessage, sender: str, recipients: list[str]
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        """``send_message``, but in UTF-8 (RFC 6532) with SMTPUTF8 whenever an address in the
        envelope or the headers needs it and the relay offers it; aiosmtplib alone looks only
        at the envelope and would write a header's address as an (invalid) encoded word."""
        utf8 = needs_utf8(message, [sender, *recipients])
        if not smtp.supports_extension("8bitmime") or (
            utf8 and not smtp.supports_extension("smtputf8")
        ):  # an old relay: aiosmtplib downgrades (the record keeps the undowngraded form)
            return await smtp.send_message(message, sender=sender, recipients=recipients)
        options = ["BODY=8BITMIME", *(["SMTPUTF8"] if utf8 else [])]
        flat = wire_form(message, [sender, *recipients])
        return await smtp.sendmail(sender, recipients, flat, mail_options=options)

    async def check(self) -> str | None:
        """Connect, greet and (if configured) log in; ``None`` if that worked."""
        smtp = self._client()
        try:
            await smtp.connect()
            await smtp.quit()
        except aiosmtplib.SMTPAuthenticationError as err:
            return f"the relay refused the username or password ({err.code})"
        except _SESSION_ERRORS as err:
            return f"cannot use the relay at {self._cfg.relay_host}:{self._cfg.relay_port}: {err}"
        return None

    async def close(self) -> None:
        """QUIT the idle sessions, so the relay sees a clean end rather than a dropped client.

        Sessions still sending are closed when their mail is done.
        """
        self._closed = True
        idle, self._idle = self._idle, {}
        for timer in idle.values():
            timer.cancel()
        quits = [asyncio.ensure_future(_quit(smtp)) for smtp in idle] + list(self._quits)
        if quits:  # a relay that stopped answering must not hold up the bridge's shutdown
            _, late = await asyncio.wait(quits, timeout=CLOSE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for smtp in idle:
            smtp.close()

    async def _session(self) -> aiosmtplib.SMTP:
        """An idle session that still answers RSET, else a new one.

        RSET proves the relay has not dropped the session while it idled, before MAIL FROM
        commits the mail to it, and clears any envelope left by a refused mail.
        """
        while self._idle:
            smtp, timer = self._idle.popitem()
            timer.cancel()
            if not smtp.is_connected:  # the relay closed it while it idled: no RSET to wait on
                smtp.close()
                continue
            try:
                await smtp.rset()
            except _SESSION_ERRORS:
                smtp.close()  # gone or broken: nothing to wait for, try the next one
                continue
            except BaseException:
                smtp.close()  # cancelled before the answer came, which would confuse a reuse
                raise
            return smtp
        smtp = self._client()
        await smtp.connect()
        return smtp

    def _keep(self, smtp: aiosmtplib.SMTP) -> None:
        """Park ``smtp`` for the next mail, with a timer that QUITs it when unused."""
        if self._closed or not smtp.is_connected:  # aiosmtplib closes on 421 and timeouts
            smtp.close()
            return
        loop = asyncio.get_running_loop()
        self._idle[smtp] = loop.call_later(IDLE_SECONDS, self._expire, smtp)

    def _expire(self, smtp: aiosmtplib.SMTP) -> None:
        """Timer callback (taking a session cancels its timer): QUIT it in the background."""
        del self._idle[smtp]  # no longer counted against MAX_SESSIONS during QUIT's round trip
        task = asyncio.create_task(_quit(smtp), name="smtp-idle-quit")
        self._quits.add(task)
        task.add_done_callback(self._quits.discard)

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self._cfg
        return aiosmtplib.SMTP(
            hostname=cfg.relay_host,
            port=cfg.relay_port,
            use_tls=cfg.relay_security == "tls",
            start_tls=cfg.relay_security == "starttls",
            username=cfg.relay_username or None,
            password=cfg.relay_password or None,
            timeout=cfg.relay_timeout,
            # EHLO with the bridge's mail domain, not "localhost" found by a lookup per mail.
            local_hostname=self._ehlo_name,
        )


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    """QUIT politely, within the session's timeout; the session ends either way."""
    try:
        await smtp.quit()
    except _SESSION_ERRORS:
        pass  # the relay left first, or answered oddly: nothing left to do with the session
    finally:
        smtp.close()


def needs_utf8(message: EmailMessage, envelope: list[str]) -> bool:
    """Whether ``message`` must go in UTF-8 (RFC 6532): an address in its envelope or its
    address headers is international."""
    headers = " ".join(str(message.get(name, "")) for name in _ADDRESS_HEADERS)
    return any(map(is_international, envelope)) or _international_header(headers)


def wire_form(message: EmailMessage, recipients: list[str]) -> bytes:
    """The bytes of ``message`` as the relay gets them (one 8BITMIME relay: the usual case),
    flattened once so that the record of a sent mail is exactly what was sent. The envelope
    sender is never international (a portal's address is ASCII)."""
    return flatten_message(message, utf8=needs_utf8(message, recipients), cte_type="8bit")


def _international_header(addresses: str) -> bool:
    """Whether address headers name a mailbox whose local part is not ASCII (display names
    are encoded words either way)."""
    return any(not word.isascii() and "@" in word for word in addresses.replace(",", " ").split())
