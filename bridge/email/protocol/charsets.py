"""Turning mail bytes into text whatever charset a message claims (or lies about).

Mail declares charsets that Python does not know (``x-unknown``, ``unknown-8bit``), that are
wrong (``us-ascii`` on UTF-8 text), or leaves 8-bit bytes in headers without any declaration.
``email``'s own ``get_content()`` raises ``LookupError`` on the first; here every input gives
text, following the fallback chain Discourse settled on: the declared charset, then UTF-8, then
windows-1252, then ISO-8859-1 (which accepts any byte).
"""

from __future__ import annotations

from email import policy

# WHATWG Encoding Standard: these labels are decoded as their supersets in practice, because
# mail (like the web) labelled with them is written with the superset.
_SUPERSETS = {
    "iso-8859-1": "windows-1252",
    "latin1": "windows-1252",
    "latin-1": "windows-1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
}
_FALLBACKS = ("utf-8", "windows-1252")


def decode_text(data: bytes, declared: str | None) -> str:
    """``data`` as text: the declared charset if it works, else the first fallback that does.

    Never raises. A leading byte-order mark is dropped.
    """
    candidates = []
    if declared:
        label = declared.strip().strip('"').lower()
        candidates.append(_SUPERSETS.get(label, label))
    candidates.extend(_FALLBACKS)
    for charset in candidates:
        try:
            return data.decode(charset).removeprefix("\ufeff")
        except (LookupError, ValueError):  # unknown or non-text codec; bytes not valid in it
            continue
    return data.decode("latin-1")  # maps every byte, so it cannot fail


def decode_8bit_header(value: str) -> str:
    """A raw header value with 8-bit bytes (surrogate-escaped by the parser) made into text.

    Such bytes are not allowed in headers without SMTPUTF8, yet common; they are nearly always
    UTF-8, otherwise windows-1252.
    """
    if value.isascii():
        return value
    return decode_text(value.encode("utf-8", "surrogateescape"), None)


def decode_header_words(value: str) -> str:
    """``value`` with RFC 2047 encoded words (``=?utf-8?q?...?=``) decoded; never raises.

    Uses the stdlib's unstructured-header parser, which copes with unknown charsets and
    encoded words glued to text. Where that parser itself fails, the raw value is kept.
    """
    if "=?" not in value:
        return value
    try:
        return str(policy.default.header_factory("x-pontis-text", value))
    except Exception:  # the stdlib header parser has crashing bugs on odd input (cpython#105802)
        return value
