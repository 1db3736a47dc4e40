"""Attachment file names that are safe to show and to save.

A file name in mail is whatever the sender wrote: ``../../etc/passwd``, a Windows path, a
right-to-left override that makes ``invoice\\u202Efdp.exe`` look like ``invoiceexe.pdf``,
control characters, or several kilobytes of text. Matrix clients save files under the name
we give them, so the name is cut down to a plain base name here.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

from .charsets import decode_header_words

MAX_FILENAME_BYTES = 255  # the limit of common file systems
_MAX_EXTENSION_CHARS = 16
_FALLBACK_STEM = "attachment"
# Characters Windows refuses in file names (path separators are handled before).
_WINDOWS_RESERVED = re.compile(r'[<>:"|?*]')
# Built-in table only: the system's mime.types differs between machines.
_MIME_TYPES = mimetypes.MimeTypes()


def _extension_for(mimetype: str) -> str:
    return _MIME_TYPES.guess_extension(mimetype.lower(), strict=False) or ""


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _plain_char(char: str) -> str:
    """Whitespace and separators as a space; control, format, private and unassigned gone."""
    category = unicodedata.category(char)
    if char in "\t\n\r" or category[0] == "Z":
        return " "
    return "" if category[0] == "C" else char


def sanitize_filename(name: str | None, mimetype: str) -> str:
    """A safe file name for an attachment called ``name`` (``None`` if it had none).

    RFC 2047 encoded words are decoded (RFC 2231 is the parser's job); only the last path
    component is kept; control, format (bidi overrides, zero-width) and unassigned characters
    are dropped; characters Windows refuses become ``_``; runs of spaces collapse; leading and
    trailing dots and spaces go (no hidden files, no ``..``). At most 255 bytes of UTF-8, cut
    in the stem so the extension survives. Empty result: ``attachment`` plus an extension
    guessed from ``mimetype``.
    """
    text = unicodedata.normalize("NFC", decode_header_words(name or ""))
    text = re.split(r"[/\\]", text)[-1]
    text = _WINDOWS_RESERVED.sub("_", "".join(map(_plain_char, text)))
    text = re.sub(r" {2,}", " ", text).strip(" .")
    if not text:
        return _FALLBACK_STEM + _extension_for(mimetype)
    if len(text.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return text
    stem, dot, extension = text.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION_CHARS:
        return _truncate_utf8(text, MAX_FILENAME_BYTES).rstrip(" .")
    suffix = "." + extension
    return _truncate_utf8(stem, MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))) + suffix
