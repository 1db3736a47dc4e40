"""Email addresses: validation and case-folding, portal addresses and our own Message-IDs.

DESIGN §3: email addresses are case-folded, so ``Bob@Example.ORG`` and ``bob@example.org`` are
one sender (one ghost) and one portal. Strictly, RFC 5321 lets the receiving server treat the
local part case-sensitively; no server in use does, and two ghosts for one person would be worse.

Validation is deliberately narrower than RFC 5322: a dot-atom local part (no quoted strings,
no comments) and a host name. That covers the addresses people use and rules out the forms mail
software disagrees about, which is where spoofing and header injection live.

Internationalised addresses (RFC 6531) are accepted: a local part may hold letters, marks and
digits of any script besides ASCII ``atext`` (NFC-normalised, lower-cased; never controls,
format characters such as bidi overrides, or spaces), and a domain may be an IDN, which is kept
in its ASCII form (``xn--``, IDNA 2008 with UTS #46 mapping), the one form DNS, DKIM and DMARC
compare. So ``Jürgen@Müller.example`` and ``jürgen@xn--mller-kva.example`` are one address.
An address with a non-ASCII local part can only be sent to relays that offer SMTPUTF8.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import unicodedata

import idna

MAX_ADDRESS_LENGTH = 254  # RFC 5321 §4.5.3.1.3 (path) minus the angle brackets
_MAX_LOCAL_LENGTH = 64  # RFC 5321 §4.5.3.1.1
_MAX_LABEL_LENGTH = 63  # RFC 1035 §2.3.4

# RFC 5322 §3.2.3 atext, lower-cased (addresses are case-folded before checking).
_LOCAL_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
# Non-ASCII local parts: the same, plus letters, marks and digits of any script.
_INTERNATIONAL_ATOM = r"(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+"
_INTERNATIONAL_LOCAL_PART = re.compile(rf"{_INTERNATIONAL_ATOM}(?:\.{_INTERNATIONAL_ATOM})*")
_INTERNATIONAL_CATEGORIES = frozenset("LMN")
_LOCAL_PART = re.compile(rf"{_LOCAL_ATOM}(?:\.{_LOCAL_ATOM})*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
# Named in the messages so the user sees what is wrong; anything else gets the generic reason.
_FORBIDDEN = {" ": "a space", "<": "'<'", ">": "'>'", ",": "','", ";": "';'", '"': "a quote"}

#: Local parts a portal slug never takes: role accounts of RFC 2142 and the usual system names,
#: so that no room ever receives mail meant for the operator or the mail system.
RESERVED_LOCALPARTS: frozenset[str] = frozenset(
    {
        "abuse",
        "admin",
        "administrator",
        "bounce",
        "bounces",
        "ftp",
        "hostmaster",
        "info",
        "mailer-daemon",
        "marketing",
        "news",
        "no-reply",
        "nobody",
        "noc",
        "noreply",
        "postmaster",
        "root",
        "sales",
        "security",
        "support",
        "usenet",
        "uucp",
        "webmaster",
        "www",
    }
)

_SLUG_MAX = 32
_TOKEN_CHARS = 16  # 80 bits of base32
_PORTAL_LOCALPART = re.compile(r"([a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?)\.([a-z2-7]{16})")
# Letters NFKD does not decompose to ASCII but that have an obvious spelling in it.
_TRANSLITERATIONS = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "œ": "oe",
        "ø": "o",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "\u0131": "i",
    }
)

_MESSAGE_ID_HASH_CHARS = 26  # 130 bits of base32
_OWN_MESSAGE_ID = re.compile(r"([a-z2-7]{26})@([^@<>\s]+)")
# Printable ASCII but "<" and ">", at most 250 characters: anything else could not be written
# back into an In-Reply-To or References header unchanged.
_MESSAGE_ID_CHARS = r"[\x21-\x3b\x3d\x3f-\x7e]{1,250}"
_BRACKETED_MESSAGE_ID = re.compile(rf"<({_MESSAGE_ID_CHARS})>")
_BARE_MESSAGE_ID = re.compile(rf"(?=[^@]+@[^@]+$){_MESSAGE_ID_CHARS}")


class InvalidAddress(ValueError):
    """An email address (or mail domain) that Pontis refuses; the message says why."""


def _short(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")


def _ascii_domain(domain: str, shown: str) -> str:
    """``domain`` (lower-cased) checked as a host name; an IDN becomes its ``xn--`` form."""
    if not domain:
        raise InvalidAddress(f"{_short(shown)} is not a valid email address: the domain is empty")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as err:
            raise InvalidAddress(
                f"{_short(shown)} is not a valid email address: the domain is not a valid"
                f" internationalised domain name ({err})"
            ) from None
    for label in domain.split("."):
        if len(label) > _MAX_LABEL_LENGTH or not _DOMAIN_LABEL.fullmatch(label):
            raise InvalidAddress(
                f"{_short(shown)} is not a valid email address: the domain {_short(domain)} is "
                "not a host name (letters, digits and inner hyphens, labels separated by dots)"
            )
    return domain


def normalize_address(addr: str) -> str:
    """The case-folded form of the bare address ``addr`` (``local@domain``, no display name).

    Raises ``InvalidAddress`` naming the problem: not exactly one ``@``, an empty or
    over-long part, whitespace, control or format characters, ``<>,;"``, a local part that is
    not a dot-atom, a domain that is not a host name (or IDN), or more than 254 bytes in all.
    ``is_international`` tells whether the result needs SMTPUTF8.
    """
    address = unicodedata.normalize("NFC", addr.strip()).lower()
    for char in address:
        if char in _FORBIDDEN or unicodedata.category(char)[0] in "CZ":
            what = _FORBIDDEN.get(char, f"the character U+{ord(char):04X}")
            raise InvalidAddress(f"{_short(addr)} is not a valid email address: it contains {what}")
    if address.count("@") != 1:
        raise InvalidAddress(
            f"{_short(addr)} is not a valid email address: it must contain exactly one '@'"
        )
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(
            f"{_short(addr)} is not a valid email address: longer than {MAX_ADDRESS_LENGTH} characters"
        )
    local, _, domain = address.partition("@")
    if not local:
        raise InvalidAddress(
            f"{_short(addr)} is not a valid email address: the local part is empty"
        )
    pattern = _LOCAL_PART if local.isascii() else _INTERNATIONAL_LOCAL_PART
    for char in local:
        if not char.isascii() and unicodedata.category(char)[0] not in _INTERNATIONAL_CATEGORIES:
            raise InvalidAddress(
                f"{_short(addr)} is not a valid email address: it contains the character"
                f" U+{ord(char):04X} (only letters, marks and digits besides ASCII)"
            )
    if "=?" in local:  # valid atext, but Python's header parser decodes it as RFC 2047
        raise InvalidAddress(
            f"{_short(addr)} is not supported: its local part looks like an encoded word ('=?')"
        )
    if len(local.encode()) > _MAX_LOCAL_LENGTH or not pattern.fullmatch(local):
        raise InvalidAddress(
            f"{_short(addr)} is not a valid email address: the local part must be at most "
            f"{_MAX_LOCAL_LENGTH} bytes of letters, digits and !#$%&'*+/=?^_`{{|}}~- "
            "separated by single dots"
        )
    address = f"{local}@{_ascii_domain(domain, addr)}"
    if len(address.encode()) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(
            f"{_short(addr)} is not a valid email address: longer than {MAX_ADDRESS_LENGTH} bytes"
        )
    return address


def is_international(address: str) -> bool:
    """Whether a normalized ``address`` can only be sent with SMTPUTF8 (RFC 6531): its local
    part is not ASCII (domains are kept in their ASCII form)."""
    return not address.isascii()


def split_address(addr: str) -> tuple[str, str]:
    """``(local part, domain)`` of the normalized ``addr``; raises ``InvalidAddress``."""
    local, _, domain = normalize_address(addr).partition("@")
    return local, domain


def normalize_domain(domain: str) -> str:
    """The lower-cased mail ``domain`` (an IDN in its ``xn--`` form); raises
    ``InvalidAddress`` if it is not a host name."""
    return _ascii_domain(unicodedata.normalize("NFC", domain.strip()).lower(), domain)


def _slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text.lower().translate(_TRANSLITERATIONS))
    ascii_text = ascii_text.encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:_SLUG_MAX].strip("-")
    if not slug:
        return "room"
    if slug in RESERVED_LOCALPARTS:
        return f"room-{slug}"
    return slug


def new_portal_address(slug: str, domain: str) -> str:
    """A fresh, unguessable portal address ``<slug>.<token>@<domain>`` (DESIGN §3).

    ``slug`` is any human text (a room name): it is transliterated to lower-case ASCII letters,
    digits and single dashes, cut to 32 characters, and never one of ``RESERVED_LOCALPARTS``
    ("room" if nothing is left). It is only a hint for people; the 16-character base32 token
    (80 random bits) is what makes the address impossible to guess, so knowing a room's name
    is not enough to mail into it. Zulip uses "." rather than "+" as separator because some
    list services drop "+" suffixes; we follow it.
    """
    token = base64.b32encode(secrets.token_bytes(_TOKEN_CHARS * 5 // 8)).decode("ascii").lower()
    return f"{_slugify(slug)}.{token}@{normalize_domain(domain)}"


def is_portal_localpart(local: str) -> bool:
    """Whether ``local`` has the shape of a portal local part (``<slug>.<16 base32 chars>``).

    Only the shape: whether such a portal exists is the store's question. Case-insensitive,
    since senders and MTAs may change the case of what they were given.
    """
    return _PORTAL_LOCALPART.fullmatch(local.lower()) is not None


def message_id_for_event(event_id: str, domain: str) -> str:
    """The Message-ID of the mail made from Matrix event ``event_id``: ``<hash@domain>``.

    Deterministic, so a mail sent again after a crash carries the same Message-ID and mail
    clients show it once. Opaque (a truncated SHA-256, 130 bits), so the Matrix event id,
    which can name the homeserver and the room, does not leak to mail recipients.
    """
    digest = hashlib.sha256(f"pontis:{event_id}".encode("utf-8", "surrogatepass")).digest()
    local = base64.b32encode(digest).decode("ascii").lower()[:_MESSAGE_ID_HASH_CHARS]
    return f"<{local}@{normalize_domain(domain)}>"


def is_own_message_id(message_id: str, domain: str) -> bool:
    """Whether ``message_id`` (with or without angle brackets) is one ``message_id_for_event``
    made for ``domain``: such a mail is our own coming back (a loop or an echo)."""
    value = message_id.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    match = _OWN_MESSAGE_ID.fullmatch(value.lower())
    return match is not None and match.group(2) == domain.strip().lower()


def parse_message_ids(value: str) -> list[str]:
    """The Message-IDs in a Message-ID, In-Reply-To or References value, each as ``<id>``.

    Tolerant on purpose, because a missed id breaks a thread: no RFC 5322 ``msg-id`` grammar,
    just the bracketed tokens, so Exchange's ``<[abc]@[example]>`` and ids without a domain
    pass. If there is no bracketed token, bare ``x@y`` tokens (some old mailers) are taken.
    Ids with spaces, control or non-ASCII characters, or over 250 characters are skipped:
    they could not be sent back in a header. Duplicates are dropped, the order is kept.
    """
    found = [f"<{token}>" for token in _BRACKETED_MESSAGE_ID.findall(value)]
    if not found and "<" not in value:
        found = [f"<{token}>" for token in value.split() if _BARE_MESSAGE_ID.fullmatch(token)]
    return list(dict.fromkeys(found))


def is_valid_message_id(message_id: str) -> bool:
    """Whether ``message_id`` is ``<id>`` as ``parse_message_ids`` returns it."""
    return _BRACKETED_MESSAGE_ID.fullmatch(message_id) is not None
