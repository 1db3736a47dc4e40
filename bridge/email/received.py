"""Mail as the core's remote inbox keeps it: the raw bytes, stored before the mail server's 250.

A mail is stored once per recipient portal (``RemoteInput`` of kind ``mail`` or ``bounce``, the
raw mail base64-encoded with the envelope sender) and parsed again inside the portal's queue,
now and after a restart. Parsing is deterministic, so the parse the acceptance checks already
made is kept in memory for the conversion of the same run (:class:`ParsedMails`): a mail is
parsed once, unless the bridge restarted in between or the cache was full.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from typing import Any

from bridge.core import PermanentError, RemoteMessageID, TransientError
from bridge.email.parsing import MailParser, ParserUnavailable
from bridge.email.protocol.parse import MalformedMail, ParsedMail
from bridge.portal.models import RemoteInput

KIND_MAIL = "mail"
"""A mail for a portal's room."""
KIND_BOUNCE = "bounce"
"""A delivery status notification for a mail the bridge sent from the portal."""

MAX_CACHED_BYTES = 32 * 1024 * 1024
"""Raw size of the parsed mails kept for their conversion; beyond it the oldest are parsed
again when their turn comes (a long homeserver outage queues many)."""
MAX_CACHED_MAILS = 1000


def message_id_of(mail: ParsedMail, raw: bytes) -> RemoteMessageID:
    """The mail's Message-ID, or a stable one made from its bytes: the same mail delivered
    twice gets the same id, so it is bridged once."""
    if mail.message_id is not None:
        return RemoteMessageID(mail.message_id)
    return RemoteMessageID(f"<{hashlib.sha256(raw).hexdigest()[:32]}@pontis.invalid>")


def encode_payload(raw: bytes, mail_from: str) -> dict[str, Any]:
    return {"raw": base64.b64encode(raw).decode("ascii"), "mail_from": mail_from}


def decode_payload(item: RemoteInput) -> bytes:
    """The raw mail of a stored input; a payload that is not one can never be converted."""
    data = item.payload.get("raw")
    if not isinstance(data, str):
        raise PermanentError(f"stored {item.kind} without its mail", user_message=_UNREADABLE)
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise PermanentError(
            f"stored {item.kind} is not base64: {err}", user_message=_UNREADABLE
        ) from err


async def parse_stored(raw: bytes, parser: MailParser) -> ParsedMail:
    """A mail that was already accepted, parsed again (in the parse worker). It passed the same
    parser then, so a malformed mail now (a newer, stricter bridge) will not heal; a worker
    that is not available may, and the portal's queue tries again."""
    try:
        return await parser.parse(raw)
    except MalformedMail as err:
        raise PermanentError(
            f"malformed mail: {err}", user_message=f"{_UNREADABLE}: {err}"
        ) from err
    except ParserUnavailable as err:
        raise TransientError(f"cannot parse a stored mail now: {err}") from err


_UNREADABLE = "A mail could not be read"


class ParsedMails:
    """The parses made at acceptance, for the conversions of the same run, bounded in size.

    Keyed by the identity of the ``RemoteInput`` handed to ``accept_remote`` (the core queues
    that same object); the entry keeps the input alive, so its id cannot be reused meanwhile.
    """

    def __init__(
        self, max_bytes: int = MAX_CACHED_BYTES, max_mails: int = MAX_CACHED_MAILS
    ) -> None:
        self._max_bytes = max_bytes
        self._max_mails = max_mails
        self._entries: OrderedDict[int, tuple[RemoteInput, ParsedMail, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, item: RemoteInput, mail: ParsedMail, size: int) -> None:
        if size > self._max_bytes:
            return
        self._entries[id(item)] = (item, mail, size)
        self._bytes += size
        while self._bytes > self._max_bytes or len(self._entries) > self._max_mails:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped

    def take(self, item: RemoteInput) -> ParsedMail | None:
        entry = self._entries.get(id(item))
        if entry is None or entry[0] is not item:
            return None
        del self._entries[id(item)]
        self._bytes -= entry[2]
        return entry[1]
