"""Turning mail bytes into text whatever charset a message claims (or lies about).

Mail declares charsets that Python does not know (``x-unknown``, ``unknown-8bit``), that are
wrong (``us-ascii`` on UTF-8 text), or leaves 8-bit bytes in headers without any declaration.
Worse, some charsets Python does know are traps: ``utf-7`` decodes ``+2AA-`` to a lone
surrogate that no UTF-8 encoder accepts later (issue #12: a crash far from the parser), and
codecs such as ``rot13``, ``base64`` or ``zlib`` are not text encodings at all. So only the
encodings of the WHATWG Encoding Standard (what browsers and mail clients decode) are used, by
their WHATWG labels; anything else is read as if undeclared. Every input gives text, following
the fallback chain Discourse settled on: the declared charset, then UTF-8, then windows-1252
(with replacement, so it cannot fail), and the result never holds a surrogate.
"""

from __future__ import annotations

import re
from email import policy

# WHATWG Encoding Standard labels → the Python codec that decodes them. ISO-8859-1, ASCII and
# their aliases are windows-1252, GBK is GB18030, and so on, as the standard says: mail (like
# the web) labelled with them is written with the superset.
_WHATWG: dict[str, str] = {}
for _codec, _labels in {
    "utf-8": "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8",
    "ibm866": "866 cp866 csibm866 ibm866",
    "iso8859-2": "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 l2 latin2",
    "iso8859-3": "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 l3 latin3",
    "iso8859-4": "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 l4 latin4",
    "iso8859-5": "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595",
    "iso8859-6": "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114"
    " iso-8859-6 iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596",
    "iso8859-7": "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126"
    " iso8859-7 iso88597 sun_eu_greek",
    "iso8859-8": "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138"
    " iso8859-8 iso88598 visual csiso88598i iso-8859-8-i logical",
    "iso8859-10": "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6",
    "iso8859-13": "iso-8859-13 iso8859-13 iso885913",
    "iso8859-14": "iso-8859-14 iso8859-14 iso885914",
    "iso8859-15": "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9",
    "iso8859-16": "iso-8859-16",
    "koi8-r": "cskoi8r koi koi8 koi8-r koi8_r",
    "koi8-u": "koi8-ru koi8-u",
    "mac-roman": "csmacintosh mac macintosh x-mac-roman",
    "cp874": "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874",
    "cp1250": "cp1250 windows-1250 x-cp1250",
    "cp1251": "cp1251 windows-1251 x-cp1251",
    "cp1252": "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100"
    " iso8859-1 iso88591 iso_8859-1 l1 latin1 us-ascii windows-1252 x-cp1252",
    "cp1253": "cp1253 windows-1253 x-cp1253",
    "cp1254": "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 l5 latin5"
    " windows-1254 x-cp1254",
    "cp1255": "cp1255 windows-1255 x-cp1255",
    "cp1256": "cp1256 windows-1256 x-cp1256",
    "cp1257": "cp1257 windows-1257 x-cp1257",
    "cp1258": "cp1258 windows-1258 x-cp1258",
    "mac-cyrillic": "x-mac-cyrillic x-mac-ukrainian",
    "gb18030": "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58"
    " x-gbk gb18030",
    "big5hkscs": "big5 big5-hkscs cn-big5 csbig5 x-x-big5",
    "euc_jp": "cseucpkdfmtjapanese euc-jp x-euc-jp",
    "iso2022_jp": "csiso2022jp iso-2022-jp",
    "cp932": "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis",
    "cp949": "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989"
    " ksc5601 ksc_5601 windows-949",
    "utf-16-be": "unicodefffe utf-16be",
    "utf-16-le": "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le",
}.items():
    _WHATWG.update(dict.fromkeys(_labels.split(), _codec))

_SURROGATES = re.compile("[\ud800-\udfff]")
# The charset of an RFC 2047 encoded word, with an optional RFC 2231 language (``*en``).
_ENCODED_WORD_CHARSET = re.compile(r"=\?([^?*\s]*)((?:\*[^?\s]*)?)\?([bBqQ])\?")


def codec_for(label: str | None) -> str | None:
    """The Python codec for the WHATWG ``label`` (case and quotes ignored), None if the label
    is not one (``utf-7``, ``x-unknown``, ``rot13``…): such text is read as undeclared."""
    if not label:
        return None
    return _WHATWG.get(label.strip().strip('"').strip().lower())


def scrub(text: str) -> str:
    """``text`` with any lone surrogate replaced by U+FFFD, so it can always be encoded."""
    return _SURROGATES.sub("\ufffd", text)


def decode_text(data: bytes, declared: str | None) -> str:
    """``data`` as text: the declared charset if it is allowed and the bytes are valid in it,
    else UTF-8, else windows-1252, else ISO-8859-1 (which maps every byte). Never raises, never
    returns a surrogate. A leading byte-order mark is dropped.

    Text labelled ASCII or Latin-1 (windows-1252 in WHATWG terms) that is valid UTF-8 is read as
    UTF-8: windows-1252 would accept it, as mojibake, and mislabelled UTF-8 is far more common
    than Latin-1 that happens to be valid UTF-8.
    """
    codec = codec_for(declared)
    candidates = ["utf-8", "cp1252"] if codec in (None, "cp1252") else [codec, "utf-8", "cp1252"]
    for candidate in candidates:
        try:
            return scrub(data.decode(candidate)).removeprefix("\ufeff")
        except (UnicodeDecodeError, LookupError):  # LookupError: a Python built without it
            continue
    return data.decode("latin-1").removeprefix("\ufeff")


def decode_8bit_header(value: str) -> str:
    """A raw header value with 8-bit bytes (surrogate-escaped by the parser) made into text.

    Such bytes are not allowed in headers without SMTPUTF8, yet common; they are nearly always
    UTF-8, otherwise windows-1252.
    """
    if value.isascii():
        return value
    return decode_text(value.encode("utf-8", "surrogateescape"), None)


def _allowed_word(match: re.Match[str]) -> str:
    codec = codec_for(match.group(1)) or "unknown-8bit"
    return f"=?{codec}{match.group(2)}?{match.group(3)}?"


def decode_header_words(value: str) -> str:
    """``value`` with RFC 2047 encoded words (``=?utf-8?q?...?=``) decoded; never raises.

    Each word's charset goes through the WHATWG allow-list first (a word in any other charset
    is read as ``unknown-8bit``: its bytes as UTF-8 or windows-1252). Uses the stdlib's
    unstructured-header parser, which copes with encoded words glued to text. Where that parser
    itself fails, the raw value is kept.
    """
    if "=?" not in value:
        return value
    try:
        decoded = str(
            policy.default.header_factory(
                "x-pontis-text", _ENCODED_WORD_CHARSET.sub(_allowed_word, value)
            )
        )
    except Exception:  # the stdlib header parser has crashing bugs on odd input (cpython#105802)
        return value
    if not _SURROGATES.search(decoded):
        return decoded
    # unknown-8bit bytes come back surrogate-escaped: read them as an undeclared header.
    try:
        return decode_8bit_header(decoded)
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return scrub(decoded)
