"""Sanitising HTML to the Matrix allow-list before it reaches a Matrix client.

Remote networks send arbitrary HTML (Teams messages, mail bodies). Only the tags and attributes
the Matrix spec lists for ``org.matrix.custom.html`` survive, links keep safe schemes, and images
must already be on the homeserver (``mxc://``) so a message can never make a reader's client
fetch an outside URL.

The HTML is hostile in size and shape too. nh3's parser (html5ever) is linear in length but
quadratic in nesting depth, and it re-opens unclosed formatting elements (``<p><b id=1>x<p>…``)
in every new block: 64 KiB of such markup took 17 s and produced 69 MB. ``bound_html`` therefore
cuts the input to what a Matrix event can carry and drops the start tags that would nest deeper
than ``MAX_DEPTH`` before any parser sees them.
"""

from __future__ import annotations

import re

import nh3

_TAGS = {
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
    "mx-reply",
}
_ATTRIBUTES = {
    "font": {"data-mx-bg-color", "data-mx-color", "color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler", "data-mx-maths"},
    "div": {"data-mx-maths"},
    "a": {"href", "target"},
    "img": {"width", "height", "alt", "title", "src"},
    "ol": {"start"},
    "code": {"class"},
}
_LINK_SCHEMES = {"https", "http", "ftp", "mailto", "magnet", "matrix"}


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute == "src":
        return value if value.startswith("mxc://") else None
    if tag == "a" and attribute == "href" and value.startswith("mxc://"):
        return None
    if tag == "code" and attribute == "class":
        return value if value.startswith("language-") else None
    return value


MAX_HTML_CHARS = 65_536
"""A Matrix event is at most 65,536 bytes, so longer HTML could never be sent whole."""
MAX_DEPTH = 100
"""Deepest nesting kept. Element renders 50 levels; legitimate mail stays well below 100."""

# What html5ever would read as one token, found without backtracking: comments, declarations
# and bogus comments (their text never holds tags), then start and end tags with quoted values.
_TOKEN = re.compile(
    r"<!--(?:-?>|.*?(?:--!?>|\Z))"
    r"|<[!?][^>]*>?"
    r"|</(?![A-Za-z])[^>]*>?"
    r"|<(/?)([A-Za-z][^\t\n\f\r />]*)(?:=\s*(?:\"[^\"]*\"|'[^']*')|[^>])*(>?)",
    re.DOTALL,
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param"}
    | {"source", "track", "wbr"}
)
# A start tag of these closes the same element when it is the current one; their end tags are
# implied by the end tag of an enclosing block (html5ever's "generate implied end tags").
_SIBLINGS = frozenset({"p", "li", "dt", "dd", "option", "tr", "td", "th"})
_IMPLIED_END = frozenset({"p", "li", "dt", "dd", "option", "optgroup", "rb", "rp", "rt", "rtc"})
_BLOCKS = frozenset(
    {"address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div"}
    | {"dl", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "listing"}
    | {"main", "menu", "nav", "ol", "pre", "section", "summary", "ul", "h1", "h2", "h3"}
    | {"h4", "h5", "h6", "body", "html"}
    | _IMPLIED_END
)


def bound_html(html: str, max_chars: int = MAX_HTML_CHARS) -> str:
    """``html`` cut to ``max_chars`` (before a tag the cut would split) and without the start
    tags that would nest deeper than ``MAX_DEPTH``; their text stays. Unchanged if within both.

    The depth is an over-estimate: an end tag closes an element only where a browser would
    certainly close it (the current element, or through implied end tags), so a sloppy
    ``<div><span>x</div>`` counts the ``span`` as still open. Linear in ``len(html)``.
    """
    if len(html) > max_chars:
        html = html[:max_chars]
        last_open = html.rfind("<")
        if last_open > html.rfind(">"):
            html = html[:last_open]
    stack: list[str] = []
    dropped: list[tuple[int, int]] = []
    for token in _TOKEN.finditer(html):
        name = token.group(2)
        if name is None:
            continue
        name = name.lower()
        if token.group(1):  # an end tag
            depth = len(stack)
            while depth and stack[depth - 1] != name:
                if name not in _BLOCKS or stack[depth - 1] not in _IMPLIED_END:
                    break
                depth -= 1
            if depth and stack[depth - 1] == name:
                del stack[depth - 1 :]
        elif name in _VOID or not token.group(3):
            continue  # nothing to close: void, or cut short by the end of the input
        elif name in _SIBLINGS and stack and stack[-1] == name:
            continue  # closes the current one and takes its place
        elif len(stack) >= MAX_DEPTH:
            dropped.append(token.span())
        else:
            stack.append(name)
    if not dropped:
        return html
    pieces, start = [], 0
    for begin, end in dropped:
        pieces.append(html[start:begin])
        start = end
    pieces.append(html[start:])
    return "".join(pieces)


def sanitize_html(html: str, max_chars: int = MAX_HTML_CHARS) -> str:
    """Reduce ``html`` to what Matrix clients are allowed to render, after ``bound_html``.

    Connectors should cut long content themselves so that ``body`` and ``formatted_body``
    say the same; this cut only keeps the sanitiser's time bounded.
    """
    return nh3.clean(
        bound_html(html, max_chars),
        tags=_TAGS,
        clean_content_tags={"script", "style", "iframe", "object", "embed", "template"},
        attributes=_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        url_schemes=_LINK_SCHEMES | {"mxc"},
        link_rel=None,
    )
