"""Sending mail through the operator's relay, with SMTP answers turned into bridge errors.

A 4xx answer, a refused connection or a timeout may heal: :class:`TransientError`, so the core
retries with backoff and keeps the portal's order. A 5xx answer will not: :class:`PermanentError`,
whose message tells the Matrix user what the mail server said.
"""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from bridge.core import PermanentError, TransientError
from bridge.email.config import EmailConfig
from bridge.email.protocol.addresses import InvalidAddress, normalize_domain


class Relay:
    def __init__(self, cfg: EmailConfig) -> None:
        self._cfg = cfg
        try:  # a bad domain is reported by EmailConfig.problems(); EHLO must not crash on it
            self._ehlo_name: str | None = normalize_domain(cfg.domain)
        except InvalidAddress:
            self._ehlo_name = None

    async def send(
        self, message: EmailMessage, *, sender: str, recipients: list[str]
    ) -> dict[str, str]:
        """Hand ``message`` to the relay; return the recipients it refused, with its answer.

        Raises if the relay refused every recipient or the mail itself.
        """
        try:
            async with self._client() as smtp:
                refused, _ = await smtp.send_message(message, sender=sender, recipients=recipients)
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
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            where = f"{self._cfg.relay_host}:{self._cfg.relay_port}"
            raise TransientError(f"relay {where} not usable: {err}") from err
        return {rcpt: f"{answer.code} {answer.message}" for rcpt, answer in refused.items()}

    async def check(self) -> str | None:
        """Connect, greet and (if configured) log in; ``None`` if that worked."""
        smtp = self._client()
        try:
            await smtp.connect()
            await smtp.quit()
        except aiosmtplib.SMTPAuthenticationError as err:
            return f"the relay refused the username or password ({err.code})"
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            return f"cannot use the relay at {self._cfg.relay_host}:{self._cfg.relay_port}: {err}"
        return None

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
