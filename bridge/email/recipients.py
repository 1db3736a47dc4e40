"""Whom a Matrix message goes to, as a mail client would decide it.

- **A reply** (``m.in_reply_to``, or a message in a thread) answers one mail: it goes where that
  mail's "reply all" goes: ``To`` its ``Reply-To`` (else its ``From``), ``Cc`` its ``To`` and
  ``Cc`` without the room's own address (and any other address of the bridge's domain). Those
  people already saw each other's addresses on that mail, so showing them again reveals nothing.
  Mail the bridge sent is answered the way it went out.
- **A new conversation** goes to the room's contacts, **one copy per contact**, each with only
  that contact in ``To``. Why copies and not one mail with ``Bcc``: each recipient sees their
  own address (a Bcc'd mail with ``To: <room>`` looks like spam and some filters treat it so),
  a bounce names exactly one recipient, and no MTA can leak a ``Bcc`` header by mistake. All
  copies carry the same Message-ID, so every answer threads under the one room event.
- **Automatic mail** (``Auto-Submitted``, ``X-Autoreply``, ``Precedence: bulk/junk/list``,
  list headers, an empty envelope sender, bounces) is never answered: it gives no
  correspondents, and a reply to it goes where the conversation's first mail went.
- **Bounced addresses** of the portal are left out everywhere until a member adds them again.

Only ``From`` is verified (DMARC); ``To`` and ``Cc`` are whatever the sender wrote (and for mail
delivered marked unverified, only ``From`` is answered, never its ``Reply-To``, ``To`` or ``Cc``). So that a
stranger cannot make the agency's address mail a crowd by putting it in ``Cc``, a reply goes to
at most :data:`MAX_REPLY_RECIPIENTS` addresses (the first ones; mail clients list them in order).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.email.protocol.addresses import split_address
from bridge.email.protocol.parse import ParsedMail
from bridge.email.store import StoredMail

MAX_REPLY_RECIPIENTS = 20


@dataclass(frozen=True, slots=True)
class Delivery:
    """One mail to send: its ``To`` and ``Cc``, which are also its envelope recipients."""

    to: list[str]
    cc: list[str] = field(default_factory=list)

    @property
    def envelope(self) -> list[str]:
        return [*self.to, *self.cc]


def is_automatic(mail: ParsedMail, mail_from: str) -> bool:
    """Mail no person typed, or that must not be answered (RFC 3834 §2, RFC 2369, RFC 3464)."""
    return (
        mail.auto_submitted
        or mail.list_mail
        or mail.bounce is not None
        or mail_from.strip() in ("", "<>")
    )


def _outside(addresses: Iterable[str], own_domain: str) -> list[str]:
    return [a for a in dict.fromkeys(addresses) if split_address(a)[1] != own_domain]


def correspondents(
    mail: ParsedMail, *, own_domain: str, automatic: bool, verified: bool = True
) -> tuple[list[str], list[str]]:
    """(To, Cc) of a "reply all" to ``mail``; both empty for automatic mail. For mail whose
    sender is not ``verified`` only the claimed ``From`` is answered: its ``Reply-To``, ``To``
    and ``Cc`` are whoever the forger chose, and the room's answer must not mail them."""
    if automatic:
        return [], []
    if not verified:
        return _outside((m.address for m in mail.from_[:1]), own_domain), []
    to = _outside((m.address for m in (mail.reply_to or mail.from_)), own_domain)
    to = to[:MAX_REPLY_RECIPIENTS]
    cc = _outside((m.address for m in [*mail.to, *mail.cc]), own_domain)
    return to, [a for a in cc if a not in to][: MAX_REPLY_RECIPIENTS - len(to)]


@dataclass(frozen=True, slots=True)
class Plan:
    deliveries: list[Delivery]
    separately: bool
    """One copy per contact (answers to this mail go out the same way)."""


def plan(answered: Iterable[StoredMail | None], contacts: list[str], bounced: set[str]) -> Plan:
    """The mails to send for one Matrix message.

    ``answered`` is empty for a new conversation, else the mail replied to and then the
    conversation's first mail, None where the bridge knows no such mail (the first that has
    correspondents decides). Empty result: there is nobody to send to (no contacts, all
    bounced, or only automatic mail to answer): ``deliveries`` is empty."""
    chain = [stored for stored in answered if stored is not None]
    if not chain:  # a new conversation, or an answer to something that never was mail
        return _separately(contacts, bounced)
    for stored in chain:
        if stored.separately:
            return _separately(contacts, bounced)
        if stored.reply_to or stored.reply_cc:
            to = [a for a in stored.reply_to if a not in bounced]
            cc = [a for a in stored.reply_cc if a not in bounced and a not in to]
            if not to:
                to, cc = cc, []
            return Plan([Delivery(to=to, cc=cc)] if to else [], separately=False)
    return Plan([], separately=False)


def _separately(contacts: list[str], bounced: set[str]) -> Plan:
    deliveries = [Delivery(to=[address]) for address in contacts if address not in bounced]
    return Plan(deliveries, separately=True)
