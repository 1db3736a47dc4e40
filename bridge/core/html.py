"""Sanitising HTML to the Matrix allow-list before it reaches a Matrix client.

Remote networks send arbitrary HTML (Teams messages, mail bodies). Only the tags and attributes
the Matrix spec lists for ``org.matrix.custom.html`` survive, links keep safe schemes, and images
must already be on the homeserver (``mxc://``) so a message can never make a reader's client
fetch an outside URL.
"""

from __future__ import annotations

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


def sanitize_html(html: str) -> str:
    """Reduce ``html`` to what Matrix clients are allowed to render."""
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style", "iframe", "object", "embed", "template"},
        attributes=_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        url_schemes=_LINK_SCHEMES | {"mxc"},
        link_rel=None,
    )
