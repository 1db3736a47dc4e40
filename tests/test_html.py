from __future__ import annotations

import pytest

from bridge.core.html import MAX_DEPTH, MAX_HTML_CHARS, bound_html, sanitize_html


@pytest.mark.parametrize(
    ("hostile", "forbidden"),
    [
        ("<script>alert(1)</script>hi", "alert"),
        ('<img src="https://tracker.example/pixel.png">', "tracker.example"),
        ('<a href="javascript:alert(1)">x</a>', "javascript"),
        ('<b onclick="steal()">x</b>', "onclick"),
        ("<style>body{display:none}</style>", "display"),
        ('<iframe src="https://evil.example"></iframe>', "evil.example"),
        ('<a href="mxc://hub.test/abc">x</a>', "mxc://"),
        ('<code class="evil">x</code>', "evil"),
    ],
)
def test_hostile_html_is_neutralised(hostile: str, forbidden: str) -> None:
    assert forbidden not in sanitize_html(hostile)


def test_allowed_formatting_survives() -> None:
    html = (
        '<b>b</b><i>i</i><a href="https://example.org">l</a><img src="mxc://hub.test/x" alt="x">'
        '<code class="language-python">c</code><span data-mx-spoiler="">s</span><ol start="3"><li>x</li></ol>'
    )
    cleaned = sanitize_html(html)
    for kept in (
        "<b>b</b>",
        'href="https://example.org"',
        'src="mxc://hub.test/x"',
        'class="language-python"',
        "data-mx-spoiler",
        'start="3"',
    ):
        assert kept in cleaned


# --- hostile size and shape: the largest HTML a Matrix event can carry ----------------------


@pytest.mark.parametrize(
    "hostile",
    [
        "<a" * (MAX_HTML_CHARS // 2),
        "<!--" * (MAX_HTML_CHARS // 4),
        "</" * (MAX_HTML_CHARS // 2),
        "&#" * (MAX_HTML_CHARS // 2),
    ],
)
def test_unterminated_markup_of_a_whole_event_gives_no_markup(hostile: str) -> None:
    cleaned = sanitize_html(hostile)
    assert "<a" not in cleaned and "<!--" not in cleaned


@pytest.mark.parametrize("tag", ["div", "ul", "pre", "blockquote", "details", "b", "span"])
def test_deep_nesting_is_cut_at_max_depth_and_keeps_the_text(tag: str) -> None:
    deep = (MAX_HTML_CHARS - 9) // (2 * len(tag) + 5)  # as deep as fits in one event
    cleaned = sanitize_html(f"<{tag}>" * deep + "deep" + f"</{tag}>" * deep + "after")
    assert cleaned.count(f"<{tag}>") <= MAX_DEPTH
    assert "deep" in cleaned and cleaned.endswith("after")


@pytest.mark.parametrize(
    "unit",
    # html5ever re-opens every unclosed formatting element in each new block: unbounded, this
    # took 17 s and produced 69 MB from 64 KiB.
    ["<p><b id={k}>x", "<div><b id={k}>x</div>", "<span><div></span>", "<li><ul>"],
)
def test_formatting_reopened_in_every_block_is_bounded(unit: str) -> None:
    hostile = "".join(unit.format(k=k) for k in range(MAX_HTML_CHARS // len(unit)))
    assert len(sanitize_html(hostile)) < 10 * MAX_HTML_CHARS


def test_html_longer_than_an_event_is_cut_before_a_split_tag() -> None:
    html = "<p>" + "x" * (MAX_HTML_CHARS - 10) + '<a href="https://example.org/">link</a></p>'
    bounded = bound_html(html)
    assert bounded == html[: MAX_HTML_CHARS - 7]
    assert sanitize_html(html) == f"<p>{'x' * (MAX_HTML_CHARS - 10)}</p>"


def test_ordinary_html_is_not_changed_by_the_bounds() -> None:
    html = (
        "<blockquote><p>quote <b>bold <i>both</i></b></p></blockquote><ul><li>one<li>two</ul>"
        '<p>a<br>b<!-- note --><a title="x>y" href="https://example.org/">l</a></p><div><span>'
        "sloppy</div>"
    )
    assert bound_html(html) == html
    nested = "<div>" * MAX_DEPTH + "x" + "</div>" * MAX_DEPTH
    assert bound_html(nested) == nested
    assert bound_html("<div>" * (MAX_DEPTH + 1)) == "<div>" * MAX_DEPTH


def test_tags_in_comments_and_attribute_values_do_not_close_anything() -> None:
    # Otherwise "<div><!--</div>-->" would look flat while html5ever nests every div.
    for unit in ("<div><!--</div>-->", "<div title='</div>'>", "<div><!x</div>"):
        bounded = bound_html(unit * 1000)
        assert bounded.count("<div") == MAX_DEPTH
