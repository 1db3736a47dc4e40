"""XEP-0393 Message Styling to and from Matrix ``org.matrix.custom.html``.

XMPP clients style plain-text bodies (``*strong*``, ``_emphasis_``, ``~strike~``, `` `code` ``,
```` ``` ```` blocks, ``>`` quotes); Matrix clients send and expect HTML. ``styling_to_html``
parses a body with the XEP's block and span rules and renders HTML without the directive
characters (as XMPP clients that hide them do); ``html_to_styling`` flattens Matrix HTML into a
styled plain-text body.

Both functions take hostile input: every text run is HTML-escaped on the way out, the HTML
parser is the stdlib's and its failures fall back to plain text, and span matching uses
pre-computed closing positions so a line full of unmatched directives stays linear-ish. The
stdlib parser takes quadratic time on unterminated markup (60 KiB of ``<a`` took 9 s), so it
only ever reads complete tags (see ``_complete_tags_only``).

Nothing here imports from ``bridge``: this is the protocol layer.
"""

from __future__ import annotations

import bisect
import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# --- XEP-0393 -> HTML -----------------------------------------------------------------------

_SPAN_TAGS = {"*": "strong", "_": "em", "~": "del", "`": "code"}
_PRE_FENCE = "```"
# An info string after the opening fence that looks like a language name becomes a
# ``language-*`` class (the Matrix spec allows it on <code>); anything else stays as text.
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.\-]{1,32}")
# Deeper '>' nesting is rendered as text; it bounds the recursion on hostile bodies.
_MAX_QUOTE_DEPTH = 32


@dataclass
class _Render:
    styled: bool = False


def styling_to_html(body: str) -> str | None:
    """Render a XEP-0393 styled ``body`` as Matrix HTML, or None if it has no styling at all.

    None means the body is plain text and should be sent without ``formatted_body``. Directive
    characters are dropped from the output; all text is HTML-escaped; lines become ``<br>``.
    """
    lines = body.replace("\r\n", "\n").split("\n")
    render = _Render()
    out = _render_blocks(lines, render, 0)
    return out if render.styled else None


def _render_blocks(lines: list[str], render: _Render, depth: int) -> str:
    out: list[str] = []
    # True when the last output was a line of text, so the next line needs a <br> first.
    after_text = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(_PRE_FENCE):
            # XEP-0393 §5.1.2: ends at a line that is exactly ``` or at the end of the parent.
            end = i + 1
            while end < len(lines) and lines[end] != _PRE_FENCE:
                end += 1
            out.append(_render_pre(line[len(_PRE_FENCE) :], lines[i + 1 : end]))
            render.styled = True
            after_text = False
            i = end + 1
        elif line.startswith(">") and depth < _MAX_QUOTE_DEPTH:
            # XEP-0393 §5.1.3: consecutive '>' lines; drop '>' and then one whitespace char.
            end = i
            children: list[str] = []
            while end < len(lines) and lines[end].startswith(">"):
                child = lines[end][1:]
                if child[:1].isspace():
                    child = child[1:]
                children.append(child)
                end += 1
            out.append(f"<blockquote>{_render_blocks(children, render, depth + 1)}</blockquote>")
            render.styled = True
            after_text = False
            i = end
        else:
            if after_text:
                out.append("<br>")
            out.append(_render_line(line, render))
            after_text = True
            i += 1
    return "".join(out)


def _render_pre(info: str, lines: list[str]) -> str:
    info = info.strip()
    attrs = ""
    if _LANGUAGE.fullmatch(info):
        attrs = f' class="language-{html.escape(info)}"'
    elif info:
        lines = [info, *lines]
    return f"<pre><code{attrs}>{html.escape(chr(10).join(lines))}</code></pre>"


def _render_line(line: str, render: _Render) -> str:
    # A closing directive is any directive character preceded by a non-whitespace character;
    # that does not depend on the enclosing span, so compute the candidates once per line.
    closings: dict[str, list[int]] = {d: [] for d in _SPAN_TAGS}
    for j in range(1, len(line)):
        char = line[j]
        if char in closings and not line[j - 1].isspace():
            closings[char].append(j)
    return _render_spans(line, 0, len(line), frozenset(), closings, render)


def _render_spans(
    line: str,
    start: int,
    end: int,
    open_directives: frozenset[str],
    closings: dict[str, list[int]],
    render: _Render,
) -> str:
    """Render ``line[start:end]``, the content of a span opened by ``open_directives``."""
    out: list[str] = []
    plain_from = start
    i = start
    while i < end:
        char = line[i]
        close = -1
        if (
            char in _SPAN_TAGS
            and char not in open_directives
            # Opening: at the start of the line, after whitespace, or right after the opening
            # directive of the enclosing span (which is always a different directive).
            and (i == start or line[i - 1].isspace())
            and i + 1 < end
            # Not followed by whitespace, nor by itself ("**" and "****" style nothing).
            and not line[i + 1].isspace()
            and line[i + 1] != char
        ):
            candidates = closings[char]
            k = bisect.bisect_left(candidates, i + 2)
            if k < len(candidates) and candidates[k] < end:
                close = candidates[k]
        if close < 0:
            i += 1
            continue
        out.append(html.escape(line[plain_from:i]))
        tag = _SPAN_TAGS[char]
        if char == "`":
            inner = html.escape(line[i + 1 : close])
        else:
            inner = _render_spans(line, i + 1, close, open_directives | {char}, closings, render)
        out.append(f"<{tag}>{inner}</{tag}>")
        render.styled = True
        i = plain_from = close + 1
    out.append(html.escape(line[plain_from:end]))
    return "".join(out)


# --- HTML -> XEP-0393 -----------------------------------------------------------------------

_INLINE_DIRECTIVES = {
    "strong": "*",
    "b": "*",
    "em": "_",
    "i": "_",
    "del": "~",
    "s": "~",
    "strike": "~",
    "code": "`",
}
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BLOCKS = frozenset(
    {"div", "ul", "ol", "li", "table", "tr", "hr", "details", "summary", "dl", "dt", "dd"}
    | _HEADINGS
)
_VOID = frozenset({"br", "hr", "img", "wbr", "input", "meta", "link", "area", "base", "col"})
# Their content is never text for the reader.
_SKIPPED = frozenset({"mx-reply", "script", "style", "head", "title", "template"})
_NEWLINE_RUN = re.compile(r"[ \t\f]*[\r\n][\s]*")
_MATRIX_TO_USER = "https://matrix.to/#/@"
_TAG = re.compile(r"<[^>]*>?")
# Deeper nesting is treated as text, which keeps hostile markup from costing quadratic time.
_MAX_DEPTH = 50
# A start or end tag with balanced quotes; declarations and processing instructions. The
# alternatives start with different characters and stop at "<", so matching never backtracks
# far and never reads past the next "<".
_COMPLETE_TAG = re.compile(r"""</?[A-Za-z](?:[^<>"']|"[^"<>]*"|'[^'<>]*')*>|<[!?][^<>]*>""")


@dataclass
class _Frame:
    """An open element whose rendering depends on its whole content."""

    tag: str
    parts: list[str] = field(default_factory=list)
    href: str | None = None
    language: str = ""

    def text(self) -> str:
        return "".join(self.parts)


class _StylingWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.frames: list[_Frame] = [_Frame("#root")]
        self.skip_depth = 0
        self.pending_break = 0  # newlines owed before the next content (block boundaries)
        self.pending_space = False  # a collapsed newline run from a text node
        self.after_bullet = False  # a list bullet was just written; its item needs no break
        self.lists: list[int | None] = []  # per open list: next <ol> number, None for <ul>

    # -- output helpers

    def _last_char(self) -> str:
        """The last character written on the current line, "\n" at the start of a line."""
        for frame in reversed(self.frames):
            for part in reversed(frame.parts):
                if part:
                    return part[-1]
            if frame.tag in ("blockquote", "pre"):
                return "\n"  # their content is rendered as lines of its own
        return "\n"

    def _request_break(self, count: int) -> None:
        self.pending_break = max(self.pending_break, count)

    def _flush_break(self, minimum: int = 0) -> None:
        count = max(self.pending_break, minimum)
        if count and not self.after_bullet and self._last_char() != "\n":
            self.frames[-1].parts.append("\n" * count)
        self.pending_break = 0
        self.pending_space = False

    def _write(self, text: str) -> None:
        if not text:
            return
        if self.pending_break:
            self._flush_break()
        if self.pending_space:
            if not self._last_char().isspace() and not text[0].isspace():
                self.frames[-1].parts.append(" ")
            self.pending_space = False
        self.after_bullet = False
        self.frames[-1].parts.append(text)

    def _in(self, *tags: str) -> bool:
        return any(frame.tag in tags for frame in self.frames)

    def _directive_active(self, directive: str) -> bool:
        return any(_INLINE_DIRECTIVES.get(frame.tag) == directive for frame in self.frames)

    # -- parser callbacks

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skip_depth += 1
            return
        if self.skip_depth:
            return
        attributes = {name: value or "" for name, value in attrs}
        if tag == "br":
            self._write("\n")
            self.pending_space = False
        elif tag == "hr":
            self._request_break(1)
            self._write("---")
            self._request_break(1)
        elif tag == "img":
            self._write(attributes.get("alt") or attributes.get("title") or "")
        elif tag in _VOID:
            return
        elif len(self.frames) > _MAX_DEPTH or len(self.lists) > _MAX_DEPTH:
            return  # hostile nesting: further tags count for their text only
        elif tag in ("blockquote", "pre"):
            self._flush_break(1)
            self.after_bullet = False
            self.frames.append(_Frame(tag))
        elif tag == "p":
            self._request_break(2)
        elif tag == "code" and self.frames[-1].tag == "pre":
            language = attributes.get("class", "")
            if language.startswith("language-"):
                self.frames[-1].language = language.removeprefix("language-")
        elif tag in ("ul", "ol"):
            self._request_break(1)
            counter = None
            if tag == "ol":
                start = attributes.get("start", "1")
                counter = int(start) if start.isdigit() and len(start) < 9 else 1
            self.lists.append(counter)
        elif tag == "li":
            self._request_break(1)
            bullet = "• "
            if self.lists and (number := self.lists[-1]) is not None:
                bullet = f"{number}. "
                self.lists[-1] = number + 1
            self._write("  " * max(len(self.lists) - 1, 0) + bullet)
            self.after_bullet = True
        elif tag in _INLINE_DIRECTIVES or tag in _HEADINGS or tag == "a":
            if tag in _HEADINGS:
                self._request_break(1)
            self.frames.append(_Frame(tag, href=attributes.get("href") if tag == "a" else None))
        elif tag in ("td", "th"):
            self.pending_space = True
        elif tag in _BLOCKS:
            self._request_break(1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip_depth = max(self.skip_depth - 1, 0)
            return
        if self.skip_depth:
            return
        if tag == "p":
            self._request_break(2)
            return
        if tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._request_break(1)
            return
        if tag in _BLOCKS and tag not in _HEADINGS:
            self._request_break(1)
            return
        if not any(frame.tag == tag for frame in self.frames[1:]):
            return  # stray end tag
        while self.frames[-1].tag != tag:
            self._close_frame()
        self._close_frame()

    def handle_data(self, data: str) -> None:
        if self.skip_depth or not data:
            return
        if self._in("pre"):
            self._write(data)
            return
        pieces = _NEWLINE_RUN.split(data)
        for index, piece in enumerate(pieces):
            if index:
                self.pending_space = True
            self._write(piece)

    # -- closing frames

    def _close_frame(self) -> None:
        frame = self.frames.pop()
        content = frame.text()
        # Breaks and spaces owed at the end of the frame's content come after what it renders.
        owed_break, owed_space = self.pending_break, self.pending_space
        self.pending_break, self.pending_space = 0, False
        self._render_frame(frame, content)
        self._request_break(owed_break)
        self.pending_space = self.pending_space or owed_space

    def _render_frame(self, frame: _Frame, content: str) -> None:
        if frame.tag == "blockquote":
            lines = content.strip("\n").split("\n")
            self._write("\n".join(f"> {line}" if line else ">" for line in lines))
            self._request_break(1)
        elif frame.tag == "pre":
            content = content.removeprefix("\n").removesuffix("\n")
            language = frame.language if _LANGUAGE.fullmatch(frame.language) else ""
            self._write(f"```{language}\n{content}\n```")
            self._request_break(1)
        elif frame.tag == "a":
            self._write(_link_text(content, frame.href))
        elif frame.tag in _HEADINGS:
            self._write(_wrap(content, "*") if not self._in("strong", "b") else content)
            self._request_break(1)
        else:
            directive = _INLINE_DIRECTIVES.get(frame.tag)
            if directive and not self._in("code", "pre") and not self._directive_active(directive):
                self._write(_wrap(content, directive))
            else:
                self._write(content)

    def result(self) -> str:
        while len(self.frames) > 1:
            self._close_frame()
        return self.frames[0].text()


def _wrap(content: str, directive: str) -> str:
    """Put ``directive`` around each line of ``content``, whitespace kept outside (XEP-0393 spans
    cannot cross lines, start after or end before whitespace)."""
    lines = []
    for line in content.split("\n"):
        core = line.strip()
        if core:
            lead = line[: len(line) - len(line.lstrip())]
            trail = line[len(line.rstrip()) :]
            line = f"{lead}{directive}{core}{directive}{trail}"
        lines.append(line)
    return "\n".join(lines)


def _link_text(text: str, href: str | None) -> str:
    if not href or text == href or href == f"mailto:{text}":
        return text or (href or "")
    if href.startswith(_MATRIX_TO_USER) and text:
        return text  # a mention pill: the display name is what XMPP users expect
    return f"{text} ({href})" if text.strip() else href


def _complete_tags_only(html_body: str) -> str:
    """``html_body`` with comments, declarations and processing instructions removed and every
    ``<`` that does not open a complete tag escaped, in one pass: then html.parser never looks
    ahead for the end of a construct that has none, which is what makes it quadratic."""
    out: list[str] = []
    pos = 0
    while (start := html_body.find("<", pos)) >= 0:
        out.append(html_body[pos:start])
        if html_body.startswith("<!--", start):
            end = html_body.find("-->", start + 4)
            if end < 0:
                return "".join(out)  # an unterminated comment runs to the end, as in browsers
            pos = end + 3
        elif (tag := _COMPLETE_TAG.match(html_body, start)) is None:
            out.append("&lt;")
            pos = start + 1
        else:
            if tag.group()[1] not in "!?":
                out.append(tag.group())
            pos = tag.end()
    out.append(html_body[pos:])
    return "".join(out)


def html_to_styling(html_body: str) -> str:
    """Flatten Matrix HTML into a XEP-0393 styled plain-text body.

    ``strong``/``b`` → ``*x*``, ``em``/``i`` → ``_x_``, ``del``/``s``/``strike`` → ``~x~``,
    ``code`` → `` `x` ``, ``pre`` → a ```` ``` ```` block, ``blockquote`` → ``> `` lines,
    links → ``text (url)`` (just the text when it is the url or a matrix.to user mention),
    lists → ``• item`` / ``1. item`` lines, ``mx-reply`` dropped, entities decoded, other tags
    reduced to their text. Newlines inside text nodes are HTML whitespace. Never raises.
    """
    writer = _StylingWriter()
    try:
        writer.feed(_complete_tags_only(html_body))
        writer.close()
        return writer.result()
    except Exception:
        # html.parser raises AssertionError on some malformed declarations ("<![foo["); hostile
        # markup must never stop a message, so fall back to its text without tags.
        return html.unescape(_TAG.sub("", html_body))
