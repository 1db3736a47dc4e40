"""Through the bridge's email connector, in both directions, over a DM.

The DM opens as in ``tests/e2e/test_email.py``: the Matrix user creates a room inviting the
ghost of ``bob@agency.test``; the bridge makes the DM's portal address. The Matrix user's first
message goes out as a mail from that address, which tells the benchmark the address and the
Message-ID that Bob's mails answer.

- **Matrix → mail out.** The bridge's SMTP relay is :class:`~bench.mail.TimedMailSink` in the
  benchmark process: a message's arrival is the moment the sink has the whole mail from the
  bridge (end of ``DATA``). A real relay would only queue it there too; what happens after is
  the mail server's business, not the bridge's. Each message starts a new mail (subject: its
  first line), as any Matrix message that is not a reply does.
- **Mail in → Matrix**, measured twice:

  - *over LMTP, straight to the bridge* (``email-in``): the benchmark plays the mail server's
    LMTP client (:class:`~bench.mail.LmtpClient`, connections kept open). This is the bridge's
    own cost and latency, comparable with the other paths, and it is the row the targets apply
    to.
  - *through Postfix* (``email-in-postfix``): the mail is submitted over SMTP to the real Postfix
    of ``tests/e2e/mail.py``, which queues it and relays it to the bridge over LMTP, one
    connection per mail as that harness configures it. This is what an operator's MX adds
    (queue write, queue manager, LMTP client); its added latency is Postfix's plus the
    bridge's. Postfix's CPU is not metered (many short-lived processes).

  Every mail answers the opening one (``Re:`` its subject, ``In-Reply-To`` it), the common case
  in a DM: the bridge looks up the parent, shows no subject and posts the text in the opening
  message's thread, so the Matrix body is the token alone. The sender is verified the way the
  bridge expects from the agency's MX: an ``Authentication-Results`` header with the trusted
  authserv-id and ``dmarc=pass``.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from bench.config import DOMAIN, MAIL_AUTHSERV_ID
from bench.harness import BenchHub
from bench.mail import LmtpClient, TimedMailSink
from bench.timing import Arrivals, TimedMatrixUser
from tests.e2e.mail import AGENCY_DOMAIN, MailServers

NOTE = (
    "the bridge's email connector; mail in delivered over LMTP by the benchmark (the bridge's "
    "own cost) or submitted to a real Postfix that relays it over LMTP; mail out to an SMTP "
    "sink in the benchmark process that timestamps the end of `DATA`"
)
OPENING = "open email dm"


def ghost_of(address: str) -> str:
    return "@email_" + address.replace("@", "=40") + f":{DOMAIN}"


def _is_ghost_join(ghost: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.member"
        and e.get("state_key") == ghost
        and e["content"].get("membership") == "join"
    )


@dataclass(frozen=True, slots=True)
class MailDm:
    room_id: str
    correspondent: str
    """The mail address on the other side (``bob@agency.test``)."""
    portal: str
    """The DM's address at the bridge."""
    opening: EmailMessage
    """The first mail the bridge sent: the benchmark's mails answer it."""

    def reply(self, text: str) -> EmailMessage:
        """A verified mail from the correspondent that answers the opening mail."""
        msg = EmailMessage()
        msg["From"] = f"Bob Bench <{self.correspondent}>"
        msg["To"] = self.portal
        msg["Subject"] = f"Re: {self.opening['Subject']}"
        msg["Message-ID"] = make_msgid(domain=AGENCY_DOMAIN)
        msg["In-Reply-To"] = self.opening["Message-ID"]
        msg["References"] = self.opening["Message-ID"]
        domain = self.correspondent.split("@")[1]
        msg["Authentication-Results"] = (
            f"{MAIL_AUTHSERV_ID}; dkim=pass header.d={domain}; dmarc=pass header.from={domain}"
        )
        msg.set_content(text)
        return msg


@dataclass
class MailInOverLmtp:
    lmtp: LmtpClient
    dm: MailDm
    arrivals: Arrivals
    key: str = "email-in"
    label: str = "Mail in (LMTP) → Matrix user"

    async def send(self, token: str) -> None:
        await self.lmtp.deliver(
            self.dm.reply(token), mail_from=self.dm.correspondent, rcpt_to=self.dm.portal
        )


@dataclass
class MailInThroughPostfix:
    mail: MailServers
    dm: MailDm
    arrivals: Arrivals
    key: str = "email-in-postfix"
    label: str = "Mail in (SMTP to Postfix → LMTP) → Matrix user"

    async def send(self, token: str) -> None:
        refused = await self.mail.send(
            self.dm.reply(token), mail_from=self.dm.correspondent, rcpt_to=[self.dm.portal]
        )
        if refused:
            raise RuntimeError(f"Postfix refused the benchmark's mail: {refused}")


@dataclass
class MatrixToMail:
    user: TimedMatrixUser
    room_id: str
    arrivals: Arrivals
    key: str = "email-out"
    label: str = "Matrix user → mail out (SMTP sink)"

    async def send(self, token: str) -> None:
        await self.user.send_text(self.room_id, token)


async def open_mail_dm(
    user: TimedMatrixUser, sink: TimedMailSink, correspondent: str, wait_seconds: float = 60
) -> MailDm:
    """``user`` opens a DM with ``correspondent``'s ghost and writes once; the mail that comes
    out tells the portal's address."""
    ghost = ghost_of(correspondent)
    room_id = await user.create_room(invite=[ghost], is_direct=True)
    await user.wait_for(_is_ghost_join(ghost), room_id=room_id, timeout=wait_seconds)
    await user.send_text(room_id, OPENING)
    opening = await sink.wait_for(
        lambda m: m["Subject"] == OPENING and correspondent in str(m["To"]),
        wait_seconds=wait_seconds,
    )
    portal = opening["From"].addresses[0].addr_spec
    return MailDm(room_id, correspondent, portal, opening)


async def email_paths(
    hub: BenchHub, user: TimedMatrixUser, lmtp: LmtpClient
) -> tuple[MailInOverLmtp, MailInThroughPostfix | None, MatrixToMail]:
    """A DM between ``user`` and ``bob@agency.test``; the Postfix path is None when the mail
    servers cannot run (``hub.mail_missing`` says why)."""
    dm = await open_mail_dm(user, hub.mail_sink, f"bob@{AGENCY_DOMAIN}")
    through_postfix = None
    if hub.mail is not None:
        through_postfix = MailInThroughPostfix(hub.mail, dm, user.arrivals)
    return (
        MailInOverLmtp(lmtp, dm, user.arrivals),
        through_postfix,
        MatrixToMail(user, dm.room_id, hub.mail_sink.arrivals),
    )
