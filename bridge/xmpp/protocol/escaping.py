"""JID escaping (XEP-0106), JID syntax (RFC 7622) and the Matrix ↔ XMPP address mapping.

DESIGN §3 fixes the mapping operators and tests depend on::

    @alice:hub.example  ->  alice\\3ahub.example@<users domain>
    #room:hub.example   ->  room\\3ahub.example@<rooms domain>

The whole Matrix id minus its sigil is escaped into the JID localpart, so the mapping is
reversible without a database lookup for every id whose localpart is already lower case.

JID localparts are case-insensitive (servers case-fold them), so the mapping lower-cases. A
historical Matrix id with upper-case letters (``@Alice:hub.example``) or a mixed-case room alias
therefore maps to a JID whose reverse mapping is the lower-case id; callers that must reach the
exact original keep the pairing in their store rather than trusting the reverse mapping.

Nothing here imports from ``bridge``: this is the protocol layer.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

# XEP-0106 §3.2: the nine characters RFC 7622 forbids in a localpart, plus the escape character.
_ESCAPES: dict[str, str] = {
    " ": "\\20",
    '"': "\\22",
    "&": "\\26",
    "'": "\\27",
    "/": "\\2f",
    ":": "\\3a",
    "<": "\\3c",
    ">": "\\3e",
    "@": "\\40",
    "\\": "\\5c",
}
_UNESCAPES: dict[str, str] = {code[1:]: char for char, code in _ESCAPES.items()}
_ESCAPE_SEQUENCE = re.compile(r"\\(20|22|26|27|2f|3a|3c|3e|40|5c)")

_LOCALPART_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX_PART_BYTES = 1023

# Matrix spec, "Server name" grammar: hostname [":" port]; hostname is an IPv4 address, a DNS
# name or a bracketed IPv6 literal.
_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.\-]{1,255})(?::[0-9]{1,5})?"
# Historical user-id localparts (any printable ASCII but ':') are still valid Matrix ids that
# servers must accept; the current grammar (a-z 0-9 . _ = - / +) is a subset.
_MXID = re.compile(r"@([\x21-\x39\x3b-\x7e]+):(" + _SERVER_NAME + r")")
_SERVER_NAME_RE = re.compile(_SERVER_NAME)
_MAX_MATRIX_ID_BYTES = 255

_DOMAIN_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


# --- XEP-0106 -------------------------------------------------------------------------------


def escape_node(s: str) -> str:
    """Escape ``s`` for use as a JID localpart (XEP-0106).

    The nine disallowed characters become ``\\xx``. A backslash becomes ``\\5c`` only where it
    would otherwise read as an escape, i.e. when followed by one of the ten escape codes (XEP-0106
    §4.1 rule 7 and §4.3: ``foo\\bar`` and ``\\2plus`` stay as they are). The code is matched
    case-insensitively, because servers case-fold localparts and would otherwise turn a literal
    ``\\2F`` into ``\\2f`` (an escaped ``/``). ``unescape_node(escape_node(s)) == s`` for every
    ``s`` this accepts.

    Only the ten characters are touched: other characters that are invalid in a localpart
    (controls, other whitespace) pass through, and ``is_valid_jid`` rejects the result.

    Raises ``ValueError`` if ``s`` starts or ends with a space: XEP-0106 forbids an escaped
    localpart to start or end with ``\\20``.
    """
    if s[:1] == " " or s[-1:] == " ":
        raise ValueError(f"a JID localpart cannot start or end with a space: {s!r}")
    out: list[str] = []
    for i, char in enumerate(s):
        if char == "\\":
            if s[i + 1 : i + 3].lower() in _UNESCAPES:
                out.append("\\5c")
            else:
                out.append("\\")
        else:
            out.append(_ESCAPES.get(char, char))
    return "".join(out)


def unescape_node(s: str) -> str:
    """Undo XEP-0106 escaping of a JID localpart.

    Only the ten defined (lower-case) sequences are decoded; partial or unknown sequences such as
    ``\\2plus`` or ``foob\\41r`` are left untouched (XEP-0106 §4.3). Never raises.
    """
    return _ESCAPE_SEQUENCE.sub(lambda m: _UNESCAPES[m.group(1)], s)


# --- JID syntax (RFC 7622) ------------------------------------------------------------------


def _utf8_len(part: str) -> int:
    return len(part.encode("utf-8", errors="surrogatepass"))


def _check_size(part: str, what: str) -> None:
    if not part:
        raise ValueError(f"the {what} of a JID cannot be empty")
    if _utf8_len(part) > _MAX_PART_BYTES:
        raise ValueError(f"the {what} of a JID is longer than {_MAX_PART_BYTES} bytes")


def _check_localpart(local: str) -> None:
    _check_size(local, "localpart")
    for char in local:
        if char in _LOCALPART_FORBIDDEN:
            raise ValueError(f"a JID localpart cannot contain {char!r}")
        category = unicodedata.category(char)
        # Whitespace (Z*), controls, format characters, surrogates, private-use and unassigned
        # code points are all outside the PRECIS IdentifierClass used for localparts.
        if category[0] in "ZC" or char.isspace():
            raise ValueError(f"a JID localpart cannot contain U+{ord(char):04X}")


def _check_domainpart(domain: str) -> None:
    _check_size(domain, "domainpart")
    if domain.startswith("["):
        if not domain.endswith("]"):
            raise ValueError("an IP literal domainpart must end with ']'")
        try:
            ipaddress.IPv6Address(domain[1:-1])
        except ValueError:
            raise ValueError(f"invalid IPv6 literal in JID domainpart: {domain!r}") from None
        return
    # RFC 7622 §3.2: a single trailing dot is allowed (and stripped when comparing).
    name = domain[:-1] if domain.endswith(".") else domain
    for label in name.split("."):
        if not label:
            raise ValueError(f"empty label in JID domainpart: {domain!r}")
        for char in label:
            if char in _DOMAIN_ASCII:
                continue
            if ord(char) < 0x80 or unicodedata.category(char)[0] not in "LMN":
                raise ValueError(f"a JID domainpart cannot contain U+{ord(char):04X}")


def _check_resourcepart(resource: str) -> None:
    _check_size(resource, "resourcepart")
    for char in resource:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"a JID resourcepart cannot contain U+{ord(char):04X}")


def split_jid(jid: str) -> tuple[str | None, str, str | None]:
    """Split ``jid`` into ``(localpart, domainpart, resourcepart)``, checking each part.

    The resource is everything after the first ``/`` (it may itself contain ``@`` and ``/``);
    the localpart is what precedes the first ``@`` before that. Parts are returned as received,
    not case-folded. Raises ``ValueError`` with the reason if ``jid`` is not a valid JID.
    """
    rest, slash, resource = jid.partition("/")
    local, at, domain = rest.partition("@") if "@" in rest else ("", "", rest)
    if at:
        _check_localpart(local)
    _check_domainpart(domain)
    if slash:
        _check_resourcepart(resource)
    return (local if at else None, domain, resource if slash else None)


def is_valid_jid(jid: str) -> bool:
    """Whether ``jid`` is a syntactically valid JID (RFC 7622, simplified but strict).

    Each part is at most 1023 bytes of UTF-8 and, when present, non-empty; the domainpart is a
    DNS name (IDN labels allowed) or a bracketed IPv6 literal; the localpart has no whitespace,
    control characters or any of ``"&'/:<>@``; the resourcepart has no control characters.
    """
    try:
        split_jid(jid)
    except ValueError:
        return False
    return True


def _fold_domain(domain: str) -> str:
    domain = domain.lower()
    return domain[:-1] if domain.endswith(".") else domain


def bare_jid(jid: str) -> str:
    """The bare JID of ``jid``: resource dropped, localpart and domainpart lower-cased.

    Lower-casing follows RFC 8265 (``toLowerCase``); the trailing dot of a domainpart is
    stripped. Raises ``ValueError`` if ``jid`` is not valid.
    """
    local, domain, _resource = split_jid(jid)
    domain = _fold_domain(domain)
    return f"{local.lower()}@{domain}" if local is not None else domain


# --- Matrix ↔ XMPP mapping (DESIGN §3) ------------------------------------------------------


def _check_matrix_id_size(value: str, what: str) -> None:
    if _utf8_len(value) > _MAX_MATRIX_ID_BYTES:
        raise ValueError(f"{what} {value!r} is longer than {_MAX_MATRIX_ID_BYTES} bytes")


def _is_valid_mxid(mxid: str) -> bool:
    return _MXID.fullmatch(mxid) is not None and _utf8_len(mxid) <= _MAX_MATRIX_ID_BYTES


def _check_room_alias(alias: str) -> None:
    if not alias.startswith("#"):
        raise ValueError(f"{alias!r} is not a Matrix room alias: it must start with '#'")
    local, colon, server = alias[1:].partition(":")
    if not colon or not local:
        raise ValueError(f"{alias!r} is not a Matrix room alias: expected '#localpart:server'")
    if "\x00" in local or any(unicodedata.category(c) == "Cs" for c in local):
        raise ValueError(f"{alias!r} is not a Matrix room alias: invalid character in localpart")
    if _SERVER_NAME_RE.fullmatch(server) is None:
        raise ValueError(f"{alias!r} is not a Matrix room alias: invalid server name {server!r}")
    _check_matrix_id_size(alias, "room alias")


def _node_to_jid(node: str, domain: str, what: str) -> str:
    jid = f"{node}@{_fold_domain(domain)}"
    try:
        split_jid(jid)
    except ValueError as exc:
        raise ValueError(f"{what} cannot be mapped to a JID: {exc}") from None
    return jid


def _jid_node_on(jid: str, domain: str) -> str | None:
    """The lower-cased localpart of ``jid`` if it is a valid JID on ``domain``, else None.

    A resource, if any, is ignored (a MUC occupant JID names its room).
    """
    try:
        local, jid_domain, _resource = split_jid(jid)
    except ValueError:
        return None
    if local is None or _fold_domain(jid_domain) != _fold_domain(domain):
        return None
    return local.lower()


def mxid_to_jid(mxid: str, users_domain: str) -> str:
    """The JID of Matrix user ``mxid`` on the XMPP users domain (DESIGN §3).

    ``@alice:hub.example`` becomes ``alice\\3ahub.example@<users_domain>``. The mxid is
    lower-cased first because JID localparts are case-insensitive (see the module docstring).
    Raises ``ValueError`` if ``mxid`` is not a valid Matrix user id (``@localpart:server``,
    historical localparts allowed, server names with ports and IPv6 literals allowed).
    """
    if not _is_valid_mxid(mxid):
        raise ValueError(
            f"{mxid!r} is not a Matrix user id: expected '@localpart:server' of at most "
            f"{_MAX_MATRIX_ID_BYTES} bytes"
        )
    return _node_to_jid(escape_node(mxid[1:].lower()), users_domain, f"Matrix id {mxid!r}")


def jid_to_mxid(jid: str, users_domain: str) -> str | None:
    """The Matrix user id behind ``jid``, or None if ``jid`` is not one of ours.

    None when ``jid`` is invalid, not on ``users_domain``, does not unescape to a valid Matrix
    id, or is not the canonical escaping of that id (so two JIDs never map to one mxid). The
    result is lower case; a resource on ``jid`` is ignored.
    """
    node = _jid_node_on(jid, users_domain)
    if node is None:
        return None
    mxid = "@" + unescape_node(node)
    if not _is_valid_mxid(mxid) or escape_node(mxid[1:]) != node:
        return None
    return mxid


def room_alias_to_muc(alias: str, rooms_domain: str) -> str:
    """The MUC JID of Matrix room alias ``alias`` on the XMPP rooms domain (DESIGN §3).

    ``#room:hub.example`` becomes ``room\\3ahub.example@<rooms_domain>``, lower-cased. Raises
    ``ValueError`` if ``alias`` is not a valid room alias or its localpart holds characters a JID
    cannot carry even escaped (controls, whitespace other than a space, a leading space).
    """
    _check_room_alias(alias)
    what = f"room alias {alias!r}"
    try:
        node = escape_node(alias[1:].lower())
    except ValueError as exc:
        raise ValueError(f"{what} cannot be mapped to a JID: {exc}") from None
    return _node_to_jid(node, rooms_domain, what)


def muc_to_room_alias(jid: str, rooms_domain: str) -> str | None:
    """The Matrix room alias behind MUC JID ``jid``, or None if ``jid`` is not one of ours.

    Same rules as ``jid_to_mxid``: valid, on ``rooms_domain``, canonical escaping, lower case;
    a resource (occupant nick) is ignored.
    """
    node = _jid_node_on(jid, rooms_domain)
    if node is None:
        return None
    alias = "#" + unescape_node(node)
    try:
        _check_room_alias(alias)
        if escape_node(alias[1:]) != node:
            return None
    except ValueError:
        return None
    return alias
