"""Separating what a reply says from the history it quotes.

Mail clients append the whole conversation to every reply; in a Matrix thread, where the
earlier messages are right above, that is noise. These functions cut off the *trailing*
history only, and only when a client marked it as such (an attribution line, a quote
container, an Outlook header block), because a wrong cut loses what someone wrote:

- interleaved replies (answers between quoted passages) are kept whole;
- a trailing quote without attribution is kept (it may be the end of an interleaved reply);
- a forward (``---------- Forwarded message ---------``) is content, not history;
- if nothing would be left, nothing is cut.

The removed part is returned so the caller can keep it retrievable. Callers should not
strip mails whose subject marks them as forwarded (``Fwd:``, ``WG:``): Outlook writes a
forward exactly like a reply.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from html.parser import HTMLParser

import nh3

# --- plain text -----------------------------------------------------------------------------

_ATTRIBUTION = re.compile(
    r"""(?:
        on\b.*\bwrote                     # English: Gmail, Thunderbird, Apple Mail
      | le\b.*\ba\s+écrit                 # French
      | am\b.*\bschrieb\b.*               # German
      | op\b.*\bschreef\b.*               # Dutch
      | el\b.*\bescribió                  # Spanish
      | il\b.*\bha\s+scritto              # Italian
    )\s*:""",
    re.IGNORECASE | re.VERBOSE,
)
_MAX_ATTRIBUTION_LINES = 3  # clients wrap long attributions ("… <\nbob@example.org> wrote:")
_MAX_ATTRIBUTION_CHARS = 400
_ORIGINAL_MESSAGE = re.compile(
    r"-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine"
    r"|oorspronkelijk bericht|mensaje original|messaggio originale)\s*-{2,}",
    re.IGNORECASE,
)
_FORWARDED = re.compile(
    r"-{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transféré"
    r"|doorgestuurd bericht|mensaje reenviado|messaggio inoltrato)\s*-{2,}",
    re.IGNORECASE,
)
# Outlook's header block: "From:" then "Sent:"/"Date:" on the next line, in the UI language.
_HEADER_FROM = re.compile(r"\*?(?:from|von|de|van|da)\s*:", re.IGNORECASE)
_HEADER_DATE = re.compile(
    r"\*?(?:sent|date|gesendet|datum|envoyé|verzonden|enviado|fecha|inviato|data)\s*:",
    re.IGNORECASE,
)
_OUTLOOK_RULE = re.compile(r"_{10,}")


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _is_attribution(lines: list[str]) -> bool:
    joined = " ".join(line.strip() for line in lines)
    return len(joined) <= _MAX_ATTRIBUTION_CHARS and _ATTRIBUTION.fullmatch(joined) is not None


def _attributed_quote_start(lines: list[str]) -> int | None:
    """Where a trailing ``>`` block and its attribution start, if it has one: above the
    quote (Gmail, Thunderbird) or as its first quoted line (Apple Mail)."""
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    start = end
    while start and (_is_quoted(lines[start - 1]) or not lines[start - 1].strip()):
        start -= 1
    quoted = [index for index in range(start, end) if _is_quoted(lines[index])]
    if not quoted:
        return None
    for count in range(1, _MAX_ATTRIBUTION_LINES + 1):
        first = start - count
        if first < 0 or not lines[first].strip() or _is_quoted(lines[first]):
            break
        if _is_attribution(lines[first:start]):
            return first
    for count in range(1, _MAX_ATTRIBUTION_LINES + 1):
        block = lines[quoted[0] : quoted[0] + count]
        if len(block) < count or not all(_is_quoted(line) for line in block):
            break
        if _is_attribution([line.lstrip()[1:] for line in block]):
            return start
    return None


def _header_block_start(lines: list[str]) -> int | None:
    """Where Outlook's quoted history starts: "-----Original Message-----" or a From/Sent
    header block (with the "_____" rule above it), unless it introduces a forward."""
    for index, line in enumerate(lines):
        text = line.strip()
        if _ORIGINAL_MESSAGE.fullmatch(text):
            return index
        next_line = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if not (_HEADER_FROM.match(text) and _HEADER_DATE.match(next_line)):
            continue
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if above >= 0 and _FORWARDED.fullmatch(lines[above].strip()):
            return None
        if above >= 0 and _OUTLOOK_RULE.fullmatch(lines[above].strip()):
            return above
        return index
    return None


def _signature_start(lines: list[str]) -> int | None:
    """The last ``-- `` signature separator (RFC 3676 §4.3; also ``--``, as some clients trim)."""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].rstrip("\r") in ("-- ", "--"):
            return index
    return None


def strip_quoted_text(text: str) -> tuple[str, str | None]:
    """``(new content, removed history)`` of a plain-text reply.

    Removes a trailing ``>`` block with an attribution ("On … wrote:", "Le … a
    écrit :", "Am … schrieb …:", "Op … schreef …:", Spanish, Italian), an Outlook history
    ("-----Original Message-----" or a From:/Sent: block) and a trailing ``-- `` signature.
    The content loses its trailing whitespace. Returns ``(text, None)`` unchanged if nothing
    is recognised or nothing would be left.
    """
    lines = text.split("\n")
    cuts = [
        c for c in (_attributed_quote_start(lines), _header_block_start(lines)) if c is not None
    ]
    cut = min(cuts, default=len(lines))
    signature = _signature_start(lines[:cut])
    if signature is not None:
        cut = signature
    content = "\n".join(lines[:cut]).rstrip()
    if cut == len(lines) or not content:
        return text, None
    return content, "\n".join(lines[cut:]).strip("\r\n")


# --- HTML -----------------------------------------------------------------------------------

# html.parser on Python 3.11 takes quadratic time on some malformed input (measured: 200 KB of
# "<a" take 55 s; CVE-2025-6069 and relatives), and mail HTML is written by strangers. So the
# HTML is first re-serialized by nh3 (html5ever, linear), with a permissive allow-list keeping
# what the quote markers and the caller's own sanitizer need; html.parser then only ever reads
# well-formed markup. When something is cut, the pieces are of that re-serialized HTML.
_NORMALIZER = nh3.Cleaner(
    tags=nh3.ALLOWED_TAGS | {"font", "tfoot"},
    clean_content_tags={"noscript", "script", "style", "template", "title"},
    attributes={
        **nh3.ALLOWED_ATTRIBUTES,
        "font": {"color", "face", "size"},
        "*": {"class", "dir", "id", "lang", "style", "title", "type"},
    },
    url_schemes=nh3.ALLOWED_URL_SCHEMES | {"cid"},
    link_rel=None,
)
_VOID = frozenset({"area", "br", "col", "hr", "img", "wbr"})
_OUTLOOK_IDS = frozenset(
    {"divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container"}
)
_QUOTE_CLASSES = frozenset(
    {"gmail_quote", "gmail_quote_container", "yahoo_quoted", "protonmail_quote"}
)


@dataclass(slots=True)
class _Element:
    tag: str
    attrs: dict[str, str]
    start: int  # offset of its "<"
    end: int = -1  # offset after its end tag

    def has_class(self, *names: str) -> bool:
        return not set(names).isdisjoint(self.attrs.get("class", "").lower().split())


class _Scanner(HTMLParser):
    """Where elements start and end and where visible content (text, images) is, as offsets
    into the source, so that the source can be cut rather than re-serialized."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.html = html
        self.elements: list[_Element] = []
        self.content: list[int] = []  # in document order, hence sorted
        self.open: list[_Element] = []
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", html)]

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = _Element(tag, {name: value or "" for name, value in attrs}, self._offset())
        self.elements.append(element)
        if tag == "img":
            self.content.append(element.start)
        if tag in _VOID:
            element.end = element.start + len(self.get_starttag_text() or "")
        else:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if self.open and self.open[-1].tag == tag:  # well-formed input: always the last one
            self.open.pop().end = self.html.find(">", self._offset()) + 1

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.content.append(self._offset())

    def scan(self) -> None:
        self.feed(self.html)
        self.close()
        for element in self.open:
            element.end = len(self.html)

    def has_content(self, start: int, end: int) -> bool:
        index = bisect_left(self.content, start)
        return index < len(self.content) and self.content[index] < end

    def has_content_outside(self, start: int, end: int, spans: list[tuple[int, int]]) -> bool:
        """Content in ``[start, end)`` that is in none of ``spans`` (sorted, disjoint)."""
        span = 0
        for offset in self.content[bisect_left(self.content, start) :]:
            if offset >= end:
                break
            while span < len(spans) and spans[span][1] <= offset:
                span += 1
            if span == len(spans) or offset < spans[span][0]:
                return True
        return False


def _outermost(elements: list[_Element]) -> list[_Element]:
    """The elements (in document order) not nested in an earlier one of them."""
    outer: list[_Element] = []
    for element in elements:
        if not outer or element.start >= outer[-1].end:
            outer.append(element)
    return outer


def _outlook_cut(doc: _Scanner) -> int | None:
    """Outlook's reply header and everything after it, with the ``<hr>`` just above it."""
    for index, element in enumerate(doc.elements):
        if element.attrs.get("id", "").lower() in _OUTLOOK_IDS:
            before = doc.elements[index - 1] if index else None
            if before and before.tag == "hr" and not doc.has_content(before.end, element.start):
                return before.start
            return element.start
    return None


def _container_cut(doc: _Scanner) -> int | None:
    """A trailing Gmail/Yahoo/Proton quote container without answers written inside it."""
    container = next((e for e in doc.elements if e.has_class(*_QUOTE_CLASSES)), None)
    if container is None or doc.has_content(container.end, len(doc.html)):
        return None
    inner = [
        e
        for e in doc.elements
        if container.start < e.start < container.end and e.tag == "blockquote"
    ]
    spans = [(q.start, q.end) for q in _outermost(inner)]
    if spans and doc.has_content_outside(spans[0][0], container.end, spans):
        return None  # text between quoted blocks: an interleaved reply
    return container.start


def _cite_cut(doc: _Scanner) -> int | None:
    """Trailing ``blockquote type=cite`` (Thunderbird, Apple Mail) and the attribution
    (``div.moz-cite-prefix``) above it. Consecutive quotes with nothing between count as one
    (iOS puts the attribution in a quote of its own); an earlier quote means interleaving."""
    cites = [
        e
        for e in doc.elements
        if e.tag == "blockquote" and e.attrs.get("type", "").lower() == "cite"
    ]
    quotes = _outermost(cites)
    if not quotes or doc.has_content(quotes[-1].end, len(doc.html)):
        return None
    first = len(quotes) - 1
    while first and not doc.has_content(quotes[first - 1].end, quotes[first].start):
        first -= 1
    if first:
        return None
    cut = quotes[0].start
    prefixes = [e for e in doc.elements if e.has_class("moz-cite-prefix") and e.end <= cut]
    if prefixes and not doc.has_content(prefixes[-1].end, cut):
        cut = prefixes[-1].start
    return cut


def strip_quoted_html(html: str) -> tuple[str, str | None]:
    """``(new content, removed history)`` of an HTML reply, as ``strip_quoted_text`` does.

    Recognises Outlook's ``div#divRplyFwdMsg``/``div#appendonsend`` (and everything after),
    a trailing Gmail ``div.gmail_quote`` (also Yahoo, ProtonMail), and a trailing Thunderbird
    or Apple Mail ``blockquote type=cite`` with Thunderbird's ``div.moz-cite-prefix``. If
    something is cut, both parts are fragments of the HTML as re-serialized by nh3 (see
    above); the content gets end tags for the elements the cut left open. Neither part is
    sanitized for Matrix: that stays the caller's job.
    """
    doc = _Scanner(_NORMALIZER.clean(html))
    doc.scan()
    cuts = [c for c in (_outlook_cut(doc), _container_cut(doc), _cite_cut(doc)) if c is not None]
    cut = min(cuts, default=0)
    if not doc.has_content(0, cut):
        return html, None
    still_open = [e for e in doc.elements if e.start < cut < e.end and e.tag not in _VOID]
    closing = "".join(f"</{e.tag}>" for e in reversed(still_open))
    return doc.html[:cut].strip() + closing, doc.html[cut:]
