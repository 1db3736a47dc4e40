from __future__ import annotations

import pytest

from bridge.core.html import sanitize_html


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
